"""One micro-batch of the margin job: parse, deduplicate, update state, compute, emit, commit.

``process_batch`` is the single code path for production (Spark's Kafka source calling it through
``foreachBatch``) and for the local driver (records read from the local broker with
confluent-kafka, shaped like the Kafka source's rows). Everything inside is a native DataFrame
expression; the only driver-side work is a handful of small counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from pyspark import InheritableThread
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from emr_jobs import calc, parse
from emr_jobs.metrics import MetricsWriter, batch_metrics
from emr_jobs.state import StateStore
from margin_risk import names
from margin_risk.params import MarginParams

# outputs DataFrame columns: topic, key (string), value (JSON string), headers (Kafka sink shape)
DEDUPE_HORIZON_HOURS = 168
REASON_OLDER_THAN_HORIZON = "older_than_dedupe_horizon"
ID_TOPICS = (names.TOPIC_FILLS, names.TOPIC_CASH)
Sink = Callable[[DataFrame, int], None]


@dataclass
class JobContext:
    """What a micro-batch needs besides its records."""

    params: MarginParams
    state: StateStore
    sink: Sink
    metrics: Optional[MetricsWriter] = None
    # How long applied fill/cash ids are remembered, by event time; older records are rejected.
    # The default is the input topics' retention: Kafka cannot redeliver anything older.
    dedupe_horizon_hours: int = DEDUPE_HORIZON_HOURS


@dataclass
class BatchStats:
    """Counts of one micro-batch (also the source of its EMF metrics)."""

    batch_id: int
    input_records: int = 0
    accepted: Dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    rejected: Dict[str, int] = field(default_factory=dict)
    margin_results: int = 0
    stress_results: int = 0
    accounts: int = 0
    positions: int = 0
    duration_s: float = 0.0
    skipped: bool = False


def iso(c: Column) -> Column:
    """UTC ISO-8601 text with a Z, microseconds only when non-zero (session zone is UTC)."""
    whole = F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss'Z'")
    frac = F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
    return F.when(F.date_format(c, "SSSSSS") == "000000", whole).otherwise(frac)


def _latest(df: DataFrame, value: str, alias: str) -> DataFrame:
    """symbol -> the row's value with the greatest (event ts, partition, offset)."""
    return df.groupBy("symbol").agg(
        F.max(
            F.struct(
                F.col("event_ts").alias("ts"),
                F.col("partition"),
                F.col("offset"),
                F.col(value).cast(calc.PRICE_TYPE).alias("value"),
            )
        ).alias(alias)
    )


FACTS = ("tick", "tick_beta", "fill", "override")


def effective_prices(symbols: DataFrame) -> DataFrame:
    """symbol, price, beta in force: the latest tick (else the latest fill) prices the symbol;
    a betas.v1 override applies from its as_of on, else the latest tick beta, else 1.0."""
    ov, tick = F.col("override"), F.col("tick")
    beta = F.when(
        ov.isNotNull() & (tick.isNull() | (ov["ts"] <= tick["ts"])), ov["value"]
    ).otherwise(F.coalesce(F.col("tick_beta")["value"], F.lit(Decimal(1)).cast(calc.PRICE_TYPE)))
    return symbols.select(
        "symbol",
        F.coalesce(tick["value"], F.col("fill")["value"]).alias("price"),
        beta.alias("beta"),
    )


def _dedupe(valid: DataFrame, id_col: str, kind: str, seen: DataFrame) -> DataFrame:
    """First occurrence in the batch (by partition, offset), minus ids applied in any earlier
    batch: a redelivered fill or cash transaction never moves state twice."""
    w = Window.partitionBy(id_col).orderBy("partition", "offset")
    first = valid.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")
    old = seen.where(F.col("kind") == kind).select(F.col("id").alias(id_col))
    return first.join(old, id_col, "left_anti")


def process_batch(
    spark: SparkSession,
    batch_df: DataFrame,
    batch_id: int,
    ctx: JobContext,
    commit_extra: Optional[Dict[str, Any]] = None,
) -> BatchStats:
    """Apply one micro-batch of Kafka-source rows; idempotent per batch_id (see state.py)."""
    started = time.monotonic()
    if ctx.state.is_committed(batch_id):
        return BatchStats(batch_id=batch_id, skipped=True)
    cache = _BatchCache()
    try:
        return _apply_batch(batch_df, batch_id, ctx, commit_extra, cache, started)
    finally:
        cache.release()


