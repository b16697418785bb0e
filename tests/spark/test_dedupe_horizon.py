"""The applied-id table: kept per event hour, only touched hours rewritten, bounded by a horizon.

A redelivered fill or cash record must never move state twice, and the table that guarantees it
must not grow (and be rewritten) forever: ids are remembered for ``dedupe_horizon_hours`` of
event time, and a record older than that is rejected instead of applied. A batch appends only its
own ids (in its change log); a compaction writes a new version of the hours that changed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession

from emr_jobs.batch import REASON_OLDER_THAN_HORIZON, JobContext, process_batch
from emr_jobs.book import BatchChanges, Horizon
from emr_jobs.parse import KAFKA_BATCH_SCHEMA
from emr_jobs.state import StateStore
from margin_risk import names
from margin_risk.params import MarginParams

pytestmark = pytest.mark.spark

T0 = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)
H0 = int(T0.timestamp()) // 3600  # the event hour of T0


# --- the horizon rule (pure Python) --------------------------------------------------------------
def test_the_cutoff_trails_the_newest_event_hour_and_never_moves_back() -> None:
    m = Horizon().advance([H0, H0 + 2], arrival_hour=H0 + 2, horizon_hours=3)
    assert m.cutoff == H0 - 1
    # an older batch later does not pull the horizon back
    assert m.advance([H0 - 1], arrival_hour=H0 + 2, horizon_hours=3).cutoff == H0 - 1
    # a newer one moves it forward, and the hours below it are no longer remembered
    m2 = m.advance([H0 + 5], arrival_hour=H0 + 5, horizon_hours=3)
    assert m2.cutoff == H0 + 2
    assert not m2.remembers(H0 + 1) and m2.remembers(H0 + 2)


def test_one_record_stamped_in_the_future_cannot_push_the_horizon_past_the_present() -> None:
    # a fill stamped 100 hours ahead arrives at H0: the horizon counts the newest event hour only
    # up to one hour past the newest arrival
    m = Horizon().advance([H0, H0 + 100], arrival_hour=H0, horizon_hours=24)
    assert m.cutoff == H0 + 1 - 24


def test_the_change_log_round_trips_through_its_json_form() -> None:
    ch = BatchChanges(applied=[("fill", "F1", H0), ("cash", "T1", H0 + 1)])
    ch.horizon = Horizon(H0 - 10, H0 + 1)
    back = BatchChanges.from_json(json.loads(json.dumps(ch.to_json())))
    assert back == ch


# --- through process_batch ---------------------------------------------------------------------


def fill(fill_id: str, account: str, qty: float, at: datetime) -> dict[str, Any]:
    return {
        "fill_id": fill_id,
        "account_id": account,
        "symbol": "AAPL",
        "side": "BUY",
        "quantity": qty,
        "price": 50.0,
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "correlation_id": f"c-{fill_id}",
    }


class Run:
    """process_batch on its own state directory, collecting what the sink receives."""

    def __init__(
        self, spark: SparkSession, root: Path, horizon_hours: int, compact_every: int = 100
    ) -> None:
        self.spark = spark
        self.state = StateStore(spark, str(root), compact_every=compact_every)
        self.out: list[dict[str, Any]] = []
        self.ctx = JobContext(
            MarginParams(), self.state, self._sink, dedupe_horizon_hours=horizon_hours
        )
        self.batch_id = 0
        self.offset = 0

    def _sink(self, df: DataFrame, batch_id: int) -> None:
        self.out.extend(r.asDict() for r in df.collect())

    def batch(self, fills: list[dict[str, Any]], arrived: datetime) -> Any:
        rows = []
        for v in fills:
            rows.append(
                (v["account_id"].encode(), json.dumps(v).encode(), names.TOPIC_FILLS, 0,
                 self.offset, arrived, 0, [])
            )  # fmt: skip
            self.offset += 1
        df = self.spark.createDataFrame(rows, KAFKA_BATCH_SCHEMA)
        self.out.clear()
        stats = process_batch(self.spark, df, self.batch_id, self.ctx)
        self.batch_id += 1
        return stats

    def long_value_of(self, account: str) -> float:
        calcs = [
            json.loads(r["value"], parse_float=Decimal)
            for r in self.out
            if r["topic"] == names.TOPIC_MARGIN_CALC
        ]
        return next(c for c in calcs if c["account_id"] == account)["long_market_value"]

    def rejected(self) -> list[dict[str, Any]]:
        return [json.loads(r["value"]) for r in self.out if r["topic"] == names.TOPIC_REJECTED]

    def seen_versions(self) -> dict[str, list[str]]:
        root = Path(self.state.root) / "seen"
        return {
            v.name: sorted(h.name for h in v.iterdir() if h.is_dir())
            for v in sorted(root.iterdir())
        }

    def base_hours(self) -> dict[int, int]:
        return self.state.seen_hours

    def logged_ids(self, batch_id: int) -> list[list[Any]]:
        log = json.loads((Path(self.state.root) / "logs" / f"{batch_id}.json").read_text())
        return log["applied"]


def test_a_batch_logs_only_its_ids_and_a_compaction_rewrites_only_touched_hours(
    spark: SparkSession, tmp_path: Path
) -> None:
    arrived = T0 + timedelta(hours=1)
    # Without compaction, a batch's durable ids are its own, in its change log
    log_only = Run(spark, tmp_path / "log", horizon_hours=2, compact_every=100)
    log_only.batch(
        [fill("F1", "A1", 10, T0), fill("F2", "A1", 10, T0 + timedelta(hours=1))], arrived
    )
    log_only.batch([fill("F3", "A1", 10, T0 + timedelta(hours=1, minutes=5))], arrived)
    assert log_only.logged_ids(1) == [["fill", "F3", H0 + 1]]
    assert not (tmp_path / "log" / "seen").exists()

    # With a compaction after every batch: given fills in two event hours
    run = Run(spark, tmp_path / "compact", horizon_hours=2, compact_every=1)
    run.batch([fill("F1", "A1", 10, T0), fill("F2", "A1", 10, T0 + timedelta(hours=1))], arrived)
    assert run.seen_versions() == {"v=0": [f"hour={H0}", f"hour={H0 + 1}"]}
    # When a later batch has a fill only in the second hour
    stats = run.batch([fill("F3", "A1", 10, T0 + timedelta(hours=1, minutes=5))], arrived)
    # Then only that hour gets a new version; the first hour keeps version 0
    assert stats.duplicates == 0
    assert run.seen_versions() == {
        "v=0": [f"hour={H0}", f"hour={H0 + 1}"],
        "v=1": [f"hour={H0 + 1}"],
    }
    assert run.base_hours() == {H0: 0, H0 + 1: 1}
    # And when the event time moves three hours on, the first hours fall out of the horizon
    later = T0 + timedelta(hours=4)
    run.batch([fill("F4", "A1", 10, later)], later)
    assert run.state.driver.horizon.cutoff == H0 + 2 and run.base_hours() == {H0 + 4: 2}
    assert run.seen_versions() == {"v=2": [f"hour={H0 + 4}"]}
    assert run.long_value_of("A1") == 40 * 50.0  # four fills of 10 at $50, each applied once


def test_a_redelivered_fill_within_the_horizon_is_a_duplicate_and_an_older_one_is_rejected(
    spark: SparkSession, tmp_path: Path
) -> None:
    run = Run(spark, tmp_path, horizon_hours=2)
    first = fill("F1", "A1", 10, T0)
    run.batch([first], T0)
    # Given the same fill redelivered an hour later (inside the horizon)
    stats = run.batch([first, fill("F2", "A2", 5, T0 + timedelta(hours=1))], T0)
    # Then it is counted as a duplicate and moves nothing
    assert stats.duplicates == 1
    assert run.long_value_of("A2") == 250.0
    # When the event time has moved past the horizon and the old fill comes again
    late = T0 + timedelta(hours=5)
    run.batch([fill("F3", "A2", 5, late)], late)
    stats = run.batch([first], late)
    # Then it is rejected with its own reason, not applied: its id is no longer remembered
    assert stats.rejected == {REASON_OLDER_THAN_HORIZON: 1}
    assert stats.margin_results == 0
    [rej] = run.rejected()
    assert (rej["reason"], rej["source_topic"]) == (REASON_OLDER_THAN_HORIZON, names.TOPIC_FILLS)


def test_a_retried_batch_rewrites_its_own_version(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Run(spark, tmp_path, horizon_hours=24)
    run.batch([fill("F1", "A1", 10, T0)], T0)
    # Given a batch that fails before its commit marker, then is retried with the same records
    real_commit = StateStore.commit
    calls = {"n": 0}

    def fail_once(self: StateStore, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("crash before the marker")
        real_commit(self, *args, **kwargs)

    monkeypatch.setattr(StateStore, "commit", fail_once)
    second = fill("F2", "A1", 10, T0 + timedelta(minutes=1))
    with pytest.raises(RuntimeError, match="crash before the marker"):
        run.batch([second], T0)
    run.offset -= 1  # the retry reads the same record at the same offset
    stats = run.batch([second], T0)
    # Then the fill is applied once, and the retried batch's log holds its id
    assert stats.batch_id == 1 and stats.duplicates == 0
    assert run.long_value_of("A1") == 1000.0
    assert run.logged_ids(1) == [["fill", "F2", H0]]
    # And a redelivery of both, after a restart of the state, is two duplicates
    run.state = StateStore(spark, run.state.root)
    run.ctx.state = run.state
    stats = run.batch([fill("F1", "A1", 10, T0), second], T0)
    assert stats.duplicates == 2 and stats.margin_results == 0
