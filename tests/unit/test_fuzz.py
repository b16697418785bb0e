"""Fuzz the edges: random bytes, random JSON and near-valid hostile records into the handler's
decoder, a whole handler batch, and every command. Nothing may escape as an exception; a command
answers with its documented exit status and, on error, exactly one line on stderr.

Bounded example counts keep each test to a few seconds in the test command, and a fixed seed
(``derandomize``) makes every run try the same inputs, so the test command cannot flake.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdas.enforcement.local_invoke import LocalRecord, build_msk_event
from margin_risk.adapters.memory import (
    MemoryMetrics,
    MemoryNotifier,
    MemoryObjectStore,
    MemoryPublisher,
    MemoryStateRepository,
)
from margin_risk.adapters.msk_event import inbound_records
from margin_risk.tools.cli import main
from margin_risk.usecase.decode import decode
from margin_risk.usecase.records import Coordinate, InboundRecord, Rejection, ValidRecord
from margin_risk.usecase.service import EnforcementService

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
    derandomize=True,
)

# --- Strategies --------------------------------------------------------------------------------
HOSTILE_NUMBERS = [
    "0", "-0", "1", "-1", "0.005", "33.59", "1e2", "1E+2", "5.0000", "0.00001", "1e-400",
    "1e14", "999999999999999.9999", "1e15", "1e18", "1e26", "-1e26", "1e308", "1e400", "-1e400",
    "1E+999999999", "9" * 64, "9" * 65, "9" * 5_000, "NaN", "Infinity", "-Infinity",
]  # fmt: skip
HOSTILE_TIMES = [
    '"2026-02-16T14:30:00Z"', '"2026-02-16T14:30:00.123456+05:30"', '"9999-12-31T23:59:59Z"',
    '"9999-12-31T23:00:00-05:00"', '"0001-01-01T00:00:00+05:00"', '"0001-01-01T00:00:00Z"',
    '"2026-02-16T14:30:00"', '"2026-02-30T14:30:00Z"', '"2026-02-16 14:30:00Z"', "1771252200",
    "1771252200.5", '""', "null", '"1771252200"',
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=16,
)
random_json = json_values.map(json.dumps)
deep = st.integers(min_value=30, max_value=3_000).map(lambda n: "[" * n + "1" + "]" * n)
ids = st.text(
    alphabet=st.sampled_from([*list("abcAZ09-_:"), "\u2028", "\u2029", "\x85", "\n", '"', "é"]),
    min_size=0,
    max_size=8,
).map(json.dumps)
literal = st.sampled_from(HOSTILE_NUMBERS) | random_json | deep


def obj_text(fields: dict[str, str]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}"


def field_values(numbers: list[str]) -> st.SearchStrategy[dict[str, str]]:
    amounts = {k: st.sampled_from(HOSTILE_NUMBERS) | literal for k in numbers}
    return st.fixed_dictionaries(
        {
            "event_id": ids | literal,
            "account_id": st.sampled_from(['"A1"', '"A2"']) | ids,
            "timestamp": st.sampled_from(HOSTILE_TIMES),
            "correlation_id": ids,
            **amounts,
        }
    )


margin_records = field_values(
    ["equity", "maintenance_req", "excess", "deficiency", "long_market_value", "short_market_value"]
).map(obj_text)
scenario_rows = st.lists(
    st.fixed_dictionaries(
        {
            k: st.sampled_from(HOSTILE_NUMBERS)
            for k in (
                "scenario",
                "stressed_equity",
                "stressed_maintenance_req",
                "stressed_deficiency",
            )
        }
    ).map(obj_text),
    max_size=3,
).map(lambda rows: "[" + ", ".join(rows) + "]")
stress_records = st.builds(
    lambda base, rows: base[:-1] + f', "scenarios": {rows}}}',
    field_values(["worst_scenario", "worst_deficiency"]).map(obj_text),
    scenario_rows,
)
records = margin_records | stress_records | random_json | deep
snapshots = st.builds(
    lambda cash, rows: obj_text({"account_id": '"A"', "cash": cash, "positions": rows}),
    st.sampled_from(HOSTILE_NUMBERS) | literal,
    st.lists(
        st.fixed_dictionaries(
            {
                "symbol": st.sampled_from(['"X"', '"Y"', '""', "1"]),
                "quantity": st.sampled_from(HOSTILE_NUMBERS),
                "price": st.sampled_from(HOSTILE_NUMBERS),
                "beta": st.sampled_from(HOSTILE_NUMBERS),
            }
        ).map(obj_text),
        max_size=3,
    ).map(lambda rows: "[" + ", ".join(rows) + "]"),
)
raw_bytes = st.binary(max_size=300)
line_files = st.lists(records | raw_bytes.map(lambda b: b.decode("latin-1")), max_size=5).map(
    lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
)


# --- Running a command in-process ----------------------------------------------------------------
@contextlib.contextmanager
def stdin_of(data: bytes) -> Iterator[None]:
    old = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    try:
        yield
    finally:
        sys.stdin = old


def cli(*argv: str, stdin: bytes = b"") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with stdin_of(stdin), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def cli_on_file(command: str, data: bytes, *options: str) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "input"
        path.write_bytes(data)
        return cli(command, str(path), *options)


def assert_contract(code: int, out: str, err: str, ok: tuple[int, ...] = (0,)) -> None:
    """Success codes as documented; anything else is exit 1 with one line on stderr, no output."""
    if code in ok:
        return
    assert code == 1, (code, err)
    assert out == "", out
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err


# --- The handler ----------------------------------------------------------------------------
def inbound(value: bytes) -> InboundRecord:
    return InboundRecord(Coordinate("margin.calc.v1", 0, 0), value)


def assert_decoded(value: bytes) -> None:
    d = decode(inbound(value))
    assert isinstance(d, ValidRecord | Rejection)
    if isinstance(d, Rejection):
        assert d.reason and "\n" not in d.reason and d.reason_code


@FUZZ
@given(raw_bytes)
def test_decoder_random_bytes(value: bytes) -> None:
    assert_decoded(value)


@FUZZ
@given(records)
def test_decoder_random_and_hostile_json(text: str) -> None:
    assert_decoded(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=25, deadline=None, database=None, derandomize=True)
@given(st.lists(records, min_size=1, max_size=6))
def test_a_whole_batch_of_hostile_records_never_fails_the_invocation(texts: list[str]) -> None:
    store = MemoryObjectStore()
    svc = EnforcementService(
        repo=MemoryStateRepository(),
        audit_sink=store,
        rejected_sink=store,
        publisher=MemoryPublisher(),
        notifier=MemoryNotifier(),
        metrics=MemoryMetrics(),
    )
    batch = [
        LocalRecord(
            "margin.calc.v1", 0, i, t.encode("utf-8", "surrogatepass"), b"A1", 1_771_252_200_000
        )
        for i, t in enumerate(texts)
    ]
    res = svc.process(inbound_records(build_msk_event(batch)))
    assert res.failed == []
    assert len(res.rejected) + sum(res.outcomes.values()) == len(texts)


# --- The commands ---------------------------------------------------------------------------
@FUZZ
@given(snapshots | random_json | deep | raw_bytes.map(lambda b: b.decode("latin-1")))
def test_what_if(text: str) -> None:
    code, out, err = cli_on_file("what-if", text.encode("utf-8", "surrogatepass"))
    assert_contract(code, out, err)
    if code == 0:
        assert set(json.loads(out)) >= {"equity", "maintenance_req", "stress"} and err == ""


@FUZZ
@given(st.sampled_from(HOSTILE_NUMBERS) | st.text(max_size=20))
def test_what_if_scenarios(moves: str) -> None:
    snap = json.dumps({"account_id": "A", "cash": 1000, "positions": []}).encode()
    code, out, err = cli_on_file("what-if", snap, "--scenarios", moves)
    assert_contract(code, out, err)


@FUZZ
@given(line_files)
def test_replay(data: bytes) -> None:
    code, out, err = cli_on_file("replay", data)
    assert_contract(code, out, err)
    if code == 0:
        assert err.startswith("replay: ") and err.count("\n") == 1
    assert (code, out) == cli("replay", "-", stdin=data)[:2]  # a file and stdin read alike


@FUZZ
@given(line_files)
def test_rebuild_state(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "batch-1.jsonl").write_bytes(data)
        assert_contract(*cli("rebuild-state", d))
    assert_contract(*cli("rebuild-state", "-", stdin=data))


def emf_line(ts: Any, value: Any) -> str:
    return json.dumps(
        {
            "_aws": {
                "Timestamp": ts,
                "CloudWatchMetrics": [
                    {"Namespace": "MarginRisk", "Dimensions": [["service"]],
                     "Metrics": [{"Name": "InputRecords", "Unit": "Count"}]}
                ],
            },
            "service": "margin-spark",
            "InputRecords": value,
        }
    )  # fmt: skip


emf_values = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30), st.floats(), st.text(max_size=3), st.none()
)
metric_lines = st.lists(
    st.builds(emf_line, emf_values, emf_values) | records | deep, max_size=6
).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@FUZZ
@given(metric_lines)
def test_health(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "metrics").mkdir()
        (Path(d) / "metrics" / "spark.jsonl").write_bytes(data)
        code, _out, err = cli("health", "--metrics-dir", d)
    # 0 healthy, 2 unhealthy, 3 unknown: all answers; 1 only for bad input.
    assert code in (0, 2, 3), (code, err)
    if code == 3:
        assert err.startswith("health: UNKNOWN: ") and err.count("\n") == 1


def test_timestamps_near_the_end_of_time_pass_through_a_command() -> None:
    """The last valid instant and every zone offset: decisions are written, nothing overflows."""
    stamps = [datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)] + [
        datetime(9999, 12, 31, 0, 0, tzinfo=timezone(timedelta(minutes=m)))
        for m in (-23 * 60 - 59, -300, 300, 23 * 60 + 59)
    ]
    for ts in stamps:
        line = obj_text(
            {
                "event_id": '"e"', "account_id": '"A"', "timestamp": json.dumps(ts.isoformat()),
                "equity": "1", "maintenance_req": "2", "excess": "-1", "deficiency": "1",
                "long_market_value": "4", "short_market_value": "0", "correlation_id": '"c"',
            }
        )  # fmt: skip
        code, out, err = cli_on_file("replay", line.encode() + b"\n")
        assert_contract(code, out, err)
