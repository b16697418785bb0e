"""The job's durable state: a base snapshot, a change log per micro-batch, commit markers.

Layout under ``state_dir`` (a local path or ``s3://`` URI; all I/O goes through Hadoop's
FileSystem, so the same code runs on EMR Serverless):

    bases/<b>/book/              parquet, one row per account: cash, last_ts, positions array
    bases/<b>/symbols.json       every symbol's facts as of batch <b>
    bases/<b>/_BASE.json         the base's marker (its seen manifest), written last
    seen/v=<b>/hour=<h>/         applied fill/cash ids of event hour <h>, as of base <b>
    logs/<n>.json                batch <n>'s change log: position/cash/symbol deltas, applied ids
    commits/<n>.json             batch <n>'s commit marker, written after its change log
    plans/<n>.json               the local driver's planned offsets (its stand-in offset log)

A batch writes only its change log and its marker, so its durable write is proportional to the
fills, cash and symbol facts it applied, not to the book. Every ``compact_every`` batches (or
when the changes since the base pass ``compact_delta_rows``) a compaction writes a new base
snapshot (the book, the symbols, and a new version of each event hour whose ids changed) and its
marker last; older logs, bases and seen versions are then deleted.

Recovery is the newest marked base plus the change logs of the committed batches after it. A
crash anywhere (in a change log, between it and the marker, inside a compaction) leaves either a
committed batch or an uncommitted one; an uncommitted batch is replayed from the last committed
state with the same records, so a fill is neither lost nor applied twice.

The session keeps the state between batches: the base book, the base's applied ids and a table
of every symbol's effective price as cached DataFrames, and what changed since the base in the
driver (``emr_jobs.book.DriverBook``). Only those current frames stay cached: a compaction or a
recovery releases the frames it replaces.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from emr_jobs.book import BatchChanges, DriverBook, Horizon, SymbolFacts
from emr_jobs.calc import HOUSE_ENTRIES_TYPE, RATE_TYPE
from emr_jobs.frames import ddl, local_frame

KEEP_COMMITTED = 3
COMPACT_EVERY = 100
COMPACT_DELTA_ROWS = 50_000
# The symbol table is rebuilt once this many symbols changed since it was cached (each batch
# sends the changed ones as a small frame next to it).
SYMBOL_TABLE_REFRESH = 512

# Exact column types (sized from margin_risk.params: quantities to 4 places below 1e12 per fill,
# prices and amounts to 4 places below 1e15; a fill moves cash by quantity x price, 8 places).
QUANTITY_TYPE = "decimal(24,4)"
PRICE_TYPE = "decimal(19,4)"
BETA_TYPE = "decimal(6,4)"
CASH_TYPE = "decimal(38,8)"
POSITION = f"struct<symbol:string,quantity:{QUANTITY_TYPE}>"
# last_ts: epoch microseconds of the account's newest own input (see emr_jobs.book)
BOOK_FIELDS = (
    ("account_id", "string"),
    ("cash", CASH_TYPE),
    ("last_ts", "long"),
    ("positions", f"array<{POSITION}>"),
)
BOOK_SCHEMA = ddl(BOOK_FIELDS)
DELTA_FIELDS = (
    ("account_id", "string"),
    ("symbol", "string"),
    ("quantity", QUANTITY_TYPE),
    ("cash", CASH_TYPE),
    ("last_ts", "long"),
)
# h_*: the house entry in force at changed_ts; h_entries: every entry, only when one is dated
# after changed_ts (see emr_jobs.book.SymbolFacts.house_columns).
SYMBOL_FIELDS = (
    ("symbol", "string"),
    ("price", PRICE_TYPE),
    ("beta", BETA_TYPE),
    ("changed_ts", "long"),
    ("h_long", RATE_TYPE),
    ("h_short", RATE_TYPE),
    ("h_nm", "boolean"),
    ("h_entries", HOUSE_ENTRIES_TYPE),
)
SEEN_SCHEMA = "kind string, id string, v long, hour long"
SEEN_ID_FIELDS = (("kind", "string"), ("id", "string"), ("hour", "long"))


class StateStore:
    """The durable state and its in-session form (see module docstring)."""

    def __init__(
        self,
        spark: SparkSession,
        state_dir: str,
        compact_every: int = COMPACT_EVERY,
        compact_delta_rows: int = COMPACT_DELTA_ROWS,
    ) -> None:
        self.spark = spark
        self.root = state_dir.rstrip("/")
        self.compact_every = compact_every
        self.compact_delta_rows = compact_delta_rows
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.driver = DriverBook()
        self.base_id: Optional[int] = None
        self.seen_hours: Dict[int, int] = {}  # event hour -> base id of its version
        self.book: Optional[DataFrame] = None
        self.seen: Optional[DataFrame] = None
        self.symbol_table: Optional[DataFrame] = None
        self._loaded_upto: Optional[int] = -1  # -1: nothing loaded yet (None: empty state)
        self.bytes_written = 0  # durable bytes written through this store (change logs, markers)

    # --- Hadoop FileSystem helpers -------------------------------------------------------------
    def _path(self, rel: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(f"{self.root}/{rel}")

    def _fs(self, path: Any) -> Any:
        return path.getFileSystem(self._conf)

    def _write_text(self, rel: str, text: str) -> None:
        """Write via a temporary file and a rename, so a reader never sees half a file (on S3
        the object appears whole at close, and the rename is a copy)."""
        data = text.encode("utf-8")
        final = self._path(rel)
        tmp = self._path(rel + ".tmp")
        fs = self._fs(final)
        out = fs.create(tmp, True)
        self._write_bytes(out, data)
        out.close()
        if fs.exists(final):
            fs.delete(final, False)
        fs.rename(tmp, final)
        self.bytes_written += len(data)

    @staticmethod
    def _write_bytes(out: Any, data: bytes) -> None:
        out.write(bytearray(data))

    def _read_text(self, rel: str) -> str:
        path = self._path(rel)
        fs = self._fs(path)
        stream = fs.open(path)
        try:
            buf = self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
        finally:
            stream.close()
        return bytes(buf).decode("utf-8")

    def _read_json(self, rel: str) -> Optional[Dict[str, Any]]:
        """A marker's content, or None when it is missing or torn. Markers are written through a
        rename (or as one S3 object), so a torn one means a file system without atomic writes:
        it counts as never written."""
        if not self._exists(rel):
            return None
        try:
            out: Dict[str, Any] = json.loads(self._read_text(rel))
        except ValueError:
            return None
        return out

    def _list(self, rel: str) -> List[str]:
        path = self._path(rel)
        fs = self._fs(path)
        if not fs.exists(path):
            return []
        return [s.getPath().getName() for s in fs.listStatus(path)]

    def _exists(self, rel: str) -> bool:
        path = self._path(rel)
        return bool(self._fs(path).exists(path))

    def _delete(self, rel: str) -> None:
        path = self._path(rel)
        fs = self._fs(path)
        if fs.exists(path):
            fs.delete(path, True)

    @staticmethod
    def _ids(names: List[str], suffix: str = ".json") -> List[int]:
        out = []
        for name in names:
            stem = name[: -len(suffix)] if suffix and name.endswith(suffix) else name
            if (not suffix or name.endswith(suffix)) and stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    # --- commits --------------------------------------------------------------------------------
    def committed_ids(self) -> List[int]:
        return self._ids(self._list("commits"))

    def last_committed(self, below: Optional[int] = None) -> Optional[int]:
        for i in reversed(self.committed_ids()):
            if (below is None or i < below) and self.is_committed(i):
                return i
        return None

    def is_committed(self, batch_id: int) -> bool:
        return self._read_json(f"commits/{batch_id}.json") is not None

    def commit_info(self, batch_id: int) -> Dict[str, Any]:
        info = self._read_json(f"commits/{batch_id}.json")
        if info is None:
            raise RuntimeError(f"{self.root}: batch {batch_id} is not committed")
        return info

    def write_log(self, batch_id: int, changes: BatchChanges) -> None:
        """The batch's change log; it counts only once the commit marker follows it."""
        body = {"batch_id": batch_id, **changes.to_json()}
        self._write_text(f"logs/{batch_id}.json", json.dumps(body, sort_keys=True))

    def commit(self, batch_id: int, extra: Optional[Dict[str, Any]] = None) -> None:
        """The marker that makes batch <batch_id>'s change log part of the state."""
        body = {"batch_id": batch_id, "base": self.base_id, **(extra or {})}
        self._write_text(f"commits/{batch_id}.json", json.dumps(body, sort_keys=True))

    def applied(self, batch_id: int, changes: BatchChanges) -> None:
        """Apply a committed batch's changes to the in-session state."""
        self.driver.apply(changes)
        self._loaded_upto = batch_id

    # --- plans (the local driver's offset log) -------------------------------------------------
    def write_plan(self, batch_id: int, plan: Dict[str, Any]) -> None:
        self._write_text(f"plans/{batch_id}.json", json.dumps(plan, sort_keys=True))

    def read_plan(self, batch_id: int) -> Optional[Dict[str, Any]]:
        if not self._exists(f"plans/{batch_id}.json"):
            return None
        plan: Dict[str, Any] = json.loads(self._read_text(f"plans/{batch_id}.json"))
        return plan

    def prune_plans(self, upto: int) -> None:
        for i in self._ids(self._list("plans")):
            if i < upto:
                self._delete(f"plans/{i}.json")

    # --- the in-session state -------------------------------------------------------------------
    def ensure_current(self) -> None:
        """Make the session's state that of the last committed batch: on the first batch, after
        a restart, or when a batch failed after its marker (the change is then read back).

        Once loaded, the session is current unless a marker past its last batch appeared (a
        batch that failed after writing it): one look, not a listing of every marker."""
        known = self._loaded_upto
        if known is not None and known >= 0 and not self._exists(f"commits/{known + 1}.json"):
            return
        last = self.last_committed()
        if last != self._loaded_upto:
            self.recover(last)

    def recover(self, last: Optional[int]) -> None:
        """The newest marked base at or below ``last``, then the change logs after it."""
        bases = [b for b in self._marked_bases() if last is not None and b <= last]
        base = bases[-1] if bases else None
        self.driver = DriverBook()
        self.seen_hours = {}
        if base is not None:
            marker = self._read_json(f"bases/{base}/_BASE.json")
            assert marker is not None
            self.seen_hours = {int(h): int(v) for h, v in marker["seen_hours"].items()}
            self.driver.horizon = Horizon(marker.get("cutoff"), marker.get("max_arrival_hour"))
            raw = json.loads(self._read_text(f"bases/{base}/symbols.json"))
            self.driver.symbols = {s: SymbolFacts.from_json(f) for s, f in raw.items()}
        self.base_id = base
        self._set_frames(self._read_book(base), self._read_seen())
        self.refresh_symbol_table()
        for i in self.committed_ids():
            if (base is None or i > base) and last is not None and i <= last:
                raw = json.loads(self._read_text(f"logs/{i}.json"))
                self.driver.apply(BatchChanges.from_json(raw))
        self._loaded_upto = last

    def _marked_bases(self) -> List[int]:
        bases = self._ids(self._list("bases"), "")
        return [b for b in bases if self._read_json(f"bases/{b}/_BASE.json") is not None]

    def _read_book(self, base: Optional[int]) -> DataFrame:
        if base is None:
            return local_frame(self.spark, BOOK_FIELDS, [])
        return self.spark.read.schema(BOOK_SCHEMA).parquet(f"{self.root}/bases/{base}/book")

    def _read_seen(self) -> Optional[DataFrame]:
        hours = {h: v for h, v in self.seen_hours.items() if self.driver.horizon.remembers(h)}
        if not hours:
            return None
        paths = [f"{self.root}/seen/v={v}/hour={h}" for h, v in sorted(hours.items())]
        df = self.spark.read.schema(SEEN_SCHEMA).option("basePath", f"{self.root}/seen")
        return df.parquet(*paths).select("kind", "id", "hour")

    def _set_frames(self, book: DataFrame, seen: Optional[DataFrame]) -> None:
        """Cache the new base frames (materialised now, not in the next batch), then release the
        ones they replace."""
        old = [self.book, self.seen]
        self.book = _cached(book)
        self.seen = _cached(seen) if seen is not None else None
        for df in old:
            if df is not None:
                df.unpersist(blocking=True)

    def refresh_symbol_table(self) -> None:
        """Cache every symbol's effective price, beta, change time and house columns as one
        small table."""
        rows = []
        for s, f in self.driver.symbols.items():
            price, beta = f.effective()
            rows.append((s, price, beta, f.changed_ts, *f.house_columns()))
        old = self.symbol_table
        self.symbol_table = _cached(local_frame(self.spark, SYMBOL_FIELDS, rows))
        self.driver.symbols_since_table = set()
        if old is not None:
            old.unpersist(blocking=True)

    def cached_frames(self) -> List[DataFrame]:
        return [df for df in (self.book, self.seen, self.symbol_table) if df is not None]

    def release(self) -> None:
        """Unpersist the session's frames (the job is stopping)."""
        for df in self.cached_frames():
            df.unpersist(blocking=True)
        self.book = self.seen = self.symbol_table = None
        self._loaded_upto = -1

    def seen_ids(self, kind_ids: List[Tuple[str, str]]) -> Dict[Tuple[str, str], int]:
        """(kind, id) -> event hour of the given ids applied before the base (one small job)."""
        if self.seen is None or not kind_ids:
            return {}
        ids = sorted({i for _, i in kind_ids})
        rows = self.seen.where(F.col("id").isin(ids)).collect()
        return {(r["kind"], r["id"]): int(r["hour"]) for r in rows}

    # --- compaction ------------------------------------------------------------------------------
    def due_for_compaction(self) -> bool:
        d = self.driver
        return (
            d.batches_since_base >= self.compact_every or d.delta_rows() >= self.compact_delta_rows
        )

    def compact(self, batch_id: int) -> None:
        """Write base <batch_id> (the state after committed batch <batch_id>), marker last, then
        switch the session to it and delete what it supersedes."""
        d = self.driver
        book = current_book(self.spark, self.book, d)
        book.write.mode("overwrite").parquet(f"{self.root}/bases/{batch_id}/book")
        symbols = {s: f.to_json() for s, f in sorted(d.symbols.items())}
        self._write_text(f"bases/{batch_id}/symbols.json", json.dumps(symbols, sort_keys=True))
        touched = sorted({h for h in d.seen.values() if d.horizon.remembers(h)})
        if touched:
            new_ids = self.spark.createDataFrame(
                [(k, i, h) for (k, i), h in d.seen.items() if h in touched],
                "kind string, id string, hour long",
            )
            old = self._read_seen()
            if old is not None:
                new_ids = old.where(F.col("hour").isin(touched)).unionByName(new_ids)
            self._delete(f"seen/v={batch_id}")
            new_ids.write.partitionBy("hour").parquet(f"{self.root}/seen/v={batch_id}")
        hours = {
            h: v
            for h, v in {**self.seen_hours, **{h: batch_id for h in touched}}.items()
            if d.horizon.remembers(h)
        }
        marker = {
            "batch_id": batch_id,
            "seen_hours": {str(h): v for h, v in sorted(hours.items())},
            "cutoff": d.horizon.cutoff,
            "max_arrival_hour": d.horizon.max_arrival_hour,
        }
        self._write_text(f"bases/{batch_id}/_BASE.json", json.dumps(marker, sort_keys=True))
        # The session now runs on the new base.
        self.base_id = batch_id
        self.seen_hours = hours
        self.driver = DriverBook(
            symbols=d.symbols, horizon=d.horizon, symbols_since_table=d.symbols_since_table
        )
        self._set_frames(self._read_book(batch_id), self._read_seen())
        self._prune(batch_id)

    def seed(self, book: DataFrame, symbols: Dict[str, SymbolFacts]) -> None:
        """Start an empty state directory from a book built elsewhere (a migration, or the
        benchmark's generated books): base 0 and the commit of batch 0."""
        if self.committed_ids():
            raise RuntimeError(f"{self.root}: already has committed batches")
        book.write.mode("overwrite").parquet(f"{self.root}/bases/0/book")
        raw = {s: f.to_json() for s, f in sorted(symbols.items())}
        self._write_text("bases/0/symbols.json", json.dumps(raw, sort_keys=True))
        self._write_text("bases/0/_BASE.json", json.dumps({"batch_id": 0, "seen_hours": {}}))
        self._write_text("commits/0.json", json.dumps({"batch_id": 0, "base": 0}))
        self.recover(0)

    def _prune(self, base: int) -> None:
        """Delete what base <base> supersedes: older bases, logs, markers and seen versions."""
        for b in self._ids(self._list("bases"), ""):
            if b != base:
                self._delete(f"bases/{b}")
        for i in self._ids(self._list("logs")):
            if i <= base:
                self._delete(f"logs/{i}.json")
        for i in self.committed_ids()[:-KEEP_COMMITTED]:
            if i <= base:
                self._delete(f"commits/{i}.json")
        live = set(self.seen_hours.values())
        for name in self._list("seen"):
            if name.startswith("v=") and name[2:].isdigit() and int(name[2:]) not in live:
                self._delete(f"seen/{name}")


