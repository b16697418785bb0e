"""Small DataFrames made from driver-side rows without a Python worker or a call per row.

``SparkSession.createDataFrame`` of Python rows pickles them into an RDD that a Python worker
process unpickles when a task reads it: every such frame in a micro-batch costs a Python worker
round trip per task, and its statistics are unknown, so the planner can never broadcast it. A
micro-batch's own frames (its symbol facts, the accounts it touched, its changes, its rejected
records) are driver data of a few rows to a few thousand: they go to the JVM here as one JSON text
literal, which the task parses into rows. The frame is built in a handful of Py4J calls whatever
its size, no Python process reads it, and its size is known (a broadcast candidate).

Numbers stay exact: a ``Decimal`` travels as its text and Spark's JSON reader turns that text
into the field's decimal type without a double; integers are JSON integers. ``bytes`` travel as
base64 (the reader decodes them for a binary field). Values are encoded by their field's type: a
struct is a dict (by name) or a tuple (in field order), an array a list or tuple, so nested
values (a symbol's house entries, an array of structs of decimals) stay exact too.
"""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from functools import lru_cache
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

Fields = Sequence[Tuple[str, str]]  # (column name, Spark SQL type)
Shape = Tuple[str, Any]  # see _shape


@lru_cache(maxsize=256)
def _shape(spark_type: str) -> Shape:
    """A Spark SQL type's nesting: ``("struct", ((name, shape), ...))``, ``("array", shape)``
    or ``("atom", type)`` (the types ``local_frame`` and ``literal_array`` are given)."""
    t = spark_type.strip()
    low = t.lower()
    if low.startswith("array<") and t.endswith(">"):
        return ("array", _shape(t[6:-1]))
    if low.startswith("struct<") and t.endswith(">"):
        fields = []
        for part in _top_level(t[7:-1]):
            name, _, sub = part.partition(":")
            fields.append((name.strip(), _shape(sub)))
        return ("struct", tuple(fields))
    return ("atom", low)


def _top_level(text: str) -> List[str]:
    """``text`` split at the commas outside any ``<...>`` or ``(...)``."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in "<(":
            depth += 1
        elif c in ">)":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p.strip()]


def _plain(v: Any, shape: Shape) -> Any:
    """``v`` as the JSON value Spark's reader turns into ``shape``'s type exactly: a struct from
    a dict (by name) or a tuple (in field order), an array from a list or tuple."""
    if v is None:
        return None
    kind, inner = shape
    if kind == "struct":
        fields: Tuple[Tuple[str, Shape], ...] = inner
        if isinstance(v, dict):
            values = [v.get(n) for n, _ in fields]
        elif isinstance(v, (list, tuple)) and len(v) == len(fields):
            values = list(v)
        else:
            raise TypeError(f"not a struct of {len(fields)} fields: {v!r}")
        return {n: _plain(x, s) for (n, s), x in zip(fields, values) if x is not None}  # noqa: B905
    if kind == "array":
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"not an array: {v!r}")
        return [_plain(x, inner) for x in v]
    if isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, Decimal):
        _check_fits(v, inner)
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode("ascii")
    raise TypeError(f"cannot send a {type(v).__name__} to a local frame exactly")


@lru_cache(maxsize=64)
def _decimal_bounds(spark_type: str) -> Optional[Tuple[int, int]]:
    """(precision, scale) of a ``decimal(p,s)`` type, else None."""
    m = re.fullmatch(r"decimal\((\d+),\s*(\d+)\)", spark_type)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _check_fits(v: Decimal, spark_type: str) -> None:
    """Spark's JSON reader rounds a number with more places than its decimal type holds, and
    nulls one too large: refuse either here, so a value never changes on its way to the JVM."""
    bounds = _decimal_bounds(spark_type)
    if bounds is None:
        return
    precision, scale = bounds
    if not v.is_finite():
        raise ValueError(f"{v} is not a finite number for {spark_type}")
    if _exponent(v) < -scale and _exponent(v.normalize()) < -scale:
        raise ValueError(f"{v} has more than {scale} decimal places for {spark_type}")
    if v and v.adjusted() >= precision - scale:
        raise ValueError(f"{v} has more than {precision - scale} integer digits for {spark_type}")


def _exponent(v: Decimal) -> int:
    exponent = v.as_tuple().exponent
    assert isinstance(exponent, int)  # a finite number's
    return exponent


def struct_type(fields: Fields) -> str:
    """``struct<name:type,...>`` of the fields."""
    return "struct<" + ",".join(f"{n}:{t}" for n, t in fields) + ">"


def ddl(fields: Fields) -> str:
    """``name type, ...`` (the DDL form ``createDataFrame`` takes)."""
    return ", ".join(f"{n} {t}" for n, t in fields)


def local_frame(spark: SparkSession, fields: Fields, rows: Iterable[Sequence[Any]]) -> DataFrame:
    """A DataFrame of ``rows`` (tuples in ``fields`` order) with exactly ``fields``' types."""
    shape = _shape(struct_type(fields))
    docs = []
    for row in rows:
        if len(row) != len(fields):
            raise ValueError(f"a row of {len(row)} values for {len(fields)} fields")
        docs.append(_plain(row, shape))
    text = json.dumps(docs, separators=(",", ":"))
    # Parsed in the task, not by the optimizer: a text literal travels in the plan and the task
    # as a few compact bytes, where the folded array of rows and decimals would be Java-
    # serialized object by object into every task (and printed into every plan description).
    # The text depends on the row of the range, so it is not a constant to fold.
    unfolded = F.when(F.col("id") == 0, F.lit(text))
    array = F.from_json(unfolded, f"array<{struct_type(fields)}>")
    return spark.range(1, numPartitions=1).select(F.inline(array))


def literal_array(docs: Sequence[Dict[str, Any]], element_type: str) -> Column:
    """A literal array of structs (``docs``: field -> value) for a few rows a plan looks up by
    index: the optimizer folds it into a constant."""
    shape = _shape(element_type)
    text = json.dumps([_plain(d, shape) for d in docs], separators=(",", ":"))
    return F.from_json(F.lit(text), f"array<{element_type}>")


# A Kafka source row as the driver has it: key, value, topic, partition, offset, timestamp as
# epoch microseconds, timestamp type, headers as (key, value) pairs.
_KAFKA_FIELDS = (
    ("key", "binary"),
    ("value", "binary"),
    ("topic", "string"),
    ("partition", "int"),
    ("offset", "long"),
    ("timestamp_us", "long"),
    ("timestampType", "int"),
    ("headers", "array<struct<key:string,value:binary>>"),
)


def kafka_frame(spark: SparkSession, records: Iterable[Sequence[Any]]) -> DataFrame:
    """Records read outside Spark (the local driver, the benchmark) in the Kafka source's
    columns (``emr_jobs.parse.KAFKA_BATCH_SCHEMA``), built like ``local_frame``."""
    rows = [
        (k, v, t, p, o, ts, tt, [{"key": hk, "value": hv} for hk, hv in (headers or [])])
        for k, v, t, p, o, ts, tt, headers in records
    ]
    return local_frame(spark, _KAFKA_FIELDS, rows).select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        F.timestamp_micros("timestamp_us").alias("timestamp"),
        "timestampType",
        "headers",
    )
