"""One micro-batch of the margin job: parse, deduplicate, update state, compute, emit, commit.

``process_batch`` is the single code path for production (Spark's Kafka source calling it through
``foreachBatch``) and for the local driver (records read from the local broker with
confluent-kafka, shaped like the Kafka source's rows).

A batch costs what changed, in at most four Spark jobs (the archive adds a write per kind). Its
stages, in ``_apply_batch``'s order:

1. ``_parse`` (job 1): every record parsed and validated in one pass, brought to the driver;
2. ``_deduplicate``: the dedupe horizon placed, then each fill or cash id's first record unless
   applied since the base (driver) or, job 2 and only with fill or cash ids, before it (a filtered
   scan of the cached ids);
3. ``_own_changes``, ``_symbol_facts``, ``_symbol_changes``, ``_own_times`` (driver, exact
   ``Decimal``, proportional to the batch): position and cash deltas, symbol facts, the symbols
   whose effective price, beta or house entry in force changed and their triggers, each
   account's own time;
4. ``_emit``: the outputs (``emr_jobs.outputs``: one scan of the cached book for the accounts
   with fills or cash and every holder of a changed symbol, merged with the changes since the
   base, through the margin and stress kernel, plus the rejected records) to the sink, whose
   job computes them with the broadcast of the symbol prices (a job of its own); with a history
   writer, the same results to the archive;
5. ``_commit``: the batch's change log and its commit marker (proportional to the batch, not to
   the book); every so often a compaction writes a new base (see ``emr_jobs.state``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Tuple

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from emr_jobs import parse
from emr_jobs.book import BatchChanges, DriverBook, Horizon, SymbolFacts
from emr_jobs.history import HistoryWriter
from emr_jobs.metrics import JobLog, MetricsWriter, batch_metrics
from emr_jobs.outputs import Trigger, archive_frames, batch_outputs, iso_us, newest
from emr_jobs.state import StateStore
from margin_risk import names
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


def _apply_batch(
    spark: SparkSession,
    batch_df: DataFrame,
    batch_id: int,
    ctx: JobContext,
    commit_extra: Optional[Dict[str, Any]],
) -> BatchStats:
    """The batch's stages: parse (job 1), deduplicate (job 2, with fill or cash ids), the
    changes and the symbols they move (driver), the outputs to the sink and the archive (the
    sink's job), the log line, the commit."""
    st = ctx.state
    parsed = _parse(batch_df)
    applied = _deduplicate(st, parsed.valid, ctx.dedupe_horizon_hours)
    rejected = parsed.rejected + [(r, REASON_OLDER_THAN_HORIZON) for r in applied.too_old]
    ch, own = _own_changes(applied)
    facts, sym_records = _symbol_facts(parsed.valid, applied.fills)
    sym_trig = _symbol_changes(st.driver, facts, sym_records, ch)
    _own_times(st.driver, own, ch)
    counts = _emit(spark, ctx, batch_id, parsed.batch_key, ch, own, sym_trig, rejected)
    n_acc = int(counts.get("accounts") or 0)
    if ctx.log is not None:
        ctx.log.results_emitted(
            batch_id,
            n_acc,
            [r["correlation_id"] for r in applied.fills + applied.cash],
            [f"{t.topic}:{s}:{iso_us(t.event_us)}" for s, t in sym_trig.items()],
        )
    _commit(st, batch_id, ch, commit_extra)
    return _stats(batch_id, parsed, rejected, applied, counts)


@dataclass
class _Parsed:
    """The batch's records on the driver, by validity (valid ones per topic, in (partition,
    offset) order), and the batch key: the SHA-256 of its records' coordinates."""

    count: int
    per_topic: Dict[str, int]
    batch_key: str
    valid: Dict[str, List[Any]]
    rejected: List[Tuple[Any, str]]


def _parse(batch_df: DataFrame) -> _Parsed:
    """Job 1: every record parsed and validated in one pass, to the driver."""
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
    return _Parsed(len(rows), per_topic, batch_key, valid, rejected)


@dataclass
class _Applied:
    """The fill and cash records the batch applies, and the dedupe horizon after it."""

    horizon: Horizon
    rows: Dict[Tuple[str, str], Any]  # (kind, id) -> the first record of each id applied
    fills: List[Any]  # in (partition, offset) order
    cash: List[Any]
    too_old: List[Any]  # fill and cash records behind the horizon (rejected)


_KINDS = {names.TOPIC_FILLS: "fill", names.TOPIC_CASH: "cash"}


def _deduplicate(st: StateStore, valid: Dict[str, List[Any]], horizon_hours: int) -> _Applied:
    """The horizon placed by the batch's event hours, then each fill or cash id's first record
    in the batch unless it was applied since the base (driver) or, job 2, before it."""
    book = st.driver
    with_ids = [r for t in _KINDS for r in valid[t]]
    hours = sorted({int(r["event_us"]) // HOUR_US for r in with_ids})
    arrival = max((int(r["kafka_us"]) // HOUR_US for r in with_ids), default=None)
    horizon = book.horizon.advance(hours, arrival, horizon_hours)
    first: Dict[Tuple[str, str], Any] = {}
    too_old = []
    for t, kind in _KINDS.items():
        for r in valid[t]:  # in (partition, offset) order
            if not horizon.remembers(int(r["event_us"]) // HOUR_US):
                too_old.append(r)
                continue
            first.setdefault((kind, r["id"]), r)
    unseen = [k for k in first if not book.is_seen(k[0], k[1], horizon)]
    before_base = st.seen_ids(unseen)  # job 2, only with fill or cash ids
    applied = {
        k: r for k, r in first.items()
        if k in unseen and not (k in before_base and horizon.remembers(before_base[k]))
    }  # fmt: skip
    by_kind = {
        kind: sorted(
            (r for (k, _), r in applied.items() if k == kind),
            key=lambda r: (r["partition"], r["offset"]),
        )
        for kind in _KINDS.values()
    }
    return _Applied(horizon, applied, by_kind["fill"], by_kind["cash"], too_old)


def _own_changes(applied: _Applied) -> Tuple[BatchChanges, Dict[str, List[Any]]]:
    """Position and cash deltas of the applied fills and cash (exact), and each account's own
    inputs."""
    ch = BatchChanges(horizon=applied.horizon)
    own: Dict[str, List[Any]] = {}
    for r in applied.fills:
        q = dec(r["quantity"])
        signed = q if r["side"] in ("BUY", "COVER") else -q
        k = (r["account_id"], r["symbol"])
        ch.positions[k] = ch.positions.get(k, ZERO) + signed
        ch.cash[r["account_id"]] = ch.cash.get(r["account_id"], ZERO) - signed * dec(r["price"])
        own.setdefault(r["account_id"], []).append(r)
    for r in applied.cash:
        ch.cash[r["account_id"]] = ch.cash.get(r["account_id"], ZERO) + dec(r["amount"])
        own.setdefault(r["account_id"], []).append(r)
    ch.applied = [
        (kind, r["id"], int(r["event_us"]) // HOUR_US) for (kind, _), r in applied.rows.items()
    ]
    return ch, own


def _symbol_facts(
    valid: Dict[str, List[Any]], fills: List[Any]
) -> Tuple[Dict[str, SymbolFacts], Dict[str, List[Any]]]:
    """The batch's facts per symbol (the latest of each kind by (event time, partition, offset),
    every house entry), and the records that may re-margin its holders."""
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
    return facts, sym_records


def _symbol_changes(
    book: DriverBook,
    facts: Dict[str, SymbolFacts],
    sym_records: Dict[str, List[Any]],
    ch: BatchChanges,
) -> Dict[str, Trigger]:
    """Each symbol's facts after the batch (into ``ch``), and the newest input of each symbol
    whose effective price or beta, or house entry in force at its own time, changed."""
    sym_trig: Dict[str, Trigger] = {}
    for s, f in facts.items():
        old = book.symbols.get(s)
        new = (old or SymbolFacts()).merged(f)
        moved = (
            old is None
            or old.effective() != new.effective()
            or old.in_force_now() != new.in_force_now()
        )
        if moved and s in sym_records:
            sym_trig[s] = newest(sym_records[s])
            new.changed_ts = max(sym_trig[s].event_us, new.changed_ts or sym_trig[s].event_us)
        ch.symbols[s] = new
    return sym_trig


def _own_times(book: DriverBook, own: Dict[str, List[Any]], ch: BatchChanges) -> None:
    """Each account's own newest time (into ``ch``): its inputs' and the last price changes of
    the symbols its fills touched (a position it closes no longer carries its symbol's time
    into later results)."""
    for a, recs in own.items():
        ts = [int(r["event_us"]) for r in recs]
        for r in recs:
            old = book.symbols.get(r["symbol"]) if r["topic"] == names.TOPIC_FILLS else None
            if old is not None and old.changed_ts is not None:
                ts.append(old.changed_ts)
        ch.own_ts[a] = max(ts)


def _emit(
    spark: SparkSession,
    ctx: JobContext,
    batch_id: int,
    batch_key: str,
    ch: BatchChanges,
    own: Dict[str, List[Any]],
    sym_trig: Dict[str, Trigger],
    rejected: List[Tuple[Any, str]],
) -> Dict[str, Any]:
    """The outputs to the sink (its job computes them) and, with a history writer, the same
    results to the archive, before the commit: a batch that fails after emitting is emitted and
    archived again by its replay. Returns the observed counts."""
    release: List[DataFrame] = []
    try:
        outputs, observation, results = batch_outputs(
            spark, ctx.params, ctx.state, ch, own, sym_trig, rejected, batch_key, release,
            keep_results=ctx.history is not None,
        )  # fmt: skip
        ctx.sink(outputs, batch_id)
        counts = _observed(observation, outputs)
        if ctx.history is not None and results is not None:
            ctx.history.write(archive_frames(results), batch_id, batch_key)
    finally:
        for df in release:
            df.unpersist(blocking=True)
    return counts


def _commit(
    st: StateStore, batch_id: int, ch: BatchChanges, commit_extra: Optional[Dict[str, Any]]
) -> None:
    """Durable state: the change log, then the commit marker; then the session's state."""
    st.write_log(batch_id, ch)
    st.commit(batch_id, commit_extra)
    st.applied(batch_id, ch)


def _stats(
    batch_id: int,
    parsed: _Parsed,
    rejected: List[Tuple[Any, str]],
    applied: _Applied,
    counts: Dict[str, Any],
) -> BatchStats:
    rejected_by_reason: Dict[str, int] = {}
    rejected_by_topic: Dict[str, int] = {}
    for r, reason in rejected:
        rejected_by_reason[reason] = rejected_by_reason.get(reason, 0) + 1
        rejected_by_topic[r["topic"]] = rejected_by_topic.get(r["topic"], 0) + 1
    accepted = {
        t: n - rejected_by_topic.get(t, 0)
        for t, n in parsed.per_topic.items()
        if t in parse.TOPIC_FIELDS
    }
    dupes = accepted.get(names.TOPIC_FILLS, 0) + accepted.get(names.TOPIC_CASH, 0)
    dupes -= len(applied.fills) + len(applied.cash)
    n_acc = int(counts.get("accounts") or 0)
    return BatchStats(
        batch_id=batch_id,
        input_records=parsed.count,
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
