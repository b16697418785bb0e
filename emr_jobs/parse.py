"""Parse and validate the input topics with native Spark expressions (no Python per row).

Every Kafka record of a micro-batch either becomes a typed row of its topic or a rejected row with
a low-cardinality ``reason``; a rejected record never changes state. The rules mirror
``margin_risk.models`` (strict numbers, no NaN/Infinity, ISO-8601 timestamps with a zone,
non-negative prices, positive fill quantities, known sides).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Tuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from margin_risk import names, params

CORRUPT = "_corrupt_record"
# ISO-8601 with a mandatory zone (Z or +hh:mm), optional fraction.
ISO_TS = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$"
SIDES = ("BUY", "SELL", "SHORT", "COVER")

# The columns a Kafka source micro-batch has (Spark's Kafka source with includeHeaders=true).
KAFKA_BATCH_SCHEMA = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
        T.StructField("timestampType", T.IntegerType()),
        T.StructField(
            "headers",
            T.ArrayType(
                T.StructType(
                    [T.StructField("key", T.StringType()), T.StructField("value", T.BinaryType())]
                )
            ),
        ),
    ]
)

S, D, B = T.StringType(), T.DoubleType(), T.BooleanType()
# Numbers are read twice: as doubles, only to check their JSON type (a string is not a number),
# and as their exact text (``spark.sql.json.enableExactStringParsing``), which becomes the
# field's exact decimal. Types and bounds per field (margin_risk.params).
_QTY = ("decimal(16,4)", params.QUANTITY_PLACES, params.MAX_ABS_QUANTITY)
_PRICE = ("decimal(19,4)", params.PRICE_PLACES, params.MAX_ABS_AMOUNT)
_BETA = ("decimal(6,4)", params.BETA_PLACES, params.MAX_ABS_BETA)
_AMOUNT = ("decimal(19,4)", params.AMOUNT_PLACES, params.MAX_ABS_AMOUNT)
_RATE = ("decimal(6,4)", params.RATE_PLACES, params.MAX_ABS_RATE)
EXACT = {
    "quantity": _QTY,
    "price": _PRICE,
    "beta": _BETA,
    "amount": _AMOUNT,
    "long_rate": _RATE,
    "short_rate": _RATE,
}
# A JSON number: sign, integer digits, optional fraction (group 1), optional exponent (group 2).
_NUMBER = r"^-?\d+(?:\.(\d+))?(?:[eE]([+-]?\d+))?$"
# topic -> [(field, type, required)]
TOPIC_FIELDS: Dict[str, List[Tuple[str, T.DataType, bool]]] = {
    names.TOPIC_FILLS: [
        ("fill_id", S, True),
        ("account_id", S, True),
        ("symbol", S, True),
        ("side", S, True),
        ("quantity", D, True),
        ("price", D, True),
        ("timestamp", S, True),
        ("correlation_id", S, True),
    ],
    names.TOPIC_PRICES: [
        ("symbol", S, True),
        ("price", D, True),
        ("timestamp", S, True),
        ("beta", D, False),
    ],
    names.TOPIC_CASH: [
        ("txn_id", S, True),
        ("account_id", S, True),
        ("amount", D, True),
        ("timestamp", S, True),
        ("correlation_id", S, True),
    ],
    names.TOPIC_BETAS: [("symbol", S, True), ("beta", D, True), ("as_of", S, True)],
    # A JSON true/false only (a string or a number is wrong_type), like margin_risk.house.
    names.TOPIC_HOUSE_REQUIREMENTS: [
        ("symbol", S, True),
        ("long_rate", D, True),
        ("short_rate", D, True),
        ("non_marginable", B, True),
        ("as_of", S, True),
        ("updated_by", S, True),
    ],
}
TS_FIELD = {
    names.TOPIC_FILLS: "timestamp",
    names.TOPIC_PRICES: "timestamp",
    names.TOPIC_CASH: "timestamp",
    names.TOPIC_BETAS: "as_of",
    names.TOPIC_HOUSE_REQUIREMENTS: "as_of",
}
META = ("topic", "partition", "offset", "kafka_ts", "key_str")


def _schema(topic: str) -> T.StructType:
    fields = [T.StructField(n, t) for n, t, _ in TOPIC_FIELDS[topic]]
    return T.StructType([*fields, T.StructField(CORRUPT, S)])


def _text_schema(topic: str) -> T.StructType:
    """The topic's numeric fields as their JSON text."""
    return T.StructType([T.StructField(n, S) for n, t, _ in TOPIC_FIELDS[topic] if t == D])


