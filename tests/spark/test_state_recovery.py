"""Recovery of the job's state: a base snapshot plus the change logs of committed batches.

The same sequence of micro-batches (fills, cash, ticks, beta overrides, redeliveries) runs once
in one session that never compacts, and once with a compaction every other batch, a restart of
the state store after every batch and crashes at every point of writing the new state: inside
the change log, between it and its marker, and inside a compaction. Both runs emit exactly the
same records, event ids included: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from emr_jobs.batch import JobContext, process_batch
from emr_jobs.parse import KAFKA_BATCH_SCHEMA
from emr_jobs.state import StateStore
from margin_risk import names
from margin_risk.params import MarginParams

pytestmark = pytest.mark.spark

T0 = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)
ACCOUNTS = [f"R{i}" for i in range(6)]
SYMBOLS = ["AAPL", "MSFT", "PENNY", "XYZ"]


def batches(n: int, seed: int = 2) -> list[list[tuple[str, dict[str, Any]]]]:
    """n micro-batches of records; every third batch redelivers a fill and a deposit."""
    rng = random.Random(seed)
    out: list[list[tuple[str, dict[str, Any]]]] = []
    seq = 0
    for b in range(n):
        at = (T0 + timedelta(minutes=b)).strftime("%Y-%m-%dT%H:%M:%SZ")
        recs: list[tuple[str, dict[str, Any]]] = []
        for _ in range(4):
            seq += 1
            side = rng.choice(["BUY", "SELL", "SHORT", "COVER"])
            recs.append((names.TOPIC_FILLS, {
                "fill_id": f"F{seq}", "account_id": rng.choice(ACCOUNTS),
                "symbol": rng.choice(SYMBOLS), "side": side, "quantity": rng.randint(1, 50) * 10,
                "price": round(rng.uniform(3.0, 60.0), 2), "timestamp": at,
                "correlation_id": f"c-F{seq}"}))  # fmt: skip
        seq += 1
        recs.append((names.TOPIC_CASH, {
            "txn_id": f"T{seq}", "account_id": rng.choice(ACCOUNTS),
            "amount": round(rng.uniform(-5000, 20000), 2), "timestamp": at,
            "correlation_id": f"c-T{seq}"}))  # fmt: skip
        sym = rng.choice(SYMBOLS)
        recs.append((names.TOPIC_PRICES, {"symbol": sym, "price": round(rng.uniform(3.0, 60.0), 2),
                                          "timestamp": at, "beta": 1.5}))  # fmt: skip
        if b % 4 == 1:
            recs.append((names.TOPIC_BETAS, {"symbol": rng.choice(SYMBOLS), "beta": 2.25,
                                             "as_of": at}))  # fmt: skip
        if b >= 3 and b % 3 == 0:
            recs.append(out[b - 2][0])  # a fill redelivered two batches later
            recs.append(out[b - 3][4])  # and a deposit three batches later
        out.append(recs)
    return out


class Run:
    def __init__(self, spark: SparkSession, root: Path, compact_every: int) -> None:
        self.spark = spark
        self.root = str(root)
        self.compact_every = compact_every
        self.emitted: list[list[tuple[str, str, str]]] = []
        self.state = self._store()

    def _store(self) -> StateStore:
        return StateStore(self.spark, self.root, compact_every=self.compact_every)

    def restart(self) -> None:
        self.state.release()
        self.state = self._store()

    def run(self, batch_id: int, records: list[tuple[str, dict[str, Any]]]) -> Any:
        out: list[tuple[str, str, str]] = []

        def sink(df: DataFrame, _: int) -> None:
            out.clear()
            out.extend(sorted((r["topic"], r["key"], r["value"]) for r in df.collect()))

        rows = [
            (b"k", json.dumps(v).encode(), t, 0, batch_id * 100 + i, T0, 0, [])
            for i, (t, v) in enumerate(records)
        ]
        ctx = JobContext(MarginParams(), self.state, sink)
        try:
            return process_batch(
                self.spark, self.spark.createDataFrame(rows, KAFKA_BATCH_SCHEMA), batch_id, ctx
            )
        finally:
            if len(self.emitted) <= batch_id:
                self.emitted.append([])
            self.emitted[batch_id] = list(out)


def test_compaction_restarts_and_crashes_while_writing_state_change_nothing_emitted(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seq = batches(10)
    # Reference: one session, never compacting.
    ref = Run(spark, tmp_path / "ref", compact_every=1000)
    for b, recs in enumerate(seq):
        ref.run(b, recs)
    ref.state.release()

    run = Run(spark, tmp_path / "run", compact_every=2)
    real_write = StateStore._write_text
    crash = {"at": ""}

    def flaky_write(self: StateStore, rel: str, text: str) -> None:
        if crash["at"] and rel.startswith(crash["at"]):
            # A torn write: half of the file at its final path, then the driver dies.
            path = Path(self.root) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text[: len(text) // 2])
            raise RuntimeError(f"simulated crash writing {rel}")
        real_write(self, rel, text)

    monkeypatch.setattr(StateStore, "_write_text", flaky_write)
    # batch -> where the first attempt dies: in the change log, in the marker, in a compaction
    # (in its marker, or before its symbols) -- those batches committed before they compacted
    crashes = {1: "logs/", 3: "bases/3/_BASE", 4: "commits/", 8: "bases/8/symbols"}
    for b, recs in enumerate(seq):
        if b in crashes:
            crash["at"] = crashes[b]
            with pytest.raises(RuntimeError, match="simulated crash"):
                run.run(b, recs)
            crash["at"] = ""
            run.restart()
            if run.state.is_committed(b):  # the crash came after its marker (in the compaction)
                continue
        stats = run.run(b, recs)
        assert not stats.skipped
        run.restart()

    # Then every batch emitted exactly what the reference emitted (values and event ids)
    assert run.emitted == ref.emitted
    # And the state really went through compactions: a base, and no change log it supersedes
    [base] = [int(p.name) for p in (tmp_path / "run" / "bases").iterdir()]
    logs = [int(p.stem) for p in (tmp_path / "run" / "logs").glob("*.json")]
    assert base >= 8 and all(i > base for i in logs)
    calcs = [
        json.loads(v) for batch in ref.emitted for t, _, v in batch if t == names.TOPIC_MARGIN_CALC
    ]
    assert len(calcs) > 20 and any(c["deficiency"] > 0 for c in calcs)
    dupes = [r for batch in ref.emitted for r in batch if r[0] == names.TOPIC_REJECTED]
    assert dupes == []  # redeliveries are duplicates, not rejections


def test_a_batch_writes_only_its_changes(spark: SparkSession, tmp_path: Path) -> None:
    run = Run(spark, tmp_path, compact_every=1000)
    seq = batches(6)
    for b, recs in enumerate(seq):
        stats = run.run(b, recs)
        # its change log and marker: a few hundred bytes per record, whatever the book holds
        assert 0 < stats.state_bytes < 1_000 * len(recs)
    log = json.loads((tmp_path / "logs" / "5.json").read_text())
    assert len(log["applied"]) <= 6 and len(log["positions"]) <= 4
    run.state.release()
