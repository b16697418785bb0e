"""One micro-batch of the margin job: parse, deduplicate, update state, compute, emit, commit.

``process_batch`` is the single code path for production (Spark's Kafka source calling it through
``foreachBatch``) and for the local driver (records read from the local broker with
confluent-kafka, shaped like the Kafka source's rows).

A batch costs what changed, in at most four Spark jobs:

1. parse and validate every record (one pass) and bring the rows to the driver, which places the
   dedupe horizon, drops duplicates and works out the batch's changes: position and cash deltas,
   symbol facts, the symbols whose effective price or beta changed, and the accounts with fills
   or cash (all proportional to the batch);
2. only when the batch has fill or cash ids: look them up among the ids applied before the base
   snapshot (a filtered scan of the cached ids);
3. the sink's job, with the broadcast of the symbol prices it joins (a job of its own): one scan
   of the cached book for the accounts with fills or cash and every holder of a changed symbol,
   merged with the changes since the base, exchanged once by account, through the margin and
   stress kernel into the output records (plus the rejected records).

The batch's own small frames (its symbols, changes and rejected records) are built in the JVM
from one JSON text each (``emr_jobs.frames``), and the column expressions of the plans are built
once per session: a batch's driver work is a few hundred Py4J calls, not thousands.

Then the driver writes the batch's change log and its commit marker (proportional to the batch,
not to the book); every so often a compaction writes a new base (see ``emr_jobs.state``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable, Dict, List, Optional, Tuple

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from emr_jobs import calc, parse
from emr_jobs.book import BatchChanges, SymbolFacts
from emr_jobs.frames import literal_array, local_frame, struct_type
from emr_jobs.history import HistoryWriter, archive_columns
from emr_jobs.metrics import JobLog, MetricsWriter, batch_metrics
from emr_jobs.state import CASH_TYPE, QUANTITY_TYPE, SYMBOL_FIELDS, StateStore
from margin_risk import archive, names
from margin_risk.params import MarginParams

# outputs DataFrame columns: topic, key (string), value (JSON string), headers (Kafka sink shape)
DEDUPE_HORIZON_HOURS = 168
REASON_OLDER_THAN_HORIZON = "older_than_dedupe_horizon"
Sink = Callable[[DataFrame, int], None]
HOUR_US = 3_600_000_000
ZERO = Decimal(0)


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
    log: Optional[JobLog] = None
    # Where the emitted results are archived (margin_risk.archive's layout); None: not archived.
    history: Optional[HistoryWriter] = None


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
    spark_jobs: int = 0  # Spark jobs the batch itself ran (compaction and recovery apart)
    state_bytes: int = 0  # bytes of durable state the batch wrote (its change log and marker)
    compaction_s: float = 0.0  # seconds of a compaction after the batch (0: none)
    compaction_jobs: int = 0


def iso(c: Column) -> Column:
    """UTC ISO-8601 text with a Z, microseconds only when non-zero (session zone is UTC)."""
    whole = F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss'Z'")
    frac = F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")
    return F.when(F.date_format(c, "SSSSSS") == "000000", whole).otherwise(frac)


def iso_us(us: int) -> str:
    """``iso`` in Python, for epoch microseconds."""
    t = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc)
    frac = us % 1_000_000
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:06d}Z" if frac else f"{text}Z"


def dec(x: Any) -> Decimal:
    """An exact decimal of a collected number (a double is taken at its shortest text)."""
    return x if isinstance(x, Decimal) else Decimal(repr(float(x)))


def _jobs_tagged(spark: SparkSession, tag: str) -> int:
    return len(spark.sparkContext._jsc.sc().statusTracker().getJobIdsForTag(tag))


def process_batch(
    spark: SparkSession,
    batch_df: DataFrame,
    batch_id: int,
    ctx: JobContext,
    commit_extra: Optional[Dict[str, Any]] = None,
) -> BatchStats:
    """Apply one micro-batch of Kafka-source rows; idempotent per batch_id (see state.py).

    The batch's Spark jobs carry a job tag (not a job group: a streaming query's own group lets
    stopping the query cancel them) and are counted with the status tracker."""
    started = time.monotonic()
    st = ctx.state
    if st.is_committed(batch_id):
        return BatchStats(batch_id=batch_id, skipped=True)
    st.ensure_current()
    sc = spark.sparkContext
    tag = f"margin-batch-{batch_id}-{time.monotonic_ns()}"
    bytes_before = st.bytes_written
    sc.addJobTag(tag)
    try:
        stats = _apply_batch(spark, batch_df, batch_id, ctx, commit_extra)
    finally:
        sc.removeJobTag(tag)
    stats.spark_jobs = _jobs_tagged(spark, tag)
    stats.state_bytes = st.bytes_written - bytes_before
    stats.duration_s = time.monotonic() - started
    if st.due_for_compaction():
        ctag = tag + "-compaction"
        t0 = time.monotonic()
        sc.addJobTag(ctag)
        try:
            st.compact(batch_id)
        finally:
            sc.removeJobTag(ctag)
        stats.compaction_s = time.monotonic() - t0
        stats.compaction_jobs = _jobs_tagged(spark, ctag)
    if ctx.metrics is not None:
        ctx.metrics.write(
            batch_metrics(
                stats.input_records,
                stats.margin_results,
                stats.stress_results,
                stats.rejected,
                stats.duration_s * 1000.0,
                batch_id,
            )
        )
    return stats


@dataclass
class _Trigger:
    """The newest input behind a recalculation: ordered by (event time, topic, partition,
    offset), like the records' own order."""

    event_us: int
    topic: str
    partition: int
    offset: int
    kafka_us: int
    symbol: Optional[str]
    account_id: Optional[str] = None
    correlation_id: Optional[str] = None

    def key(self) -> Tuple[int, str, int, int]:
        return (self.event_us, self.topic, self.partition, self.offset)


