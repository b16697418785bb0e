"""The margin history the job writes: every emitted result in margin_risk.archive's layout, read
back by margin_risk.tools.history and `backtest` exactly as emitted, once each, across a replay."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pyspark.sql import SparkSession

from emr_jobs.local_runner import LocalMarginJob
from emr_jobs.state import StateStore
from margin_risk import archive, names
from margin_risk.enforcement import replay
from margin_risk.models import MarginCalc, StressResult
from margin_risk.tools.cli import main
from margin_risk.tools.history import LocalHistory, iter_history
from margin_risk.tools.local.kafka_broker import start_broker
from tests.spark.kafka_helpers import produce_many, read_all

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def fill(
    fid: str, acc: str, sym: str, side: str, qty: Any, px: Any, ts: str
) -> tuple[str, str, Any]:
    body = {"fill_id": fid, "account_id": acc, "symbol": sym, "side": side, "quantity": qty,
            "price": px, "timestamp": ts, "correlation_id": f"c-{fid}"}  # fmt: skip
    return (names.TOPIC_FILLS, acc, body)


def tick(sym: str, px: Any, ts: str) -> tuple[str, str, Any]:
    return (names.TOPIC_PRICES, sym, {"symbol": sym, "price": px, "timestamp": ts, "beta": 1.5})


def deposit(txn: str, acc: str, amount: Any, ts: str) -> tuple[str, str, Any]:
    body = {"txn_id": txn, "account_id": acc, "amount": amount, "timestamp": ts,
            "correlation_id": f"c-{txn}"}  # fmt: skip
    return (names.TOPIC_CASH, acc, body)


BATCHES = [
    # A buys 1,000 AAPL at $50 on $20,000 of debit; B shorts 300 XYZ at $20.33; C is cash only
    [
        deposit("TA", "A", 30000, "2026-02-16T14:29:00Z"),
        fill("FA", "A", "AAPL", "BUY", 1000, 50, "2026-02-16T14:30:00Z"),
        deposit("TB", "B", 5000, "2026-02-16T14:29:30Z"),
        fill("FB", "B", "XYZ", "SHORT", 300, 20.33, "2026-02-16T14:30:10Z"),
        deposit("TC", "C", 100, "2026-02-16T14:31:00Z"),
    ],
    # AAPL falls to $28 (A: a warning) and XYZ rises; the next hour's tick crosses into hour 15
    [tick("AAPL", 28, "2026-02-16T14:59:00Z"), tick("XYZ", 24.5, "2026-02-16T15:00:01Z")],
    # AAPL at $25: a call for A; A's fill is in hour 15
    [
        tick("AAPL", 25, "2026-02-16T15:10:00Z"),
        fill("FA2", "A", "AAPL", "SELL", 10, 25, "2026-02-16T15:11:00Z"),
    ],
]


def test_the_job_archives_what_it_emits_and_a_replay_rewrites_the_same_files(
    spark: SparkSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "history"
    state = str(tmp_path / "state")
    with start_broker(partitions=2) as broker:
        job = LocalMarginJob(broker.bootstrap, state, spark=spark, history_dir=str(root))
        produce_many(broker, BATCHES[0])
        assert (s0 := job.run_once()) is not None and s0.accounts == 3
        produce_many(broker, BATCHES[1])
        # Batch 1 fails after emitting and archiving, before its change log: not committed
        real = StateStore.write_log

        def crash(self: StateStore, batch_id: int, *args: Any) -> None:
            raise RuntimeError("simulated driver crash")

        monkeypatch.setattr(StateStore, "write_log", crash)
        with pytest.raises(RuntimeError, match="simulated"):
            job.run_once()
        job.close()
        first_attempt = sorted(p.relative_to(root) for p in root.rglob("*.parquet"))
        monkeypatch.setattr(StateStore, "write_log", real)
        # When a new job replays batch 1, then runs batch 2
        job = LocalMarginJob(broker.bootstrap, state, spark=spark, history_dir=str(root))
        assert (s1 := job.run_once()) is not None and s1.batch_id == 1
        produce_many(broker, BATCHES[2])
        assert (s2 := job.run_once()) is not None and s2.batch_id == 2
        job.close()
        emitted_margin = [v for _, v, _ in read_all(broker, names.TOPIC_MARGIN_CALC)]
        emitted_stress = [v for _, v, _ in read_all(broker, names.TOPIC_STRESS)]

    # The archive costs one Parquet write per kind (two Spark jobs) on top of the batch's own
    # (at most three): within the six the job allows itself per micro-batch
    assert all(st.spark_jobs <= 5 for st in (s0, s1, s2))
    # Then the replay wrote the same files as the failed attempt (names by batch and key)
    files = sorted(p.relative_to(root) for p in root.rglob("*.parquet"))
    assert set(first_attempt) <= set(files)
    dirs = sorted({str(f.parent) for f in files})
    assert dirs == [
        "margin_calc/event_date=2026-02-16/hour=14",
        "margin_calc/event_date=2026-02-16/hour=15",
        "stress/event_date=2026-02-16/hour=14",
        "stress/event_date=2026-02-16/hour=15",
    ]
    assert all(f.name.startswith(("b0-", "b1-", "b2-")) for f in files)
    staging = tmp_path / "state" / "history-staging"
    assert not staging.exists() or not any(staging.iterdir())

    # And each file has exactly the archive's columns and types (instants, exact decimals)
    con = duckdb.connect()
    for f in files:
        kind = f.parts[0]
        described = con.execute(
            f"DESCRIBE SELECT * FROM read_parquet('{root / f}', hive_partitioning = false)"
        ).fetchall()
        assert [c[0] for c in described] == list(archive.COLUMNS[kind])
        types = dict((c[0], c[1]) for c in described)
        assert types["timestamp"] == "TIMESTAMP WITH TIME ZONE"
        assert types["worst_deficiency" if kind == "stress" else "equity"] == "DECIMAL(38,20)"
    # and every row once (the replay overwrote, not added)
    for kind in archive.KINDS:
        glob = str(root / kind / "**" / "*.parquet")
        n, ids = con.execute(f"SELECT count(*), count(DISTINCT event_id) FROM '{glob}'").fetchone()
        assert n == ids

    # And the history reads back exactly the results emitted (each once, event-time order)
    emitted: list[MarginCalc | StressResult] = [
        MarginCalc.model_validate(v) for v in emitted_margin
    ]
    emitted += [StressResult.model_validate(v) for v in emitted_stress]
    unique = {r.event_id: r for r in emitted}
    assert len(unique) < len(emitted)  # the replayed batch emitted its results twice
    want = sorted(unique.values(), key=lambda r: (r.timestamp, r.event_id))
    got = list(iter_history(LocalHistory(root)))

    def archived(r: MarginCalc | StressResult) -> dict[str, Any]:
        kind = archive.KIND_STRESS if isinstance(r, StressResult) else archive.KIND_MARGIN
        return r.model_dump(include=set(archive.COLUMNS[kind]))

    assert [archived(r) for r in got] == [archived(r) for r in want]
    assert len(got) == 2 * (s0.accounts + s1.accounts + s2.accounts)

    # And `backtest` over the archive takes the decisions `replay` takes on what was emitted
    # (the reasons name the SPY move as the grid writes it, -0.08, where the job's JSON carries
    # its column's scale, -0.0800: the same number)
    def decision(d: dict[str, Any]) -> dict[str, Any]:
        reason = d["details"].get("reason") or ""
        if " at SPY " in reason:
            head, move = reason.rsplit(" ", 1)
            reason = f"{head} {Decimal(move).normalize():+g}"
        return {**d, "details": {**d["details"], "reason": reason}}

    decisions = [decision(json.loads(d.to_json())) for d in replay(want).decisions]
    assert {d["event_type"] for d in decisions} >= {"MARGIN_WARNING", "MARGIN_CALL_ISSUED"}
    capsys.readouterr()
    assert main(["backtest", str(root)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [decision(d) for d in lines[:-1]] == decisions