class _BatchCache:
    """The DataFrames one micro-batch caches, released when it ends, whether it succeeded or not:
    the job runs for days, and a failed batch is retried in the same session."""

    def __init__(self) -> None:
        self._frames: List[DataFrame] = []

    def __call__(self, df: DataFrame) -> DataFrame:
        self._frames.append(df.persist())
        return df

    def release(self) -> None:
        for df in self._frames:
            df.unpersist()
        self._frames.clear()


def _apply_batch(
    batch_df: DataFrame,
    batch_id: int,
    ctx: JobContext,
    commit_extra: Optional[Dict[str, Any]],
    cache: _BatchCache,
    started: float,
) -> BatchStats:
    st = ctx.state
    base = st.last_committed(below=batch_id)

    records = cache(parse.with_meta(batch_df))
    # Persisted per topic: the symbol facts, the triggers, the rejected outputs, the id hours and
    # the counts all read the parsed rows, and each read parsed the JSON again (a price record
    # was parsed four times per batch; measured 2.70 -> 2.33 s per 5,000-record batch).
    parsed = {t: cache(parse.parse_topic(records, t)) for t in parse.TOPIC_FIELDS}
    batch_hours, arrival_hour = _id_hours(parsed, ID_TOPICS)
    seen = st.seen_manifest(base).advance(batch_hours, arrival_hour, ctx.dedupe_horizon_hours)
    if seen.cutoff is not None:
        too_old = event_hour(F.col("event_ts")) < F.lit(seen.cutoff)
        for t in ID_TOPICS:
            parsed[t] = parsed[t].withColumn(
                "reason",
                F.coalesce(F.col("reason"), F.when(too_old, F.lit(REASON_OLDER_THAN_HORIZON))),
            )
    valid = {t: df.where(F.col("reason").isNull()) for t, df in parsed.items()}
    seen_old = st.load_seen(seen)

    fills = _dedupe(valid[names.TOPIC_FILLS], "fill_id", "fill", seen_old)
    fills = cache(
        fills.withColumn(
            "signed",
            F.when(F.col("side").isin("BUY", "COVER"), F.col("quantity")).otherwise(
                -F.col("quantity")
            ),
        )
    )
    cash = cache(_dedupe(valid[names.TOPIC_CASH], "txn_id", "cash", seen_old))
    prices = valid[names.TOPIC_PRICES]
    betas = valid[names.TOPIC_BETAS]

    # --- symbols: latest price / beta facts ---------------------------------------------------
    # Persisted (like trig below): the snapshot write, the changed-symbol test and the triggers
    # all read it, and each read recomputed four aggregations and three joins.
    batch_sym = cache(
        _latest(prices, "price", "tick")
        .join(
            _latest(prices.where(F.col("beta").isNotNull()), "beta", "tick_beta"), "symbol", "full"
        )
        .join(_latest(fills, "price", "fill"), "symbol", "full")
        .join(_latest(betas, "beta", "override"), "symbol", "full")
    )
    sym_old = st.load("symbols", base)
    o, n = sym_old.alias("o"), batch_sym.alias("n")
    sym_new = o.join(n, F.col("o.symbol") == F.col("n.symbol"), "full").select(
        F.coalesce(F.col("o.symbol"), F.col("n.symbol")).alias("symbol"),
        *[F.greatest(F.col(f"o.{f}"), F.col(f"n.{f}")).alias(f) for f in FACTS],
    )
    sym_new = st.save("symbols", batch_id, sym_new)

    eff_old = effective_prices(sym_old.join(batch_sym.select("symbol"), "symbol", "left_semi"))
    eff_new = effective_prices(sym_new.join(batch_sym.select("symbol"), "symbol", "left_semi"))
    changed = (
        eff_new.alias("a")
        .join(eff_old.alias("b"), "symbol", "left")
        .where(
            ~F.col("a.price").eqNullSafe(F.col("b.price"))
            | ~F.col("a.beta").eqNullSafe(F.col("b.beta"))
        )
        .select("symbol")
    )

    # --- positions -----------------------------------------------------------------------------
    pos_old = st.load("positions", base)
    delta = fills.groupBy("account_id", "symbol").agg(F.sum("signed").alias("quantity"))
    pos_new = (
        pos_old.unionByName(delta)
        .groupBy("account_id", "symbol")
        .agg(F.sum("quantity").cast(calc.QUANTITY_TYPE).alias("quantity"))
        .where(F.col("quantity") != 0)
    )
    pos_new = st.save("positions", batch_id, pos_new)

    # --- triggers: the batch's inputs that contribute to each account ---------------------------
    trig_cols = ["account_id", "event_ts", "topic", "partition", "offset", "kafka_ts", "symbol"]
    sym_records = (
        prices.select("symbol", "event_ts", "topic", "partition", "offset", "kafka_ts")
        .unionByName(betas.select("symbol", "event_ts", "topic", "partition", "offset", "kafka_ts"))
        .unionByName(fills.select("symbol", "event_ts", "topic", "partition", "offset", "kafka_ts"))
    )
    sym_trig = (
        sym_records.join(changed, "symbol", "left_semi")
        .groupBy("symbol")
        .agg(F.max(F.struct("event_ts", "topic", "partition", "offset", "kafka_ts")).alias("t"))
        .select("symbol", "t.*")
    )
    triggers = (
        fills.select(*trig_cols, "correlation_id")
        .unionByName(
            cash.select(
                *trig_cols[:-1], F.lit(None).cast("string").alias("symbol"), "correlation_id"
            )
        )
        .unionByName(
            pos_new.select("account_id", "symbol")
            .join(sym_trig, "symbol")
            .select(*trig_cols, F.lit(None).cast("string").alias("correlation_id"))
        )
        .dropDuplicates(["account_id", "topic", "partition", "offset"])
    )
    order = ["event_ts", "topic", "partition", "offset"]
    # Persisted: the accounts snapshot and the outputs both need it, and without the cache the
    # outputs job recomputed the whole trigger lineage (six Spark jobs, ~0.6 s per batch).
    trig = cache(
        triggers.groupBy("account_id").agg(
            F.max(F.struct(*order, "kafka_ts", "symbol")).alias("newest"),
            F.max(
                F.when(F.col("correlation_id").isNotNull(), F.struct(*order, "correlation_id"))
            ).alias("newest_corr"),
            F.count(F.lit(1)).alias("input_count"),
            F.array_join(
                F.array_sort(F.collect_list(F.concat_ws(":", "topic", "partition", "offset"))), ","
            ).alias("ikeys"),
        )
    )

    # --- accounts: cash and the newest contributing event time ---------------------------------
    acc_old = st.load("accounts", base)
    # Trade-date cash: a fill moves cash by -signed quantity x fill price (a buy on margin
    # leaves a debit balance, a short sale credits its proceeds), a cash.v1 record by its amount.
    moves = ["account_id", "topic", "partition", "offset"]
    cash_moves = cash.select(
        *moves, F.col("amount").cast(calc.CASH_TYPE).alias("amount")
    ).unionByName(
        fills.select(
            *moves, (-F.col("signed") * F.col("price")).cast(calc.CASH_TYPE).alias("amount")
        )
    )
    # Exact decimals: the sum is the same in any order, so a replayed batch reproduces it.
    cash_delta = cash_moves.groupBy("account_id").agg(
        F.sum("amount").cast(calc.CASH_TYPE).alias("delta")
    )
    acc_new = (
        acc_old.join(cash_delta, "account_id", "full")
        .join(
            trig.select("account_id", F.col("newest.event_ts").alias("trig_ts")),
            "account_id",
            "full",
        )
        .select(
            "account_id",
            (F.coalesce(F.col("cash"), F.lit(0)) + F.coalesce(F.col("delta"), F.lit(0)))
            .cast(calc.CASH_TYPE)
            .alias("cash"),
            F.greatest(F.col("last_ts"), F.col("trig_ts")).alias("last_ts"),
        )
    )
    acc_new = st.save("accounts", batch_id, acc_new)

    # --- margin and stress for every account whose inputs changed ------------------------------
    affected = trig.join(acc_new, "account_id")
    holdings = (
        pos_new.join(affected.select("account_id"), "account_id", "left_semi")
        .join(effective_prices(sym_new), "symbol")
        .select("account_id", "symbol", "quantity", "price", "beta")
    )
    p = ctx.params
    out = (
        calc.account_margin(holdings, affected.select("account_id", "cash"), p)
        .join(affected.drop("cash"), "account_id")
        .select(
            "account_id",
            "m",
            "scenarios_full",
            "worst_scenario",
            "worst_deficiency",
            iso(F.col("last_ts")).alias("timestamp"),
            iso(F.col("newest.kafka_ts")).alias("origin_ts"),
            F.coalesce(
                F.col("newest_corr.correlation_id"),
                F.concat_ws(
                    ":",
                    F.col("newest.topic"),
                    F.col("newest.symbol"),
                    iso(F.col("newest.event_ts")),
                ),
            ).alias("correlation_id"),
            "input_count",
            "ikeys",
        )
    )

    def event_id(topic: str) -> Column:
        return F.substring(
            F.sha2(F.concat_ws("|", F.lit(topic), F.col("account_id"), F.col("ikeys")), 256), 1, 32
        )

    tail = ["correlation_id", "origin_ts", "input_count"]
    margin_json = F.to_json(
        F.struct(
            event_id(names.TOPIC_MARGIN_CALC).alias("event_id"),
            "account_id",
            "timestamp",
            *[F.col("m")[c].alias(c) for c in calc.MARGIN_COLUMNS],
            *tail,
        )
    )
    stress_json = F.to_json(
        F.struct(
            event_id(names.TOPIC_STRESS).alias("event_id"),
            "account_id",
            "timestamp",
            calc.public_scenarios(F.col("scenarios_full")).alias("scenarios"),
            "worst_scenario",
            "worst_deficiency",
            *tail,
        )
    )
    headers = F.array(
        F.struct(
            F.lit(names.HEADER_CORRELATION_ID).alias("key"),
            F.encode(F.col("correlation_id"), "UTF-8").alias("value"),
        ),
        F.struct(
            F.lit(names.HEADER_ORIGIN_TS).alias("key"),
            F.encode(F.col("origin_ts"), "UTF-8").alias("value"),
        ),
    )

    def result(topic: str, value: Column) -> Column:
        return F.struct(
            F.lit(topic).alias("topic"),
            F.col("account_id").alias("key"),
            value.alias("value"),
            headers.alias("headers"),
        )

    # Both results of an account from one pass over ``out`` (a union of two selects would
    # compute every fold twice, or need ``out`` cached).
    results = out.select(
        F.explode(
            F.array(
                result(names.TOPIC_MARGIN_CALC, margin_json),
                result(names.TOPIC_STRESS, stress_json),
            )
        ).alias("r")
    ).select("r.*")

    rejected = parse.rejected_rows(records, parsed)
    rejected_out = rejected.select(
        F.lit(names.TOPIC_REJECTED).alias("topic"),
        F.coalesce(F.col("key_str"), F.concat_ws(":", "topic", "partition", "offset")).alias("key"),
        F.to_json(
            F.struct(
                F.col("topic").alias("source_topic"),
                "partition",
                "offset",
                F.col("key_str").alias("key"),
                "reason",
                F.col("raw").alias("value"),
                iso(F.col("kafka_ts")).alias("timestamp"),
            )
        ).alias("value"),
        F.array(
            F.struct(
                F.lit(names.HEADER_ORIGIN_TS).alias("key"),
                F.encode(iso(F.col("kafka_ts")), "UTF-8").alias("value"),
            )
        ).alias("headers"),
    )
    outputs = results.unionByName(rejected_out)

    # Emit as soon as the results exist; the applied ids and the counts follow. Safe because the
    # commit marker is still written last: a crash before it replays the batch from the same base
    # state and records, which emits the same results under the same event ids (consumers dedupe).
    ctx.sink(outputs, batch_id)

    # New versions of the event hours this batch's ids fall in; other hours keep theirs.
    live_hours = [h for h in batch_hours if seen.remembers(h)]

    def write_applied_ids() -> None:
        if not live_hours:
            return
        hour = event_hour(F.col("event_ts")).alias("hour")
        applied_ids = fills.select(
            F.lit("fill").alias("kind"), F.col("fill_id").alias("id"), hour
        ).unionByName(cash.select(F.lit("cash").alias("kind"), F.col("txn_id").alias("id"), hour))
        st.write_seen(
            batch_id, seen_old.where(F.col("hour").isin(live_hours)).unionByName(applied_ids)
        )

    # The applied ids and the counts are independent: both jobs run at once.
    _, counts = _concurrently(
        write_applied_ids,
        lambda: _batch_counts(records, rejected, fills, cash, affected, holdings),
    )
    seen = seen.written(batch_id, live_hours)
    per_topic = counts.get("in", {})
    rejected_by_reason = counts.get("rejected", {})
    accepted = {t: c for t, c in per_topic.items() if t in parse.TOPIC_FIELDS}
    for t, n_rej in counts.get("rejected_topic", {}).items():
        if t in accepted:
            accepted[t] -= n_rej
    applied = sum(counts.get("applied", {}).values())
    dupes = accepted.get(names.TOPIC_FILLS, 0) + accepted.get(names.TOPIC_CASH, 0) - applied
    summary = {"n": counts.get("out", {}).get("accounts", 0),
               "pos": counts.get("out", {}).get("positions", 0)}  # fmt: skip

    st.commit(batch_id, seen, commit_extra)

    n_acc = int(summary["n"])
    stats = BatchStats(
        batch_id=batch_id,
        input_records=sum(per_topic.values()),
        accepted=accepted,
        duplicates=dupes,
        rejected=rejected_by_reason,
        margin_results=n_acc,
        stress_results=n_acc,
        accounts=n_acc,
        positions=int(summary["pos"] or 0),
        duration_s=time.monotonic() - started,
    )
    if ctx.metrics is not None:
        ctx.metrics.write(
            batch_metrics(
                stats.input_records,
                n_acc,
                n_acc,
                rejected_by_reason,
                stats.duration_s * 1000.0,
                batch_id,
            )
        )
    return stats