def _cached(df: DataFrame) -> DataFrame:
    df = df.cache()
    df.count()
    return df


def delta_frame(spark: SparkSession, d: DriverBook) -> DataFrame:
    """The changes since the base as rows of ``DELTA_FIELDS``: one per (account, symbol) moved,
    and one per account whose cash or own event time moved (symbol null)."""
    rows: List[Tuple[Any, ...]] = [(a, s, q, None, None) for (a, s), q in d.positions.items()]
    for a in set(d.cash) | set(d.own_ts):
        rows.append((a, None, None, d.cash.get(a), d.own_ts.get(a)))
    return local_frame(spark, DELTA_FIELDS, rows)


def current_book(spark: SparkSession, base: Optional[DataFrame], d: DriverBook) -> DataFrame:
    """The whole book after the changes since the base, in the base's layout (compaction)."""
    assert base is not None
    exploded = base.select(
        "account_id",
        F.explode_outer("positions").alias("p"),
        F.col("cash"),
        F.col("last_ts"),
    )
    rows = (
        base.select(
            "account_id",
            F.lit(None).cast("string").alias("symbol"),
            F.lit(None).cast(QUANTITY_TYPE).alias("quantity"),
            "cash",
            "last_ts",
        )
        .unionByName(
            exploded.where(F.col("p").isNotNull()).select(
                "account_id",
                F.col("p.symbol").alias("symbol"),
                F.col("p.quantity").alias("quantity"),
                F.lit(None).cast(CASH_TYPE).alias("cash"),
                F.lit(None).cast("long").alias("last_ts"),
            )
        )
        .unionByName(delta_frame(spark, d))
    )
    pos = (
        rows.where(F.col("symbol").isNotNull())
        .groupBy("account_id", "symbol")
        .agg(F.sum("quantity").cast(QUANTITY_TYPE).alias("quantity"))
        .where(F.col("quantity") != 0)
        .groupBy("account_id")
        .agg(F.collect_list(F.struct("symbol", "quantity")).alias("positions"))
    )
    acc = (
        rows.where(F.col("symbol").isNull())
        .groupBy("account_id")
        .agg(F.sum("cash").cast(CASH_TYPE).alias("cash"), F.max("last_ts").alias("last_ts"))
    )
    empty = F.array().cast(f"array<{POSITION}>")
    return acc.join(pos, "account_id", "full_outer").select(
        "account_id",
        F.coalesce("cash", F.lit(0).cast(CASH_TYPE)).alias("cash"),
        "last_ts",
        F.coalesce("positions", empty).alias("positions"),
    )
