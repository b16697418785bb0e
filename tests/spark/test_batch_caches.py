"""Only the current state stays cached: the job runs for days, one batch after another (a failed
one retried in the same session), and the book, the applied ids and the symbol table are cached
between batches on purpose. Anything a batch caches for itself is released when it ends, whether
it succeeded or failed, and a compaction releases the frames of the base it replaces."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession

from emr_jobs.batch import BatchStats, JobContext, process_batch
from emr_jobs.parse import KAFKA_BATCH_SCHEMA
from emr_jobs.state import StateStore
from margin_risk import names
from margin_risk.params import MarginParams

pytestmark = pytest.mark.spark

AT = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)


def _cached_rdds(spark: SparkSession) -> int:
    return len(spark.sparkContext._jsc.getPersistentRDDs())


def _only_the_state_is_cached(spark: SparkSession, state: StateStore) -> bool:
    frames = state.cached_frames()
    return all(df.is_cached for df in frames) and _cached_rdds(spark) == len(frames)


def _batch(
    spark: SparkSession,
    state: StateStore,
    sink: Callable[[DataFrame, int], None],
    batch_id: int = 0,
) -> BatchStats:
    fill = {"fill_id": "f1", "account_id": "ACC-1", "symbol": "AAPL", "side": "BUY",
            "quantity": 10, "price": 50.0, "timestamp": "2026-02-16T14:30:00Z",
            "correlation_id": "c1"}  # fmt: skip
    tick = {"symbol": "AAPL", "price": 51.0, "timestamp": "2026-02-16T14:30:01Z", "beta": 1.1}
    deposit = {"txn_id": "t1", "account_id": "ACC-1", "amount": 1000.0,
               "timestamp": "2026-02-16T14:30:00Z", "correlation_id": "c2"}  # fmt: skip
    records = [
        (names.TOPIC_FILLS, fill),
        (names.TOPIC_PRICES, tick),
        (names.TOPIC_CASH, deposit),
        (names.TOPIC_PRICES, {"symbol": "AAPL"}),  # rejected: missing fields
    ]
    for _, v in records:
        for k in ("fill_id", "txn_id"):
            if k in v:
                v[k] = f"{v[k]}-{batch_id}"
    rows = [
        (b"k", json.dumps(v).encode(), topic, 0, 10 * batch_id + offset, AT, 0, [])
        for offset, (topic, v) in enumerate(records)
    ]
    ctx = JobContext(MarginParams(), state, sink)
    return process_batch(spark, spark.createDataFrame(rows, KAFKA_BATCH_SCHEMA), batch_id, ctx)


def test_batches_and_compactions_keep_only_the_current_state_cached(
    spark: SparkSession, tmp_path: Path
) -> None:
    spark.catalog.clearCache()
    emitted: list[int] = []

    def sink(df: DataFrame, batch_id: int) -> None:
        emitted.append(len(df.collect()))

    state = StateStore(spark, str(tmp_path), compact_every=2)
    stats = _batch(spark, state, sink)
    # the batch did its work (one account's two results plus the rejected record) ...
    assert stats.margin_results == 1 and emitted == [3]
    # ... and what stays cached is the state: the book and the symbol table, nothing of the batch
    assert len(state.cached_frames()) == 2 and _only_the_state_is_cached(spark, state)
    first_book = state.book
    assert first_book is not None

    # When the next batch triggers a compaction, the new base's book and applied ids are cached
    # and the old base's book is released
    stats = _batch(spark, state, sink, batch_id=1)
    assert stats.compaction_s > 0 and state.base_id == 1
    assert state.book is not first_book and not first_book.is_cached
    assert state.seen is not None and len(state.cached_frames()) == 3
    assert _only_the_state_is_cached(spark, state)
    for batch_id in range(2, 5):
        stats = _batch(spark, state, sink, batch_id=batch_id)
        assert _only_the_state_is_cached(spark, state)
        # within the batch's four jobs: the parse, the base's ids, the symbol broadcast, the sink
        assert 3 <= stats.spark_jobs <= 4

    # And a stopped job releases them all
    state.release()
    assert _cached_rdds(spark) == 0


def test_a_failed_batch_leaves_only_the_state_cached_and_commits_nothing(
    spark: SparkSession, tmp_path: Path
) -> None:
    spark.catalog.clearCache()
    state = StateStore(spark, str(tmp_path))

    def broken_sink(df: DataFrame, batch_id: int) -> None:
        raise ConnectionError("sink unreachable")

    with pytest.raises(ConnectionError):
        _batch(spark, state, broken_sink)

    assert _only_the_state_is_cached(spark, state)
    assert not state.is_committed(0)
    assert state.driver.positions == {}  # the failed batch's changes were never applied
    state.release()
