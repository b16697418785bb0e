"""The micro-batch's outputs: margin and stress of every affected account, as the sink's records.

A batch's outputs are one Spark plan, evaluated by the sink's action (plus the broadcast of the
symbol prices it joins). It is built in named stages.

Driver bookkeeping (proportional to the batch, not to the book):

- ``affected``: the book after the batch (the changes since the base plus this batch's), the
  accounts with fills or cash, the changed symbols, and the accounts holding those only since the
  base (the book scan cannot find them);
- ``recent_symbols`` and ``symbol_rows``: the symbols changed since the cached symbol table was
  built, as rows; a changed symbol's trigger travels as its rank among the batch's triggers (an
  integer the per-account aggregation takes the greatest of), the triggers themselves as a
  literal array the results look the rank up in;
- ``change_rows``: the changes since the base, one row per (account, symbol) moved and one per
  account whose cash or own time moved; an account with fills or cash in this batch carries on
  that row the index of its newest own input in a literal array.

DataFrame -> DataFrame stages (one plan, one job):

- ``symbol_prices``: the cached symbol table less the recent symbols, plus those;
- ``book_rows``: one scan of the cached book for the affected accounts, a row per position;
- ``by_account``: those rows and the changes, exchanged once by account, so the netting and the
  per-account aggregation need no other exchange;
- ``net_positions``: the net position per (account, symbol);
- ``price_positions``: priced from the symbol prices (a broadcast join), with the house rates in
  force and the kernel's per-position terms;
- ``account_results``: one per-account hash aggregation (every buffer a number) and the kernel's
  finish, for the affected accounts only;
- ``with_inputs``: the newest input behind each result, its timestamp, correlation id and counts;
- ``records``: a margin.calc.v1 and a stress.beta_spy.v1 record per account (``archive_frames``:
  the same results in the margin history's columns).

Every stage's column expressions are built once per session (``functools.lru_cache``): building an
expression costs a Py4J round trip per node, and every batch uses the same ones.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from emr_jobs import calc
from emr_jobs.book import BatchChanges, DriverBook, SymbolFacts
from emr_jobs.frames import literal_array, local_frame, struct_type
from emr_jobs.history import archive_columns
from emr_jobs.state import CASH_TYPE, QUANTITY_TYPE, SYMBOL_FIELDS, StateStore
from margin_risk import archive, names
from margin_risk.params import MarginParams

ZERO = Decimal(0)
# (records for the sink, the observation counting them, the per-account results or None)
Outputs = Tuple[DataFrame, Optional[Observation], Optional[DataFrame]]


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


@dataclass
class Trigger:
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


def trigger(r: Any) -> Trigger:
    """The trigger of a parsed record."""
    return Trigger(
        int(r["event_us"]),
        r["topic"],
        int(r["partition"]),
        int(r["offset"]),
        int(r["kafka_us"]),
        r["symbol"],
        r["account_id"],
        r["correlation_id"],
    )


def newest(rows: List[Any]) -> Trigger:
    return max((trigger(r) for r in rows), key=Trigger.key)


def batch_outputs(
    spark: SparkSession,
    p: MarginParams,
    st: StateStore,
    ch: BatchChanges,
    own: Dict[str, List[Any]],
    sym_trig: Dict[str, Trigger],
    rejected: List[Tuple[Any, str]],
    batch_key: str,
    release: List[DataFrame],
    keep_results: bool = False,
) -> Outputs:
    """The batch's output records (results of every affected account, then the rejected
    records), the observation that counts them while the sink writes them, and with
    ``keep_results`` the per-account results, persisted for the sink's job to fill (added to
    ``release``). ``own``: each account's fills and cash; ``sym_trig``: each changed symbol's
    newest input."""
    rejected_df = rejected_records(spark, rejected)
    if not own and not sym_trig:  # nothing to recalculate
        return rejected_df, None, None
    d = st.driver
    house = house_mode({**d.symbols, **ch.symbols})
    af = affected(d, ch, own, sym_trig)
    recent = recent_symbols(st, ch)
    sym_rows, triggers = symbol_rows(d, ch, recent, sym_trig)
    moved, owned = change_rows(af, own)
    assert st.symbol_table is not None and st.book is not None
    symbols = symbol_prices(spark, st.symbol_table, recent, sym_rows)
    changes = local_frame(spark, _CHANGE_FIELDS, moved)
    rows = by_account(book_rows(st.book, af), changes, _shuffle_partitions(spark))
    priced = price_positions(net_positions(rows), symbols, p, house)
    margin = account_results(priced, p)
    results, observation = observed(with_inputs(margin, owned, triggers, batch_key))
    if keep_results:
        results = results.persist(StorageLevel.MEMORY_AND_DISK)
        release.append(results)
    return records(results).unionByName(rejected_df), observation, results


# --- driver bookkeeping --------------------------------------------------------------------------
@dataclass
class Affected:
    """Who the batch recalculates, and the book after it."""

    after: DriverBook  # the changes since the base, this batch's included
    forced: List[str]  # accounts with fills or cash in the batch
    changed: List[str]  # symbols whose effective price, beta or house entry in force changed
    delta_holders: List[str]  # other accounts holding a changed symbol only since the base


def affected(
    d: DriverBook, ch: BatchChanges, own: Dict[str, List[Any]], sym_trig: Dict[str, Trigger]
) -> Affected:
    after = type(d)(positions=dict(d.positions), cash=dict(d.cash), own_ts=dict(d.own_ts))
    for k, q in ch.positions.items():
        after.positions[k] = after.positions.get(k, ZERO) + q
    for a, c in ch.cash.items():
        after.cash[a] = after.cash.get(a, ZERO) + c
    for a, t in ch.own_ts.items():
        after.own_ts[a] = max(t, after.own_ts.get(a, t))
    forced = sorted(own)
    delta_holders = sorted({a for (a, s) in after.positions if s in sym_trig} - set(forced))
    return Affected(after, forced, sorted(sym_trig), delta_holders)


def recent_symbols(st: StateStore, ch: BatchChanges) -> List[str]:
    """The symbols changed since the cached symbol table was built, this batch's included; once
    they are many, the table is rebuilt first (then only this batch's are recent)."""
    d = st.driver
    recent = sorted(d.symbols_since_table | set(ch.symbols))
    if len(recent) > 0 and len(d.symbols_since_table) >= _symbol_table_refresh():
        st.refresh_symbol_table()
        recent = sorted(ch.symbols)
    return recent


def symbol_rows(
    d: DriverBook, ch: BatchChanges, recent: List[str], sym_trig: Dict[str, Trigger]
) -> Tuple[List[Tuple[Any, ...]], List[Dict[str, Any]]]:
    """The recent symbols' rows (``_SYMBOL_FIELDS``), and the batch's triggers in rank order."""
    ranked = sorted(sym_trig, key=lambda s: sym_trig[s].key())
    rank = {s: i for i, s in enumerate(ranked)}
    rows = []
    for s in recent:
        f = ch.symbols.get(s) or d.symbols[s]
        price, beta = f.effective()
        trig = sym_trig.get(s)
        rows.append(
            (s, price, beta, f.changed_ts, *f.house_columns(), trig is not None, rank.get(s),
             trig.account_id if trig else None)
        )  # fmt: skip
    return rows, [_trigger_doc(sym_trig[s]) for s in ranked]


def change_rows(
    af: Affected, own: Dict[str, List[Any]]
) -> Tuple[List[Tuple[Any, ...]], List[Dict[str, Any]]]:
    """The changes since the base as rows (``_CHANGE_FIELDS``), and each forced account's
    newest own input with its count, in the order the rows' ``own_idx`` points into."""
    owned: List[Dict[str, Any]] = []
    own_index: Dict[str, int] = {}
    for a in af.forced:
        own_index[a] = len(owned)
        n = newest(own[a])
        owned.append({**_trigger_doc(n), "correlation_id": n.correlation_id, "count": len(own[a])})
    after = af.after
    rows: List[Tuple[Any, ...]] = [
        (a, s, q, None, None, None) for (a, s), q in after.positions.items()
    ]
    for a in set(after.cash) | set(after.own_ts):
        rows.append((a, None, None, after.cash.get(a), after.own_ts.get(a), own_index.get(a)))
    return rows, owned


# How a batch applies house entries: none anywhere (the kernel's plain rule); every holder's
# entry is the one in force at its symbol's change time; some entry is dated after that.
HOUSE_NONE, HOUSE_AT_CHANGE, HOUSE_AHEAD = 0, 1, 2


def house_mode(symbols: Dict[str, SymbolFacts]) -> int:
    """The ``HOUSE_*`` mode of a batch whose symbols' facts are ``symbols``."""
    mode = HOUSE_NONE
    for f in symbols.values():
        if f.house:
            if f.house_ahead():
                return HOUSE_AHEAD
            mode = HOUSE_AT_CHANGE
    return mode


# --- DataFrame -> DataFrame stages ---------------------------------------------------------------
def symbol_prices(
    spark: SparkSession, table: DataFrame, recent: List[str], rows: List[Tuple[Any, ...]]
) -> DataFrame:
    """Every symbol's row (``_SYMBOL_FIELDS``): the cached ``table`` less the ``recent`` symbols
    (a literal list filtered in its scan, no join), plus their ``rows``."""
    if recent:
        table = table.where(F.expr(f"NOT symbol IN ({_sql_strings(recent)})"))
    return table.select(*_table_as_symbols()).unionByName(local_frame(spark, _SYMBOL_FIELDS, rows))


def book_rows(book: DataFrame, af: Affected) -> DataFrame:
    """One scan of the cached book: the accounts with fills or cash and every holder of a changed
    symbol, a row per position (an account's first row carries its cash and time)."""
    # The literals go to the JVM as one SQL text, not one call per value.
    conds = []
    if af.forced or af.delta_holders:
        conds.append(f"account_id IN ({_sql_strings(af.forced + af.delta_holders)})")
    if af.changed:
        conds.append(f"arrays_overlap(positions.symbol, array({_sql_strings(af.changed)}))")
    explode, rows = _book_columns()
    return book.where(F.expr(" OR ".join(conds))).select(*explode).select(*rows)


def by_account(scan: DataFrame, changes: DataFrame, partitions: int) -> DataFrame:
    """The book's rows and the changes since the base, every row of an account in one partition:
    the netting by (account, symbol) and the per-account aggregation then need no exchange."""
    return scan.unionByName(changes).repartition(partitions, "account_id")


def net_positions(rows: DataFrame) -> DataFrame:
    """Per (account, symbol): the net position (a row without a symbol carries only cash and
    time, and for an account with fills or cash its newest own input: one such row per
    account)."""
    return rows.groupBy("account_id", "symbol").agg(*_netting_columns())


def price_positions(
    netted: DataFrame, symbols: DataFrame, p: MarginParams, house: int
) -> DataFrame:
    """The net positions priced from ``symbols``, with the house rates in force (``house``: a
    ``HOUSE_*`` mode) and every evaluation's position terms."""
    joined = netted.join(symbols, "symbol", "left")
    rates = _house_columns(house)
    if rates:
        joined = joined.select("*", *rates)
    return joined.select("*", *calc.kernel_row_columns(p, house != HOUSE_NONE))


def account_results(priced: DataFrame, p: MarginParams) -> DataFrame:
    """Margin and stress of each affected account (one with fills or cash, or holding a changed
    symbol), with its time, trigger rank, own-input index and counts."""
    per_account = priced.groupBy("account_id").agg(*_per_account_columns(p))
    return calc.kernel_finish(per_account.where(_affected()), p, priced.where(_held_now()))


def with_inputs(
    margin: DataFrame, owned: List[Dict[str, Any]], triggers: List[Dict[str, Any]], batch_key: str
) -> DataFrame:
    """Each result with the inputs behind it: its own newest input (``owned``) and its changed
    symbols' newest (``triggers``) looked up by index, then the result's columns and the batch's
    key (its event ids' salt)."""
    looked_up = margin.select(
        "*",
        F.element_at(literal_array(owned, _OWN_TYPE), F.col("own_idx") + 1).alias("own"),
        F.element_at(literal_array(triggers, _TRIGGER_TYPE), F.col("t_rank") + 1).alias(
            "sym_newest"
        ),
    )
    newest_col, columns = _result_columns()
    return looked_up.select("*", newest_col).select(*columns, F.lit(batch_key).alias("batch_key"))


def observed(results: DataFrame) -> Tuple[DataFrame, Observation]:
    """``results`` counted (accounts, positions) by whichever action evaluates them."""
    observation = Observation(f"margin-batch-{time.monotonic_ns()}")
    counts = [F.count(F.lit(1)).alias("accounts"), F.sum("_positions").alias("positions")]
    return results.observe(observation, *counts), observation


def records(results: DataFrame) -> DataFrame:
    """Two sink records per result: margin.calc.v1 and stress.beta_spy.v1."""
    return results.select(_record_column()).select("r.*")


def rejected_records(spark: SparkSession, rejected: List[Tuple[Any, str]]) -> DataFrame:
    """A rejected.v1 sink record per (record, reason)."""
    return local_frame(spark, _OUTPUT_FIELDS, [_rejected_record(r, why) for r, why in rejected])


def archive_frames(results: DataFrame) -> Dict[str, DataFrame]:
    """Each archive kind's rows of the per-account results, as the sink's records carry them."""
    return {kind: results.select(*cols) for kind, cols in _archive_columns().items()}


# --- the stages' column expressions, built once --------------------------------------------------
@lru_cache(maxsize=1)
def _table_as_symbols() -> List[Column]:
    return [
        F.col("*"),
        F.lit(False).alias("changed"),
        F.lit(None).cast("int").alias("t_rank"),
        F.lit(None).cast("string").alias("t_account"),
    ]


@lru_cache(maxsize=1)
def _book_columns() -> Tuple[List[Column], List[Column]]:
    explode = [
        F.col("account_id"),
        F.posexplode_outer("positions").alias("i", "p"),
        F.col("cash"),
        F.col("last_ts"),
    ]
    first_row = F.col("i").isNull() | (F.col("i") == 0)  # carries the account's cash and time
    rows = [
        F.col("account_id"),
        F.col("p.symbol").alias("symbol"),
        F.col("p.quantity").alias("quantity"),
        F.when(first_row, F.col("cash")).alias("cash"),
        F.when(first_row, F.col("last_ts")).alias("last_ts"),
        F.lit(None).cast("int").alias("own_idx"),
    ]
    return explode, rows


@lru_cache(maxsize=1)
def _netting_columns() -> List[Column]:
    return [
        F.sum("quantity").cast(QUANTITY_TYPE).alias("quantity"),
        F.sum("cash").cast(CASH_TYPE).alias("cash"),
        F.max("last_ts").alias("last_ts"),
        F.max("own_idx").alias("own_idx"),
    ]


@lru_cache(maxsize=1)
def _held_now() -> Column:
    return F.col("symbol").isNotNull() & F.col("quantity").isNotNull() & (F.col("quantity") != 0)


@lru_cache(maxsize=1)
def _calc_ts() -> Column:
    """The account's calculation time (its result's timestamp before its own inputs), an
    aggregate over its rows."""
    return F.max(F.greatest(F.col("last_ts"), F.when(_held_now(), F.col("changed_ts"))))


@lru_cache(maxsize=4)
def _house_columns(house: int) -> List[Column]:
    """The position rows' house rates in force at their account's calculation time, as
    ``calc.HOUSE_COLUMNS`` (none in ``HOUSE_NONE``).

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
        at = _calc_ts().over(Window.partitionBy("account_id"))
        entry = calc.house_in_force(F.col("h_entries"), at)
        ahead = F.col("h_entries").isNotNull()
        rates = [F.when(ahead, entry[k]).otherwise(F.col(c)) for c, k in pairs]
    return [rates[i].alias(n) for i, n in enumerate(calc.HOUSE_COLUMNS)]


@lru_cache(maxsize=4)
def _per_account_columns(p: MarginParams) -> List[Column]:
    """Every aggregation buffer is a number, so the aggregation is a hash aggregation."""
    held_now = _held_now()
    held_changed = held_now & F.col("changed")
    other_account = F.col("t_account").isNull() | (F.col("t_account") != F.col("account_id"))
    return [
        F.sum("cash").cast(CASH_TYPE).alias("cash"),
        _calc_ts().alias("ts_us"),
        F.max(F.when(held_changed, F.col("t_rank"))).alias("t_rank"),
        # A changed symbol counts as an input unless a fill of this account changed it.
        F.sum(F.when(held_changed & other_account, 1).otherwise(0)).alias("sym_inputs"),
        F.max(F.when(held_changed, True)).alias("holds_changed"),
        F.sum(F.when(held_now, 1).otherwise(0)).alias("_positions"),
        F.max("own_idx").alias("own_idx"),
        *calc.kernel_aggregates(held_now, p),
    ]


@lru_cache(maxsize=1)
def _affected() -> Column:
    return F.col("own_idx").isNotNull() | F.col("holds_changed")


@lru_cache(maxsize=1)
def _result_columns() -> Tuple[Column, List[Column]]:
    """The newest input behind a result (its own, or its changed symbols'), then the result's
    columns: figures, time, origin, correlation id and input count."""
    own_newest = F.struct(*[F.col(f"own.{c}").alias(c) for c, _ in _TRIGGER_FIELDS])
    sym_newest = F.struct(*[F.col(f"sym_newest.{c}").alias(c) for c, _ in _TRIGGER_FIELDS])
    newest_col = (
        F.when(F.col("own").isNull(), sym_newest)
        .when(F.col("sym_newest").isNull(), own_newest)
        .otherwise(F.greatest(own_newest, sym_newest))
    )
    columns = [
        *[F.col(c) for c in ("account_id", "m", "scenarios_full", "worst_scenario")],
        *[F.col(c) for c in ("worst_deficiency", "_positions")],
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
    return newest_col.alias("newest"), columns


@lru_cache(maxsize=1)
def _record_column() -> Column:
    """Each result's two sink records (topic, key, JSON value, headers), exploded."""
    tail = ["correlation_id", "origin_ts", "input_count"]
    margin_fields = [F.col("m")[c].alias(c) for c in calc.MARGIN_COLUMNS]
    stress_fields = [
        calc.public_scenarios(F.col("scenarios_full")).alias("scenarios"),
        F.col("worst_scenario"),
        F.col("worst_deficiency"),
    ]
    headers = F.array(
        *[
            F.struct(F.lit(k).alias("key"), F.encode(F.col(c), "UTF-8").alias("value"))
            for k, c in ((names.HEADER_CORRELATION_ID, "correlation_id"),
                         (names.HEADER_ORIGIN_TS, "origin_ts"))
        ]
    )  # fmt: skip

    def result(topic: str, fields: List[Column]) -> Column:
        value = F.to_json(
            F.struct(_event_id(topic).alias("event_id"), "account_id", "timestamp", *fields, *tail)
        )
        return F.struct(
            F.lit(topic).alias("topic"),
            F.col("account_id").alias("key"),
            value.alias("value"),
            headers.alias("headers"),
        )

    both = [
        result(names.TOPIC_MARGIN_CALC, margin_fields),
        result(names.TOPIC_STRESS, stress_fields),
    ]
    return F.explode(F.array(*both)).alias("r")


def _event_id(topic: str) -> Column:
    """A result's id: the same for the same account, topic and batch records (a replay; the
    rows carry their batch's key)."""
    key = F.concat_ws("|", F.lit(topic), F.col("account_id"), F.col("batch_key"))
    return F.substring(F.sha2(key, 256), 1, 32)


@lru_cache(maxsize=1)
def _archive_columns() -> Dict[str, List[Column]]:
    """Each archive kind's columns of the per-account results."""
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


# --- helpers -------------------------------------------------------------------------------------
def _shuffle_partitions(spark: SparkSession) -> int:
    return int(spark.conf.get("spark.sql.shuffle.partitions") or 2)


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


def _trigger_doc(t: Trigger) -> Dict[str, Any]:
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