def _trigger(r: Any) -> _Trigger:
    return _Trigger(
        int(r["event_us"]),
        r["topic"],
        int(r["partition"]),
        int(r["offset"]),
        int(r["kafka_us"]),
        r["symbol"],
        r["account_id"],
        r["correlation_id"],
    )


def _newest(rows: List[Any]) -> _Trigger:
    return max((_trigger(r) for r in rows), key=_Trigger.key)


def _apply_batch(
    spark: SparkSession,
    batch_df: DataFrame,
    batch_id: int,
    ctx: JobContext,
    commit_extra: Optional[Dict[str, Any]],
) -> BatchStats:
    st = ctx.state
    book = st.driver

    # --- job 1: every record parsed and validated, to the driver -------------------------------
    rows = parse.parse_batch(parse.with_meta(batch_df)).collect()
    per_topic: Dict[str, int] = {}
    for r in rows:
        per_topic[r["topic"]] = per_topic.get(r["topic"], 0) + 1
    batch_key = hashlib.sha256(
        "\n".join(sorted(f"{r['topic']}:{r['partition']}:{r['offset']}" for r in rows)).encode()
    ).hexdigest()
    rejected: List[Tuple[Any, str]] = []
    valid: Dict[str, List[Any]] = {t: [] for t in parse.TOPIC_FIELDS}
    for r in sorted(rows, key=lambda r: (r["topic"], r["partition"], r["offset"])):
        if r["reason"] is not None:
            rejected.append((r, r["reason"]))
        else:
            valid[r["topic"]].append(r)

    # --- the dedupe horizon and duplicates -------------------------------------------------------
    kinds = {names.TOPIC_FILLS: "fill", names.TOPIC_CASH: "cash"}
    with_ids = [r for t in kinds for r in valid[t]]
    hours = sorted({int(r["event_us"]) // HOUR_US for r in with_ids})
    arrival = max((int(r["kafka_us"]) // HOUR_US for r in with_ids), default=None)
    horizon = book.horizon.advance(hours, arrival, ctx.dedupe_horizon_hours)
    first: Dict[Tuple[str, str], Any] = {}
    for t, kind in kinds.items():
        kept = []
        for r in valid[t]:  # in (partition, offset) order
            if not horizon.remembers(int(r["event_us"]) // HOUR_US):
                rejected.append((r, REASON_OLDER_THAN_HORIZON))
                continue
            kept.append(r)
            first.setdefault((kind, r["id"]), r)
        valid[t] = kept
    unseen = [k for k in first if not book.is_seen(k[0], k[1], horizon)]
    # --- job 2 (only with fill or cash ids): ids applied before the base snapshot --------------
    before_base = st.seen_ids(unseen)
    applied_rows = {
        k: r for k, r in first.items()
        if k in unseen and not (k in before_base and horizon.remembers(before_base[k]))
    }  # fmt: skip
    fills = [r for (kind, _), r in applied_rows.items() if kind == "fill"]
    cash = [r for (kind, _), r in applied_rows.items() if kind == "cash"]
    fills.sort(key=lambda r: (r["partition"], r["offset"]))
    cash.sort(key=lambda r: (r["partition"], r["offset"]))

    # --- the batch's changes ---------------------------------------------------------------------
    ch = BatchChanges(horizon=horizon)
    own: Dict[str, List[Any]] = {}
    for r in fills:
        q = dec(r["quantity"])
        signed = q if r["side"] in ("BUY", "COVER") else -q
        k = (r["account_id"], r["symbol"])
        ch.positions[k] = ch.positions.get(k, ZERO) + signed
        ch.cash[r["account_id"]] = ch.cash.get(r["account_id"], ZERO) - signed * dec(r["price"])
        own.setdefault(r["account_id"], []).append(r)
    for r in cash:
        ch.cash[r["account_id"]] = ch.cash.get(r["account_id"], ZERO) + dec(r["amount"])
        own.setdefault(r["account_id"], []).append(r)
    ch.applied = [
        (kind, r["id"], int(r["event_us"]) // HOUR_US) for (kind, _), r in applied_rows.items()
    ]

    # Symbol facts of the batch: the latest of each kind by (event time, partition, offset).
    facts: Dict[str, SymbolFacts] = {}
    sym_records: Dict[str, List[Any]] = {}

    def note(sym: str, kind: str, r: Any, value: Any) -> None:
        f = facts.setdefault(sym, SymbolFacts())
        new = (int(r["event_us"]), int(r["partition"]), int(r["offset"]), dec(value))
        cur = getattr(f, kind)
        if cur is None or new[:3] > cur[:3]:
            setattr(f, kind, new)

    for r in valid[names.TOPIC_PRICES]:
        note(r["symbol"], "tick", r, r["price"])
        if r["beta"] is not None:
            note(r["symbol"], "tick_beta", r, r["beta"])
        sym_records.setdefault(r["symbol"], []).append(r)
    for r in valid[names.TOPIC_BETAS]:
        note(r["symbol"], "override", r, r["beta"])
        sym_records.setdefault(r["symbol"], []).append(r)
    for r in fills:
        note(r["symbol"], "fill", r, r["price"])
        sym_records.setdefault(r["symbol"], []).append(r)
    for r in valid[names.TOPIC_HOUSE_REQUIREMENTS]:
        f = facts.setdefault(r["symbol"], SymbolFacts())
        entry = (int(r["event_us"]), int(r["partition"]), int(r["offset"]), dec(r["long_rate"]),
                 dec(r["short_rate"]), bool(r["non_marginable"]), int(r["kafka_us"]))  # fmt: skip
        f.house = f.merged(SymbolFacts(house=(entry,))).house
        # An entry dated ahead of its arrival is a scheduled change: it re-margins nobody now
        # (a result stamped in the future would make every later input look stale).
        if entry[0] <= entry[6]:
            sym_records.setdefault(r["symbol"], []).append(r)
    sym_trig: Dict[str, _Trigger] = {}
    for s, f in facts.items():
        old = book.symbols.get(s)
        new = (old or SymbolFacts()).merged(f)
        moved = (
            old is None
            or old.effective() != new.effective()
            or old.in_force_now() != new.in_force_now()
        )
        if moved and s in sym_records:
            sym_trig[s] = _newest(sym_records[s])
            new.changed_ts = max(sym_trig[s].event_us, new.changed_ts or sym_trig[s].event_us)
        ch.symbols[s] = new
    # An account's own newest time counts the price changes of the symbols its fills touched
    # (a position it closes no longer carries its symbol's time into later results).
    for a, recs in own.items():
        ts = [int(r["event_us"]) for r in recs]
        for r in recs:
            old = book.symbols.get(r["symbol"]) if r["topic"] == names.TOPIC_FILLS else None
            if old is not None and old.changed_ts is not None:
                ts.append(old.changed_ts)
        ch.own_ts[a] = max(ts)

    # --- job 3: margin and stress of the affected accounts, out to the sink ---------------------
    release: List[DataFrame] = []
    try:
        outputs, observation, results = _outputs(
            spark, ctx, ch, own, sym_trig, rejected, batch_key, release
        )
        ctx.sink(outputs, batch_id)
        counts = _observed(observation, outputs)
        # The margin history: the results the sink just emitted (cached by its job), before the
        # commit, so a batch that fails after emitting is archived again by its replay.
        if ctx.history is not None and results is not None:
            ctx.history.write(_history_frames(results), batch_id, batch_key)
    finally:
        for df in release:
            df.unpersist(blocking=True)
    n_acc = int(counts.get("accounts") or 0)
    if ctx.log is not None:
        ctx.log.results_emitted(
            batch_id,
            n_acc,
            [r["correlation_id"] for r in fills + cash],
            [f"{t.topic}:{s}:{iso_us(t.event_us)}" for s, t in sym_trig.items()],
        )

    # --- durable state: the change log, then the commit marker ---------------------------------
    st.write_log(batch_id, ch)
    st.commit(batch_id, commit_extra)
    st.applied(batch_id, ch)

    rejected_by_reason: Dict[str, int] = {}
    rejected_by_topic: Dict[str, int] = {}
    for r, reason in rejected:
        rejected_by_reason[reason] = rejected_by_reason.get(reason, 0) + 1
        rejected_by_topic[r["topic"]] = rejected_by_topic.get(r["topic"], 0) + 1
    accepted = {
        t: n - rejected_by_topic.get(t, 0) for t, n in per_topic.items() if t in parse.TOPIC_FIELDS
    }
    dupes = accepted.get(names.TOPIC_FILLS, 0) + accepted.get(names.TOPIC_CASH, 0)
    dupes -= len(fills) + len(cash)
    return BatchStats(
        batch_id=batch_id,
        input_records=len(rows),
        accepted=accepted,
        duplicates=dupes,
        rejected=rejected_by_reason,
        margin_results=n_acc,
        stress_results=n_acc,
        accounts=n_acc,
        positions=int(counts.get("positions") or 0),
    )


def _observed(obs: Optional[Observation], outputs: DataFrame) -> Dict[str, Any]:
    """The counts observed while the sink wrote the outputs. A sink that never evaluated the
    frame would leave ``Observation.get`` waiting forever, so the metrics are read only when
    present (the field behind it is private: read through reflection), else counted with a
    job of their own (positions then unknown)."""
    if obs is None:
        return {}
    jo = obs._jo
    assert jo is not None
    # Query listeners run on the listener bus, after the action returned.
    outputs.sparkSession.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(10_000)
    fld = jo.getClass().getDeclaredField("metrics")
    fld.setAccessible(True)
    if fld.get(jo).isDefined():
        metrics = jo.getAsJava()  # read by key: iterating a Java map is a round trip per entry
        return {k: metrics.get(k) for k in ("accounts", "positions")}
    n = outputs.where(F.col("topic") == names.TOPIC_MARGIN_CALC).count()
    return {"accounts": n, "positions": None}


def _outputs(
    spark: SparkSession,
    ctx: JobContext,
    ch: BatchChanges,
    own: Dict[str, List[Any]],
    sym_trig: Dict[str, _Trigger],
    rejected: List[Tuple[Any, str]],
    batch_key: str,
    release: List[DataFrame],
) -> Tuple[DataFrame, Optional[Observation], Optional[DataFrame]]:
    """The batch's output records (results of every affected account, then the rejected
    records), the observation that counts them while the sink writes them, and (when the
    job archives its results) the per-account results, cached by the sink's job."""
    st = ctx.state
    d = st.driver
    rejected_df = local_frame(
        spark, _OUTPUT_FIELDS, [_rejected_record(r, reason) for r, reason in rejected]
    )
    if not own and not sym_trig:  # nothing to recalculate
        return rejected_df, None, None
    house = _house_mode({**d.symbols, **ch.symbols})
    plan = _plan(ctx.params, _shuffle_partitions(spark), house)
    # The book after this batch, as the changes since the base plus this batch's.
    after = type(d)(positions=dict(d.positions), cash=dict(d.cash), own_ts=dict(d.own_ts))
    for k, q in ch.positions.items():
        after.positions[k] = after.positions.get(k, ZERO) + q
    for a, c in ch.cash.items():
        after.cash[a] = after.cash.get(a, ZERO) + c
    for a, t in ch.own_ts.items():
        after.own_ts[a] = max(t, after.own_ts.get(a, t))
    changed = sorted(sym_trig)
    forced = sorted(own)
    # Accounts whose changed-symbol holdings came after the base are not found by the book scan.
    delta_holders = sorted({a for (a, s) in after.positions if s in sym_trig} - set(forced))

    # Symbols: the cached table, overridden by those changed since it was cached (this batch's
    # changed symbols carry their trigger).
    recent = sorted(d.symbols_since_table | set(ch.symbols))
    if len(recent) > 0 and len(d.symbols_since_table) >= _symbol_table_refresh():
        st.refresh_symbol_table()
        recent = sorted(ch.symbols)
    # A changed symbol's trigger travels as its rank among the batch's triggers (an integer the
    # per-account aggregation takes the greatest of, in a hash aggregation); the triggers
    # themselves are a literal array the results look their rank up in.
    ranked = sorted(sym_trig, key=lambda s: sym_trig[s].key())
    rank = {s: i for i, s in enumerate(ranked)}
    sym_rows = []
    for s in recent:
        f = ch.symbols.get(s) or d.symbols[s]
        price, beta = f.effective()
        trig = sym_trig.get(s)
        sym_rows.append(
            (s, price, beta, f.changed_ts, *f.house_columns(), trig is not None, rank.get(s),
             trig.account_id if trig else None)
        )  # fmt: skip
    assert st.symbol_table is not None
    table = st.symbol_table
    if recent:  # a literal list, filtered in the scan of the cached table (no join)
        table = table.where(F.expr(f"NOT symbol IN ({_sql_strings(recent)})"))
    symbols = table.select(*plan.table_as_symbols).unionByName(
        local_frame(spark, _SYMBOL_FIELDS, sym_rows)
    )
    triggers = [_trigger_doc(sym_trig[s]) for s in ranked]

    # The changes since the base, after this batch: one row per (account, symbol) moved, and one
    # per account whose cash or own time moved; an account with fills or cash in this batch
    # carries on that row the index of its newest own input in a literal array.
    owned: List[Dict[str, Any]] = []
    own_index: Dict[str, int] = {}
    for a in forced:
        own_index[a] = len(owned)
        n = _newest(own[a])
        owned.append({**_trigger_doc(n), "correlation_id": n.correlation_id, "count": len(own[a])})
    change_rows: List[Tuple[Any, ...]] = [
        (a, s, q, None, None, None) for (a, s), q in after.positions.items()
    ]
    for a in set(after.cash) | set(after.own_ts):
        change_rows.append(
            (a, None, None, after.cash.get(a), after.own_ts.get(a), own_index.get(a))
        )
    changes = local_frame(spark, _CHANGE_FIELDS, change_rows)

    # One scan of the cached book: accounts with fills or cash, and holders of changed symbols.
    assert st.book is not None
    # The literals go to the JVM as one SQL text, not one call per value.
    conds = []
    if forced or delta_holders:
        conds.append(f"account_id IN ({_sql_strings(forced + delta_holders)})")
    if changed:
        conds.append(f"arrays_overlap(positions.symbol, array({_sql_strings(changed)}))")
    hit = st.book.where(F.expr(" OR ".join(conds)))
    scan = hit.select(*plan.book_explode).select(*plan.book_rows)
    # Every row of an account in one partition: the netting by (account, symbol) and the
    # per-account aggregation then need no further exchange.
    rows = scan.unionByName(changes).repartition(plan.partitions, "account_id")
    netted = rows.groupBy("account_id", "symbol").agg(*plan.netting)
    joined = netted.join(symbols, "symbol", "left")
    if plan.house_rates:  # the house rates in force for each row (see _house_columns)
        joined = joined.select("*", *plan.house_rates)
    priced = joined.select("*", *plan.kernel_rows)
    per_account = priced.groupBy("account_id").agg(*plan.per_account).where(plan.affected)
    margin = calc.kernel_finish(per_account, ctx.params, priced.where(plan.held_now))
    looked_up = margin.select(
        "*",
        F.element_at(literal_array(owned, _OWN_TYPE), F.col("own_idx") + 1).alias("own"),
        F.element_at(literal_array(triggers, _TRIGGER_TYPE), F.col("t_rank") + 1).alias(
            "sym_newest"
        ),
    )
    out = looked_up.select("*", plan.newest).select(
        *plan.out_columns, F.lit(batch_key).alias("batch_key")
    )
    observation = Observation(f"margin-batch-{time.monotonic_ns()}")
    out = out.observe(observation, *plan.observed)
    if ctx.history is not None:
        out = out.persist(StorageLevel.MEMORY_AND_DISK)
        release.append(out)
    results = out.select(plan.results).select("r.*")
    return results.unionByName(rejected_df), observation, out


@dataclass
class _Plan:
    """The column expressions of a micro-batch's third job, built once per parameters (an
    expression costs a Py4J round trip per node to build, and every batch uses the same)."""

    partitions: int
    table_as_symbols: List[Column]
    house_rates: List[Column]
    book_explode: List[Column]
    book_rows: List[Column]
    netting: List[Column]
    kernel_rows: List[Column]
    per_account: List[Column]
    affected: Column
    held_now: Column
    newest: Column
    out_columns: List[Column]
    observed: List[Column]
    results: Column


_PLANS: Dict[Tuple[MarginParams, int, int], _Plan] = {}


def _shuffle_partitions(spark: SparkSession) -> int:
    return int(spark.conf.get("spark.sql.shuffle.partitions") or 2)


def _plan(p: MarginParams, partitions: int, house: int) -> _Plan:
    key = (p, partitions, house)
    if key not in _PLANS:
        _PLANS[key] = _build_plan(p, partitions, house)
    return _PLANS[key]


# How a batch applies house entries: none anywhere (the kernel's plain rule); every holder's
# entry is the one in force at its symbol's change time; some entry is dated after that.
HOUSE_NONE, HOUSE_AT_CHANGE, HOUSE_AHEAD = 0, 1, 2


def _house_mode(symbols: Dict[str, SymbolFacts]) -> int:
    """The ``HOUSE_*`` mode of a batch whose symbols' facts are ``symbols``."""
    mode = HOUSE_NONE
    for f in symbols.values():
        if f.house:
            if f.house_ahead():
                return HOUSE_AHEAD
            mode = HOUSE_AT_CHANGE
    return mode


def _house_columns(house: int, calc_ts: Column) -> List[Column]:
    """The position rows' house rates in force at their account's calculation time
    (``calc_ts``, an aggregate over the account's rows), as ``calc.HOUSE_COLUMNS``.

    Every holder of a symbol is calculated at or after the symbol's ``changed_ts``, so the entry
    in force then (the table's ``h_*`` columns) is every holder's, unless an entry is dated after
    it (a scheduled change: the table then carries ``h_entries``). Only then is the account's
    time needed before its aggregation, as a window over its rows (which are in one partition
    already: no exchange)."""
    if house == HOUSE_NONE:
        return []
    pairs = [("h_long", "long_rate"), ("h_short", "short_rate"), ("h_nm", "non_marginable")]
    rates = [F.col(c) for c, _ in pairs]
    if house == HOUSE_AHEAD:
        at = calc_ts.over(Window.partitionBy("account_id"))
        entry = calc.house_in_force(F.col("h_entries"), at)
        ahead = F.col("h_entries").isNotNull()
        rates = [F.when(ahead, entry[k]).otherwise(F.col(c)) for c, k in pairs]
    return [rates[i].alias(n) for i, n in enumerate(calc.HOUSE_COLUMNS)]


def _build_plan(p: MarginParams, partitions: int, house: int) -> _Plan:
    first_row = F.col("i").isNull() | (F.col("i") == 0)  # carries the account's cash and time
    book_rows = [
        F.col("account_id"),
        F.col("p.symbol").alias("symbol"),
        F.col("p.quantity").alias("quantity"),
        F.when(first_row, F.col("cash")).alias("cash"),
        F.when(first_row, F.col("last_ts")).alias("last_ts"),
        F.lit(None).cast("int").alias("own_idx"),
    ]
    # Per (account, symbol): the net position (a row without a symbol carries only cash/time,
    # and for an account with fills or cash its newest own input: one such row per account).
    netting = [
        F.sum("quantity").cast(QUANTITY_TYPE).alias("quantity"),
        F.sum("cash").cast(CASH_TYPE).alias("cash"),
        F.max("last_ts").alias("last_ts"),
        F.max("own_idx").alias("own_idx"),
    ]
    held_now = (
        F.col("symbol").isNotNull() & F.col("quantity").isNotNull() & (F.col("quantity") != 0)
    )
    # The account's calculation time (its result's timestamp, as aggregated below).
    calc_ts = F.max(F.greatest(F.col("last_ts"), F.when(held_now, F.col("changed_ts"))))
    held_changed = held_now & F.col("changed")
    # Every aggregation buffer is a number, so both aggregations are hash aggregations.
    per_account = [
        F.sum("cash").cast(CASH_TYPE).alias("cash"),
        calc_ts.alias("ts_us"),
        F.max(F.when(held_changed, F.col("t_rank"))).alias("t_rank"),
        F.sum(
            F.when(
                held_changed
                & (F.col("t_account").isNull() | (F.col("t_account") != F.col("account_id"))),
                1,
            ).otherwise(0)
        ).alias("sym_inputs"),
        F.max(F.when(held_changed, True)).alias("holds_changed"),
        F.sum(F.when(held_now, 1).otherwise(0)).alias("_positions"),
        F.max("own_idx").alias("own_idx"),
        *calc.kernel_aggregates(held_now, p),
    ]
    own_newest = F.struct(*[F.col(f"own.{c}").alias(c) for c, _ in _TRIGGER_FIELDS])
    sym_newest = F.struct(*[F.col(f"sym_newest.{c}").alias(c) for c, _ in _TRIGGER_FIELDS])
    newest = (
        F.when(F.col("own").isNull(), sym_newest)
        .when(F.col("sym_newest").isNull(), own_newest)
        .otherwise(F.greatest(own_newest, sym_newest))
    )
    out_columns: List[Any] = [
        "account_id",
        "m",
        "scenarios_full",
        "worst_scenario",
        "worst_deficiency",
        "_positions",
        F.greatest("ts_us", "own.event_us").alias("calc_us"),
        iso(F.timestamp_micros(F.greatest("ts_us", "own.event_us"))).alias("timestamp"),
        iso(F.timestamp_micros(F.col("newest.kafka_us"))).alias("origin_ts"),
        F.coalesce(
            F.col("own.correlation_id"),
            F.concat_ws(
                ":",
                F.col("newest.topic"),
                F.col("newest.symbol"),
                iso(F.timestamp_micros(F.col("newest.event_us"))),
            ),
        ).alias("correlation_id"),
        (F.coalesce("own.count", F.lit(0)) + F.col("sym_inputs")).alias("input_count"),
    ]
    event_id = _event_id

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

    return _Plan(
        partitions=partitions,
        table_as_symbols=[
            F.col("*"),
            F.lit(False).alias("changed"),
            F.lit(None).cast("int").alias("t_rank"),
            F.lit(None).cast("string").alias("t_account"),
        ],
        book_explode=[
            F.col("account_id"),
            F.posexplode_outer("positions").alias("i", "p"),
            F.col("cash"),
            F.col("last_ts"),
        ],
        book_rows=book_rows,
        house_rates=_house_columns(house, calc_ts),
        netting=netting,
        kernel_rows=calc.kernel_row_columns(p, house != HOUSE_NONE),
        per_account=per_account,
        affected=F.col("own_idx").isNotNull() | F.col("holds_changed"),
        held_now=held_now,
        newest=newest.alias("newest"),
        out_columns=[F.col(c) if isinstance(c, str) else c for c in out_columns],
        observed=[F.count(F.lit(1)).alias("accounts"), F.sum("_positions").alias("positions")],
        results=F.explode(
            F.array(
                result(names.TOPIC_MARGIN_CALC, margin_json),
                result(names.TOPIC_STRESS, stress_json),
            )
        ).alias("r"),
    )


def _event_id(topic: str) -> Column:
    """A result's id: the same for the same account, topic and batch records (a replay; the
    rows carry their batch's key)."""
    key = F.concat_ws("|", F.lit(topic), F.col("account_id"), F.col("batch_key"))
    return F.substring(F.sha2(key, 256), 1, 32)


def _history_frames(results: DataFrame) -> Dict[str, DataFrame]:
    """Each archive kind's rows of the per-account results, as the sink's records carry them."""
    return {kind: results.select(*cols) for kind, cols in _history_columns().items()}


@lru_cache(maxsize=1)
def _history_columns() -> Dict[str, List[Column]]:
    """Each archive kind's columns of the per-account results (built once, like the plan)."""
    common = {"account_id": F.col("account_id"), "correlation_id": F.col("correlation_id")}
    margin = {
        **common,
        "event_id": _event_id(names.TOPIC_MARGIN_CALC),
        **{c: F.col("m")[c] for c in calc.MARGIN_COLUMNS},
    }
    stress = {
        **common,
        "event_id": _event_id(names.TOPIC_STRESS),
        "scenarios": calc.public_scenarios(F.col("scenarios_full")),
        "worst_scenario": F.col("worst_scenario"),
        "worst_deficiency": F.col("worst_deficiency"),
    }
    ts = F.col("calc_us")
    return {
        archive.KIND_MARGIN: archive_columns(archive.KIND_MARGIN, margin, ts),
        archive.KIND_STRESS: archive_columns(archive.KIND_STRESS, stress, ts),
    }


def _sql_strings(values: List[str]) -> str:
    """SQL string literals (quotes and backslashes escaped), comma-separated."""
    return ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


def _symbol_table_refresh() -> int:
    from emr_jobs.state import SYMBOL_TABLE_REFRESH

    return SYMBOL_TABLE_REFRESH


# The symbol table's fields, and for a batch's own symbols whether the batch changed them.
_SYMBOL_FIELDS = (
    *SYMBOL_FIELDS,
    ("changed", "boolean"),
    ("t_rank", "int"),  # a changed symbol's rank among the batch's triggers
    ("t_account", "string"),  # the account of a fill that changed it (not counted twice)
)
# The newest input behind a result, in the order results compare them (event time, topic,
# partition, offset).
_TRIGGER_FIELDS = (
    ("event_us", "long"),
    ("topic", "string"),
    ("partition", "int"),
    ("offset", "long"),
    ("kafka_us", "long"),
    ("symbol", "string"),
)
_TRIGGER_TYPE = struct_type(_TRIGGER_FIELDS)
# An account's newest own input (fill or cash) in the batch, and how many it had.
_OWN_TYPE = struct_type((*_TRIGGER_FIELDS, ("correlation_id", "string"), ("count", "int")))
_CHANGE_FIELDS = (
    ("account_id", "string"),
    ("symbol", "string"),
    ("quantity", QUANTITY_TYPE),
    ("cash", CASH_TYPE),
    ("last_ts", "long"),
    ("own_idx", "int"),
)
_OUTPUT_FIELDS = (
    ("topic", "string"),
    ("key", "string"),
    ("value", "string"),
    ("headers", "array<struct<key:string,value:binary>>"),
)


def _trigger_doc(t: _Trigger) -> Dict[str, Any]:
    return {c: getattr(t, c) for c, _ in _TRIGGER_FIELDS}


def _rejected_record(r: Any, reason: str) -> Tuple[Any, ...]:
    """A rejected.v1 record (the shape the job has always written; null fields left out)."""
    at = iso_us(int(r["kafka_us"]))
    body = {
        "source_topic": r["topic"],
        "partition": r["partition"],
        "offset": r["offset"],
        "key": r["key_str"],
        "reason": reason,
        "value": r["raw"],
        "timestamp": at,
    }
    value = json.dumps({k: v for k, v in body.items() if v is not None}, separators=(",", ":"))
    key = (
        r["key_str"] if r["key_str"] is not None else f"{r['topic']}:{r['partition']}:{r['offset']}"
    )
    header = {"key": names.HEADER_ORIGIN_TS, "value": at.encode()}
    return (names.TOPIC_REJECTED, key, value, [header])