def _places(text: Column) -> Column:
    """Decimal places a JSON number needs as written (``33.590`` needs 2, ``1e2`` none), as
    ``margin_risk.params.places`` counts them."""
    frac = F.regexp_replace(F.regexp_extract(text, _NUMBER, 1), "0+$", "")
    exp = F.coalesce(F.regexp_extract(text, _NUMBER, 2).cast("int"), F.lit(0))
    return F.greatest(F.lit(0), F.length(frac) - exp)


def _wide(text: Column) -> Column:
    """The number's value, exact to 18 places (null when it cannot be held at all)."""
    return text.cast("decimal(38,18)")


def _finite(c: Column) -> Column:
    return ~F.isnan(c) & (F.abs(c) != F.lit(float("inf")))


def _reason(topic: str, j: Column, raw: Column, jt: Column) -> Column:
    """First failing rule, in a fixed order, or null when the record is valid."""
    rules: List[Tuple[Column, str]] = [
        (j[CORRUPT].isNotNull() & F.get_json_object(raw, "$").isNull(), "malformed_json"),
        (j[CORRUPT].isNotNull(), "wrong_type"),
    ]
    for name, typ, required in TOPIC_FIELDS[topic]:
        if required:
            rules.append((j[name].isNull(), "missing_field"))
        if isinstance(typ, T.StringType) and required:
            rules.append((F.length(j[name]) == 0, "empty_field"))
            # Spark's parser reads a number, a boolean or an object into a string field as its
            # JSON text; the core's models take only a JSON string. The key followed by a quote
            # in the raw text says the value is one (a quote inside a string is escaped).
            rules.append((~raw.rlike(f'"{name}"\\s*:\\s*"'), "wrong_type"))
    for name, typ, _ in TOPIC_FIELDS[topic]:
        if isinstance(typ, T.DoubleType):
            rules.append((j[name].isNotNull() & ~_finite(j[name]), "non_finite_number"))
    for name, typ, _ in TOPIC_FIELDS[topic]:
        if isinstance(typ, T.DoubleType):
            _, max_places, max_abs = EXACT[name]
            wide = _wide(jt[name])
            beyond = wide.isNull() | (F.abs(wide) >= F.lit(max_abs))
            rules.append((j[name].isNotNull() & beyond, "out_of_range"))
            rules.append(
                (j[name].isNotNull() & (_places(jt[name]) > max_places), "too_many_decimal_places")
            )
    ts = j[TS_FIELD[topic]]
    rules.append((~ts.rlike(ISO_TS) | ts.cast("timestamp").isNull(), "invalid_timestamp"))
    if topic in (names.TOPIC_FILLS, names.TOPIC_PRICES):
        rules.append((j["price"] < 0, "negative_price"))
    if topic == names.TOPIC_HOUSE_REQUIREMENTS:
        # A long rate is a share of the position's value (0 to 100%); a short rate is >= 0.
        rates = (j["long_rate"] < 0) | (j["long_rate"] > 1) | (j["short_rate"] < 0)
        rules.append((rates, "out_of_range"))
    if topic == names.TOPIC_FILLS:
        rules.append((j["quantity"] <= 0, "non_positive_quantity"))
        rules.append((~j["side"].isin(*SIDES), "unknown_side"))
    # One flat CASE WHEN with a branch per rule (first match wins). Nesting one CASE per rule
    # instead made Catalyst's expression rewrites quadratic: ~2 s of optimizer time per plan.
    expr = F.when(rules[0][0], F.lit(rules[0][1]))
    for cond, reason in rules[1:]:
        expr = expr.when(cond, F.lit(reason))
    return expr.otherwise(F.lit(None).cast("string"))


def with_meta(batch_df: DataFrame) -> DataFrame:
    """Kafka columns renamed for joins: value as UTF-8 text, Kafka timestamp as ``kafka_ts``."""
    return batch_df.select(*_meta_columns())


