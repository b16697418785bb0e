"""The Spark job's parser and the core's input models accept and reject the same records.

Production validates inputs twice in two languages: the Spark job with native expressions
(`emr_jobs.parse`) and every Python entry point (the simulator's reference, `what-if --house`)
with the pydantic models of `margin_risk.models` and `margin_risk.house`, both from the bounds
in `margin_risk.params`. The same records go through both here; a record one side takes and the
other refuses fails the test with its text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import BaseModel, ValidationError

from emr_jobs import parse
from margin_risk import names, untrusted
from margin_risk.house import HouseEntry
from margin_risk.models import CashTxn, Fill, PriceTick

TS = "2026-02-16T14:30:00Z"
FILL = {
    "fill_id": "f1", "account_id": "A1", "symbol": "XYZ", "side": "BUY", "quantity": 100,
    "price": 20.5, "timestamp": TS, "correlation_id": "c1",
}  # fmt: skip
TICK = {"symbol": "XYZ", "price": 20.5, "timestamp": TS, "beta": 1.2}
CASH = {"txn_id": "t1", "account_id": "A1", "amount": -2500.25, "timestamp": TS,
        "correlation_id": "c2"}  # fmt: skip
HOUSE = {"symbol": "TQQQ", "long_rate": 0.75, "short_rate": 0.75, "non_marginable": False,
         "as_of": TS, "updated_by": "risk-desk"}  # fmt: skip

MODELS: dict[str, type[BaseModel]] = {
    names.TOPIC_FILLS: Fill,
    names.TOPIC_PRICES: PriceTick,
    names.TOPIC_CASH: CashTxn,
    names.TOPIC_HOUSE_REQUIREMENTS: HouseEntry,
}
VALID = {
    names.TOPIC_FILLS: FILL,
    names.TOPIC_PRICES: TICK,
    names.TOPIC_CASH: CASH,
    names.TOPIC_HOUSE_REQUIREMENTS: HOUSE,
}


def _with(topic: str, **changes: object) -> str:
    record = {**VALID[topic], **changes}
    return json.dumps({k: v for k, v in record.items() if v is not _DROP})


_DROP = object()

# (topic, raw JSON text): valid records at the edges of every bound, and invalid ones.
CASES: list[tuple[str, str]] = [
    *[(t, json.dumps(v)) for t, v in VALID.items()],
    # quantities: places, sign, magnitude, type
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, quantity=0.0001)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, quantity=0.00001)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, quantity=0)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, quantity=-5)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, quantity=999999999999.9999)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, quantity=1e12)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, quantity="100")),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, quantity=True)),
    (
        names.TOPIC_FILLS,
        '{"fill_id":"f1","account_id":"A1","symbol":"XYZ","side":"BUY",'
        '"quantity":1E2,"price":20.5,"timestamp":"' + TS + '","correlation_id":"c1"}',
    ),
    # prices
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, price=0)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, price=-0.01)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, price=20.12345)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, price=1e15)),
    (names.TOPIC_PRICES, _with(names.TOPIC_PRICES, price=999999999999999.9999)),
    # side, ids, missing fields
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, side="buy")),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, side="COVER")),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, fill_id="")),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, account_id=7)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, symbol=True)),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, txn_id={"id": "t1"})),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, correlation_id=["c2"])),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, account_id='A "quoted" one')),
    (names.TOPIC_PRICES, '{"symbol" :  "XYZ", "price": 20.5, "timestamp": "' + TS + '"}'),
    (names.TOPIC_HOUSE_REQUIREMENTS, _with(names.TOPIC_HOUSE_REQUIREMENTS, updated_by=12)),
    (names.TOPIC_FILLS, _with(names.TOPIC_FILLS, correlation_id=_DROP)),
    (names.TOPIC_PRICES, _with(names.TOPIC_PRICES, beta=_DROP)),
    (names.TOPIC_PRICES, _with(names.TOPIC_PRICES, beta=None)),
    # betas
    (names.TOPIC_PRICES, _with(names.TOPIC_PRICES, beta=-1.5)),
    (names.TOPIC_PRICES, _with(names.TOPIC_PRICES, beta=99.9999)),
    (names.TOPIC_PRICES, _with(names.TOPIC_PRICES, beta=100)),
    (names.TOPIC_PRICES, _with(names.TOPIC_PRICES, beta=1.23456)),
    # cash amounts
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, amount=0)),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, amount=-999999999999999.9999)),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, amount=1e15)),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, amount=0.00005)),
    # timestamps: a zone is required, epoch numbers are not timestamps
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, timestamp="2026-02-16T14:30:00")),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, timestamp="2026-02-16T14:30:00+05:30")),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, timestamp="2026-02-16T14:30:00.123456Z")),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, timestamp=1771252200)),
    (names.TOPIC_CASH, _with(names.TOPIC_CASH, timestamp="2026-02-16")),
    # house entries
    (names.TOPIC_HOUSE_REQUIREMENTS, _with(names.TOPIC_HOUSE_REQUIREMENTS, long_rate=1)),
    (names.TOPIC_HOUSE_REQUIREMENTS, _with(names.TOPIC_HOUSE_REQUIREMENTS, long_rate=1.01)),
    (names.TOPIC_HOUSE_REQUIREMENTS, _with(names.TOPIC_HOUSE_REQUIREMENTS, short_rate=-0.1)),
    (names.TOPIC_HOUSE_REQUIREMENTS, _with(names.TOPIC_HOUSE_REQUIREMENTS, short_rate=1.5)),
    (names.TOPIC_HOUSE_REQUIREMENTS, _with(names.TOPIC_HOUSE_REQUIREMENTS, non_marginable="no")),
    (names.TOPIC_HOUSE_REQUIREMENTS, _with(names.TOPIC_HOUSE_REQUIREMENTS, updated_by=_DROP)),
    # not JSON objects
    (names.TOPIC_FILLS, "not json"),
    (names.TOPIC_CASH, "[1, 2]"),
]


def core_accepts(topic: str, raw: str) -> bool:
    try:
        MODELS[topic].model_validate(untrusted.load_object(raw))
    except (untrusted.Rejected, ValidationError):
        return False
    return True


def spark_accepts(spark, cases: list[tuple[str, str]]) -> list[bool]:
    now = datetime(2026, 2, 16, 14, 31, tzinfo=UTC)
    rows = [
        (b"k", raw.encode(), topic, 0, offset, now, 0, [])
        for offset, (topic, raw) in enumerate(cases)
    ]
    df = spark.createDataFrame(rows, parse.KAFKA_BATCH_SCHEMA)
    parsed = parse.parse_batch(parse.with_meta(df)).select("offset", "reason").collect()
    by_offset = {r["offset"]: r["reason"] is None for r in parsed}
    return [by_offset[n] for n in range(len(cases))]


def test_the_cases_cover_both_answers_on_every_topic():
    answers = {(t, core_accepts(t, raw)) for t, raw in CASES}
    assert answers == {(t, ok) for t in MODELS for ok in (True, False)}


@pytest.mark.spark
def test_spark_and_the_core_accept_exactly_the_same_records(spark):
    disagreements = [
        f"{topic} {raw}: spark {'accepts' if s else 'rejects'}, core {'accepts' if c else 'rejects'}"
        for (topic, raw), s in zip(CASES, spark_accepts(spark, CASES), strict=True)
        if s != (c := core_accepts(topic, raw))
    ]
    assert disagreements == []
