"""A micro-batch releases every DataFrame it caches, whether it succeeds or fails: the job runs
for days, one batch after another (a failed one retried in the same session), and a cache left
behind per batch would fill the driver's and executors' memory."""

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


def _anything_cached(spark: SparkSession) -> bool:
    return not spark._jsparkSession.sharedState().cacheManager().isEmpty()


def _batch(
    spark: SparkSession, state: StateStore, sink: Callable[[DataFrame, int], None]
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
    rows = [
        (b"k", json.dumps(v).encode(), topic, 0, offset, AT, 0, [])
        for offset, (topic, v) in enumerate(records)
    ]
    ctx = JobContext(MarginParams(), state, sink)
    return process_batch(spark, spark.createDataFrame(rows, KAFKA_BATCH_SCHEMA), 0, ctx)


def test_a_batch_leaves_nothing_cached(spark: SparkSession, tmp_path: Path) -> None:
    spark.catalog.clearCache()
    emitted: list[int] = []

    def sink(df: DataFrame, batch_id: int) -> None:
        emitted.append(len(df.collect()))

    stats = _batch(spark, StateStore(spark, str(tmp_path)), sink)

    # the batch did its work (one account's two results plus the rejected record) ...
    assert stats.margin_results == 1 and emitted == [3]
    # ... and no cached plan outlives it
    assert not _anything_cached(spark)


def test_a_failed_batch_leaves_nothing_cached_and_commits_nothing(
    spark: SparkSession, tmp_path: Path
) -> None:
    spark.catalog.clearCache()
    state = StateStore(spark, str(tmp_path))

    def broken_sink(df: DataFrame, batch_id: int) -> None:
        raise ConnectionError("sink unreachable")

    with pytest.raises(ConnectionError):
        _batch(spark, state, broken_sink)

    assert not _anything_cached(spark)
    assert not state.is_committed(0)
