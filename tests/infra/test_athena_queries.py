"""The named queries, run for real with DuckDB over a small partitioned JSONL audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from margin_risk import names
from stacks.athena_queries import NAMED_QUERIES, NamedQuery, athena_parameters

COLUMNS = {
    "event_id": "VARCHAR",
    "event_type": "VARCHAR",
    "account_id": "VARCHAR",
    "timestamp": "VARCHAR",
    "details": "STRUCT(deficiency DOUBLE, excess DOUBLE, equity DOUBLE, maintenance_req DOUBLE,"
    " scenario DOUBLE, reason VARCHAR)",
    "correlation_id": "VARCHAR",
}


def _event(eid: str, etype: str, acc: str, ts: str, deficiency: float, corr: str) -> dict:
    return {
        "event_id": eid,
        "event_type": etype,
        "account_id": acc,
        "timestamp": ts,
        "details": {
            "deficiency": deficiency,
            "excess": -deficiency,
            "equity": 1000.0,
            "maintenance_req": 1000.0 + deficiency,
            "scenario": None,
            "reason": etype,
        },
        "correlation_id": corr,
    }


EVENTS = [
    _event("e1", names.EVENT_MARGIN_CALL_ISSUED, "ACC_A", "2026-02-16T14:00:00Z", 500.0, "c-a"),
    _event("e2", names.EVENT_ACCOUNT_RESTRICTED, "ACC_A", "2026-02-16T14:40:00Z", 500.0, "c-a2"),
    _event("e3", names.EVENT_MARGIN_CALL_ISSUED, "ACC_B", "2026-02-16T14:10:00Z", 9000.0, "c-b"),
    _event("e4", names.EVENT_MARGIN_CALL_MET, "ACC_B", "2026-02-16T15:05:00Z", 0.0, "c-b2"),
    _event("e5", names.EVENT_MARGIN_CALL_ISSUED, "ACC_C", "2026-02-16T15:20:00Z", 20000.0, "c-c"),
    _event(
        "e6", names.EVENT_LIQUIDATION_TRIGGERED, "ACC_C", "2026-02-16T15:20:00Z", 20000.0, "c-c"
    ),
    _event("e7", names.EVENT_MARGIN_CALL_ISSUED, "ACC_A", "2026-03-02T09:00:00Z", 100.0, "c-a3"),
]


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> duckdb.DuckDBPyConnection:
    root = tmp_path_factory.mktemp("audit")
    for e in EVENTS:
        ts = e["timestamp"]
        y, m, d, h = int(ts[:4]), int(ts[5:7]), int(ts[8:10]), int(ts[11:13])
        part = root / f"audit/year={y}/month={m}/day={d}/hour={h}"
        part.mkdir(parents=True, exist_ok=True)
        with (part / "batch.jsonl").open("a") as f:
            f.write(json.dumps(e) + "\n")
    c = duckdb.connect()
    cols = ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items())
    glob = str(Path(root) / "audit/**/*.jsonl")
    c.execute(
        f"CREATE VIEW {names.AUDIT_TABLE} AS SELECT * FROM read_json('{glob}', "
        f"format='newline_delimited', hive_partitioning=true, columns={{{cols}}})"
    )
    return c


def run(con: duckdb.DuckDBPyConnection, q: NamedQuery, *params: object) -> list[tuple]:
    return con.execute(q.sql, list(params)).fetchall()


def test_margin_calls_for_account(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(con, NAMED_QUERIES["margin_calls_for_account"], "ACC_A")
    assert [r[0] for r in rows] == ["e1", "e7"]


def test_events_by_type_for_day(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(con, NAMED_QUERIES["events_by_type_for_day"], 2026, 2, 16)
    assert dict((r[0], r[1]) for r in rows) == {
        names.EVENT_MARGIN_CALL_ISSUED: 3,
        names.EVENT_ACCOUNT_RESTRICTED: 1,
        names.EVENT_MARGIN_CALL_MET: 1,
        names.EVENT_LIQUIDATION_TRIGGERED: 1,
    }


def test_accounts_with_liquidations_in_month(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(con, NAMED_QUERIES["accounts_with_liquidations_in_month"], 2026, 2)
    assert [(r[0], r[1]) for r in rows] == [("ACC_C", 1)]
    assert run(con, NAMED_QUERIES["accounts_with_liquidations_in_month"], 2026, 3) == []


def test_trace_by_correlation_id(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(con, NAMED_QUERIES["trace_by_correlation_id"], "c-c")
    assert [r[1] for r in rows] == [
        names.EVENT_LIQUIDATION_TRIGGERED,
        names.EVENT_MARGIN_CALL_ISSUED,
    ]


def test_open_calls_older_than_excludes_met_and_liquidated(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(con, NAMED_QUERIES["open_calls_older_than"], "2026-02-16T23:00:00Z")
    # ACC_B was met, ACC_C liquidated: only ACC_A's first call is open and old enough.
    assert [(r[0], r[1]) for r in rows] == [("ACC_A", "2026-02-16T14:00:00Z")]


def test_largest_deficiencies_of_day(con: duckdb.DuckDBPyConnection) -> None:
    rows = run(con, NAMED_QUERIES["largest_deficiencies_of_day"], 2026, 2, 16)
    assert [r[3] for r in rows] == [20000.0, 20000.0, 9000.0, 500.0]


def test_athena_parameters_quote_strings_and_leave_numbers_bare() -> None:
    assert athena_parameters(["ACC_O'NEIL", 2026, 2.5]) == ["'ACC_O''NEIL'", "2026", "2.5"]


def test_placeholder_count_must_match_the_declared_parameters() -> None:
    with pytest.raises(ValueError, match="placeholders"):
        NamedQuery("bad", "bad", "SELECT 1 WHERE a = ? AND b = ?", ("a",))
