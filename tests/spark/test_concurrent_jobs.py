"""The micro-batch's concurrent steps keep Spark's thread-local context and report failures."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from emr_jobs.batch import _concurrently

pytestmark = [pytest.mark.spark]


def test_concurrent_steps_return_in_order_and_see_the_callers_job_group(
    spark: SparkSession,
) -> None:
    sc = spark.sparkContext
    sc.setLocalProperty("margin.test.group", "batch-7")
    try:
        results = _concurrently(
            lambda: spark.range(5).count(),
            lambda: sc.getLocalProperty("margin.test.group"),
            lambda: spark.range(3).count(),
        )
    finally:
        sc.setLocalProperty("margin.test.group", None)  # type: ignore[arg-type]
    # A worker that lost the property would not be cancelled with a stopped streaming query.
    assert results == [5, "batch-7", 3]


def test_a_failing_concurrent_step_fails_the_batch_after_the_others_finish(
    spark: SparkSession,
) -> None:
    finished: list[str] = []

    def fails() -> None:
        raise RuntimeError("seen write failed")

    def counts() -> int:
        n = spark.range(10).count()
        finished.append("counts")
        return n

    with pytest.raises(RuntimeError, match="seen write failed"):
        _concurrently(counts, fails)
    assert finished == ["counts"]
