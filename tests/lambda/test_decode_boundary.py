"""Hostile records through the handler's decoder and a whole batch (in-memory ports, fast tier).

Each hostile record used to fail the whole invocation (a plain ``ValueError``, a
``RecursionError``, an ``InvalidOperation`` when presenting the amounts), so the mapping retried
the batch and finally parked its valid records on the failure queue unenforced. Now each one is a
rejection with a reason and the rest of the batch is applied.
"""

from __future__ import annotations

import json

import pytest

from lambdas.enforcement.local_invoke import build_msk_event
from margin_risk import names
from margin_risk.adapters.msk_event import inbound_records
from margin_risk.usecase.decode import decode
from margin_risk.usecase.records import Rejection, ValidRecord

from .harness import Feed, book, calc
from .test_service_fakes import make

GOOD = json.loads(calc("ACC-H", 0, -40_000, book(50), "h1").to_json())  # call 2,500


def raw(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


HOSTILE: list[tuple[str, bytes, str, str]] = [
    ("5,000 digits", raw(equity=0).replace(b'"equity": 0', b'"equity": ' + b"9" * 5_000),
     "number_too_long", "a number of 5000 characters"),
    ("exponent 999,999,999", raw(short_market_value=0).replace(b'"short_market_value": 0', b'"short_market_value": 1E+999999999'),
     "number_out_of_range", "the number 1E+999999999 is out of range"),
    ("nested 5,000 deep", raw(desk="X").replace(b'"X"', b"[" * 5_000 + b"]" * 5_000),
     "too_deep", "nested deeper than 32 levels"),
    ("nested 100,000 deep", b"[" * 100_000, "too_deep", "nested deeper than 32 levels"),
    ("amounts of 1e26", raw(equity=0, event_id="big").replace(b'"equity": 0', b'"equity": 1e26'),
     "", "equity"),
    ("year 9999, offset -05:00", raw(timestamp="9999-12-31T23:00:00-05:00"),
     "", "outside the range of UTC dates"),
    ("epoch seconds", raw(timestamp=1_771_252_200), "", "ISO-8601"),
    ("1 MiB and more", raw(desk="x" * (1 << 20)), "too_large", "larger than 1,048,576 bytes"),
]  # fmt: skip


def decoded(value: bytes) -> ValidRecord | Rejection:
    rec = Feed().record(raw=value, account="ACC-H")
    return decode(inbound_records(build_msk_event([rec]))[0])


@pytest.mark.parametrize(
    ("value", "code", "needle"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_a_hostile_record_is_a_rejection_with_a_reason(value, code, needle):
    d = decoded(value)
    assert isinstance(d, Rejection)
    if code:
        assert d.reason_code == code
    assert needle in d.reason
    assert "\n" not in d.reason


def test_a_line_separator_inside_an_id_is_valid_json():
    d = decoded(raw(event_id="h\u20281", correlation_id="c\u0085"))
    assert isinstance(d, ValidRecord)
    assert (d.event.event_id, d.event.correlation_id) == ("h\u20281", "c\u0085")


def test_an_origin_ts_that_cannot_be_read_falls_back_to_the_event_time():
    d = decoded(raw(origin_ts="9999-12-31T23:00:00-05:00"))
    assert isinstance(d, ValidRecord)
    assert d.origin_ts == d.event.timestamp


def test_hostile_records_are_rejected_and_counted_and_hold_nothing_back():
    svc, repo, store, _ = make()
    feed = Feed()
    records = [feed.record(raw=value, account="ACC-H") for _, value, _, _ in HOSTILE]
    records.append(feed.record(raw=raw(), account="ACC-H"))
    res = svc.process(inbound_records(build_msk_event(records)))
    assert res.failed == []
    assert len(res.rejected) == len(HOSTILE)
    assert [d.event_id for d in res.decisions] == ["h1:MARGIN_CALL_ISSUED"]
    assert repo.heads["ACC-H"].margin.call_open is True
    (stored,) = store.rejected.values()
    assert len(stored) == len(HOSTILE)
    assert svc.metrics.total(names.METRIC_RECORDS_REJECTED) == len(HOSTILE)  # type: ignore[attr-defined]
