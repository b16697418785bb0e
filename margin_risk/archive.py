"""The margin history's layout: where the archived results live and what their columns are.

Written once here and imported by every party: the Spark job writes the archive, `backtest`
(`margin_risk.tools.history`) reads it, the Glue tables (stacks) and their Athena queries describe
it.
Standard library only and Python 3.9 compatible, since the Spark job ships it to EMR Serverless.

Layout, under a root (``s3://<data bucket>/history/`` or a local directory)::

    <root>/<kind>/event_date=YYYY-MM-DD/hour=H/<any name>.parquet

``kind`` is ``margin_calc`` (``margin.calc.v1``) or ``stress`` (``stress.beta_spy.v1``);
``event_date`` and ``hour`` are the result's ``timestamp`` in UTC (``hour`` unpadded, 0-23), so
a replay can read the archive an hour at a time in event-time order. A partition may hold any
number of files (one per micro-batch and task is expected); file names are the writer's choice.
A result may appear in more than one file (a micro-batch retried after a partial write): readers
keep one row per ``event_id``.

Columns (Parquet types; Spark ``DecimalType``/``TimestampType`` as in `SPARK_DDL`):

- timestamps are Parquet ``TIMESTAMP(MICROS, isAdjustedToUTC=true)``: in Spark set
  ``spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS`` (the default, INT96, is not
  read as a UTC instant by every engine);
- amounts are ``DECIMAL(38, 20)`` (`params.RESULT_PRECISION`, `params.RESULT_SCALE`), the exact
  values the job computed, not rounded to cents; SPY moves are ``DECIMAL(6, 4)``;
- ``scenarios`` (stress only) is a list of structs, in grid order.
- the partition columns are not stored in the files (Hive-style: they are in the path).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Dict, Tuple

from margin_risk.params import RESULT_PRECISION, RESULT_SCALE

KIND_MARGIN = "margin_calc"
KIND_STRESS = "stress"
KINDS: Tuple[str, ...] = (KIND_MARGIN, KIND_STRESS)
PARTITION_COLUMNS: Tuple[str, ...] = ("event_date", "hour")

MONEY = f"decimal({RESULT_PRECISION},{RESULT_SCALE})"
MOVE = "decimal(6,4)"

# Column -> Spark SQL / Hive type, in file order (the Glue table's columns too).
MARGIN_COLUMNS: Dict[str, str] = {
    "event_id": "string",
    "account_id": "string",
    "timestamp": "timestamp",
    "equity": MONEY,
    "maintenance_req": MONEY,
    "excess": MONEY,
    "deficiency": MONEY,
    "long_market_value": MONEY,
    "short_market_value": MONEY,
    "correlation_id": "string",
}
SCENARIO_FIELDS: Dict[str, str] = {
    "scenario": MOVE,
    "stressed_equity": MONEY,
    "stressed_maintenance_req": MONEY,
    "stressed_deficiency": MONEY,
}
STRESS_COLUMNS: Dict[str, str] = {
    "event_id": "string",
    "account_id": "string",
    "timestamp": "timestamp",
    "scenarios": "array<struct<" + ",".join(f"{k}:{v}" for k, v in SCENARIO_FIELDS.items()) + ">>",
    "worst_scenario": MOVE,
    "worst_deficiency": MONEY,
    "correlation_id": "string",
}
COLUMNS: Dict[str, Dict[str, str]] = {KIND_MARGIN: MARGIN_COLUMNS, KIND_STRESS: STRESS_COLUMNS}
# The partition columns' types as the Glue table declares them (partition projection).
PARTITION_TYPES: Dict[str, str] = {"event_date": "string", "hour": "int"}


def spark_ddl(kind: str) -> str:
    """The Spark schema of one kind, for ``DataFrame.select``/``createDataFrame``."""
    return ", ".join(f"`{c}` {t}" for c, t in COLUMNS[kind].items())


def partition_values(ts: datetime) -> Tuple[str, int]:
    """``(event_date, hour)`` of a result's timestamp, in UTC."""
    u = ts.astimezone(timezone.utc)
    return u.strftime("%Y-%m-%d"), u.hour


def partition_dir(kind: str, ts: datetime) -> str:
    """``<kind>/event_date=YYYY-MM-DD/hour=H/`` relative to the archive root."""
    date, hour = partition_values(ts)
    return f"{kind}/event_date={date}/hour={hour}/"


def parse_partition(relative_dir: str) -> Tuple[str, str, int]:
    """``(kind, event_date, hour)`` of a partition directory relative to the root (raises
    ``ValueError`` for anything else)."""
    parts = [p for p in relative_dir.strip("/").split("/") if p]
    if len(parts) != 3 or parts[0] not in KINDS:
        raise ValueError(f"not a history partition: {relative_dir!r}")
    date_key, date = parts[1].split("=", 1) if "=" in parts[1] else ("", "")
    hour_key, hour = parts[2].split("=", 1) if "=" in parts[2] else ("", "")
    if date_key != "event_date" or hour_key != "hour":
        raise ValueError(f"not a history partition: {relative_dir!r}")
    datetime.strptime(date, "%Y-%m-%d")
    h = int(hour)
    if not 0 <= h <= 23:
        raise ValueError(f"hour {h} out of range in {relative_dir!r}")
    return parts[0], date, h