def _concurrently(*calls: Callable[[], Any]) -> List[Any]:
    """Run independent driver-side calls that each submit Spark jobs at the same time and return
    their results in order; the first failure is raised. Spark's scheduler takes jobs from many
    threads, and most of a small job's time is fixed cost the driver spends waiting.

    The first call runs in this thread, the others in ``InheritableThread``s: they carry this
    thread's Spark local properties (a streaming query's job group, so stopping the query also
    cancels their jobs) and close their JVM connection when done (plain threads leak one per
    thread in pinned-thread mode, i.e. one per micro-batch here)."""
    results: List[Any] = [None] * len(calls)
    errors: List[Optional[BaseException]] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors[i] = exc

    threads = [InheritableThread(run, args=(i,)) for i in range(1, len(calls))]
    for t in threads:
        t.start()
    run(0)
    for t in threads:
        t.join()
    for exc in errors:
        if exc is not None:
            raise exc
    return results


def event_hour(ts: Column) -> Column:
    """Whole hours since the epoch (UTC) of a timestamp: the seen table's bucket."""
    return F.floor(ts.cast("double") / 3600).cast("long")


def _id_hours(
    parsed: Dict[str, DataFrame], topics: Sequence[str]
) -> Tuple[List[int], Optional[int]]:
    """The event hours of the batch's valid records of ``topics`` and the newest hour of their
    Kafka timestamps, in one small Spark job: the driver needs them to place the horizon."""
    df: Optional[DataFrame] = None
    for t in topics:
        part = (
            parsed[t]
            .where(F.col("reason").isNull())
            .select(
                event_hour(F.col("event_ts")).alias("h"), event_hour(F.col("kafka_ts")).alias("a")
            )
        )
        df = part if df is None else df.unionByName(part)
    assert df is not None
    row = df.agg(F.collect_set("h").alias("hours"), F.max("a").alias("arrival")).collect()[0]
    arrival = row["arrival"]
    return sorted(int(h) for h in row["hours"]), None if arrival is None else int(arrival)