@lru_cache(maxsize=1)
def _meta_columns() -> List[Column]:
    return [
        F.col("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("kafka_ts"),
        F.col("key").cast("string").alias("key_str"),
        F.col("value").cast("string").alias("raw"),
    ]


# The columns every topic's rows share in ``parse_batch`` (null where a topic has no such field).
BATCH_FIELDS = ("id", "account_id", "symbol", "side", "quantity", "price", "beta", "amount",
                "correlation_id", "long_rate", "short_rate", "non_marginable")  # fmt: skip
ID_FIELD = {names.TOPIC_FILLS: "fill_id", names.TOPIC_CASH: "txn_id"}


def parse_batch(records: DataFrame) -> DataFrame:
    """Every record of a micro-batch as one row: its coordinates, ``reason`` (null when valid),
    the fields of its topic (``id`` = fill_id / txn_id), event and Kafka times as epoch
    microseconds, and the raw text (a rejected.v1 record carries it). One pass over the records
    for all topics (each record parsed with its own topic's schema), so one Spark job reads the
    batch once and brings it to the driver."""
    parsed, fields, out = _batch_columns()
    return records.select(*parsed).select(*fields).select(*out)


@lru_cache(maxsize=1)
def _batch_columns() -> Tuple[List[Column], List[Column], List[Column]]:
    """``parse_batch``'s three projections, built once: they hold no data of a batch, and
    building them is a Py4J round trip per expression node (a few thousand)."""
    opts = {"columnNameOfCorruptRecord": CORRUPT, "mode": "PERMISSIVE"}
    topics = list(TOPIC_FIELDS)
    topic = F.col("topic")
    # First projection: each topic's parsed struct (null on other topics' records). Referenced
    # many times below; the optimizer keeps it materialised once rather than inlining the parse.
    parsed = [
        *[F.col(m) for m in META],
        F.col("raw"),
        *[
            F.when(topic == t, F.from_json(F.col("raw"), _schema(t), opts)).alias(f"_j{i}")
            for i, t in enumerate(topics)
        ],
        *[
            F.when(topic == t, F.from_json(F.col("raw"), _text_schema(t), opts)).alias(f"_t{i}")
            for i, t in enumerate(topics)
        ],
    ]

    def by_topic(per_topic: Dict[str, Column], otherwise: Column) -> Column:
        expr = None
        for t, c in per_topic.items():
            expr = F.when(topic == t, c) if expr is None else expr.when(topic == t, c)
        assert expr is not None
        return expr.otherwise(otherwise)

    j = {t: F.col(f"_j{i}") for i, t in enumerate(topics)}
    jt = {t: F.col(f"_t{i}") for i, t in enumerate(topics)}
    reason = by_topic(
        {t: _reason(t, j[t], F.col("raw"), jt[t]) for t in topics}, F.lit("unknown_topic")
    )
    event_ts = by_topic(
        {t: j[t][TS_FIELD[t]].cast("timestamp") for t in topics}, F.lit(None).cast("timestamp")
    )
    cols: List[Column] = []
    for f in BATCH_FIELDS:
        if f == "id":
            sources = {t: j[t][n] for t, n in ID_FIELD.items()}
        else:
            # numbers exact from their text, at their field's decimal type
            sources = {
                t: _wide(jt[t][f]).cast(EXACT[f][0]) if f in EXACT else j[t][f]
                for t in topics
                if f in {n for n, _, _ in TOPIC_FIELDS[t]}
            }
        cols.append(by_topic(sources, F.lit(None)).alias(f) if sources else F.lit(None).alias(f))
    fields = [
        *[F.col(m) for m in META],
        F.col("raw"),
        reason.alias("reason"),
        event_ts.alias("event_ts"),
        *cols,
    ]
    out = [
        *[F.col(m) for m in META],
        F.col("raw"),
        F.col("reason"),
        F.unix_micros("event_ts").alias("event_us"),
        F.unix_micros("kafka_ts").alias("kafka_us"),
        *[F.col(f) for f in BATCH_FIELDS],
    ]
    return parsed, fields, out
