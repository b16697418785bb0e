"""Latest price and beta per symbol: ordered by event time, betas.v1 overrides from as_of on."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pyspark.sql import SparkSession

from emr_jobs.batch import effective_prices
from emr_jobs.state import SCHEMAS

pytestmark = pytest.mark.spark


def ts(minute: int) -> datetime:
    return datetime(2026, 2, 16, 14, minute, tzinfo=UTC)


def fact(minute: int, value: str, offset: int = 0) -> tuple[datetime, int, int, Decimal]:
    return (ts(minute), 0, offset, Decimal(value))


def test_override_applies_from_as_of_and_ticks_beat_fill_prices(spark: SparkSession) -> None:
    rows = [
        # symbol, tick, tick_beta, fill, override
        (
            "OVR",
            fact(31, "30.0"),
            fact(31, "1.5"),
            fact(30, "50.0"),
            fact(30, "3.0"),
        ),  # as_of <= tick
        ("LATE", fact(31, "30.0"), fact(31, "1.5"), None, fact(35, "3.0")),  # as_of after tick
        ("NOTICK", None, None, fact(30, "4.0"), fact(29, "2.0")),  # fill price, override beta
        ("PLAIN", fact(31, "7.0"), None, None, None),  # no beta anywhere -> 1.0
        ("KEEP", fact(33, "8.0"), fact(31, "1.8"), None, None),  # latest tick w/o beta keeps 1.8
    ]
    df = spark.createDataFrame(rows, SCHEMAS["symbols"])
    got = {r["symbol"]: (r["price"], r["beta"]) for r in effective_prices(df).collect()}
    assert got == {
        "OVR": (30, 3),
        "LATE": (30, Decimal("1.5")),
        "NOTICK": (4, 2),
        "PLAIN": (7, 1),
        "KEEP": (8, Decimal("1.8")),
    }


def test_latest_fact_is_ordered_by_event_time_then_offset_not_arrival(
    spark: SparkSession,
) -> None:
    from emr_jobs.batch import _latest

    # Given three ticks for one symbol arriving out of event-time order, two at the same time
    ticks = spark.createDataFrame(
        [
            ("X", ts(32), 0, 5, 11.0),
            ("X", ts(33), 0, 3, 12.0),
            ("X", ts(33), 0, 4, 13.0),
            ("X", ts(31), 0, 9, 10.0),
        ],
        "symbol string, event_ts timestamp, partition int, offset long, price double",
    )
    # When the latest is taken
    row = _latest(ticks, "price", "tick").collect()[0]
    # Then the newest event wins, ties go to the later offset
    assert (row["tick"]["value"], row["tick"]["offset"]) == (13, 4)