def _batch_counts(
    records: DataFrame,
    rejected: DataFrame,
    fills: DataFrame,
    cash: DataFrame,
    affected: DataFrame,
    holdings: DataFrame,
) -> Dict[str, Dict[str, int]]:
    """Every count a batch reports, in one Spark job (kind -> key -> n): each separate count was
    a job of its own, and on a small batch the fixed cost per job dominates. The results are
    counted from their inputs (one per affected account, positions = its priced holdings), so
    the margin and stress folds are not run a second time for a count."""
    n = F.count(F.lit(1)).cast("long")
    rows = (
        records.groupBy(F.lit("in").alias("kind"), F.col("topic").alias("key"))
        .agg(n.alias("n"))
        .unionByName(
            rejected.groupBy(F.lit("rejected").alias("kind"), F.col("reason").alias("key")).agg(
                n.alias("n")
            )
        )
        .unionByName(
            rejected.groupBy(
                F.lit("rejected_topic").alias("kind"), F.col("topic").alias("key")
            ).agg(n.alias("n"))
        )
        .unionByName(
            fills.select("topic")
            .unionByName(cash.select("topic"))
            .groupBy(F.lit("applied").alias("kind"), F.col("topic").alias("key"))
            .agg(n.alias("n"))
        )
        .unionByName(
            affected.agg(n.alias("accounts"))
            .crossJoin(holdings.agg(n.alias("positions")))
            .select(
                F.lit("out").alias("kind"),
                F.explode(
                    F.map_from_arrays(
                        F.array(F.lit("accounts"), F.lit("positions")),
                        F.array("accounts", F.coalesce("positions", F.lit(0).cast("long"))),
                    )
                ).alias("key", "n"),
            )
        )
    )
    result: Dict[str, Dict[str, int]] = {}
    for r in rows.collect():
        result.setdefault(r["kind"], {})[r["key"]] = int(r["n"])
    return result
