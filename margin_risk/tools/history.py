"""The margin history (layout: `margin_risk.archive`) read back in event-time order, and a
reference writer of the same layout for tests and the demo.

Reading streams an hour partition at a time: DuckDB reads that hour's Parquet files (both kinds),
keeps one row per ``event_id``, orders by ``(timestamp, event_id)``, and rows are fetched in
chunks, so memory is bounded by a chunk and not by the archive. From ``s3://`` each hour's objects
are downloaded to a temporary directory, read and deleted before the next hour.
"""

from __future__ import annotations

import heapq
import json
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from margin_risk import archive
from margin_risk.models import MarginCalc, StressResult, iso
from margin_risk.money import number_text

# DuckDB dedupes and sorts one hour's rows before the first is fetched: that hour's rows are the
# part of the memory not bounded by the number of accounts (see the README's measurements).
FETCH_ROWS = 5_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR_DIR = re.compile(r"^event_date=(\d{4}-\d{2}-\d{2})$")

Result = MarginCalc | StressResult


class BadHistory(ValueError):
    """The archive cannot be read (one line naming where and why)."""


@dataclass(frozen=True, order=True)
class Hour:
    """One hour partition: ``event_date`` (YYYY-MM-DD) and ``hour`` (0-23), in UTC."""

    date: str
    hour: int

    @property
    def start(self) -> datetime:
        return datetime.strptime(self.date, "%Y-%m-%d").replace(tzinfo=UTC) + timedelta(
            hours=self.hour
        )

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=1)

    def rel_dir(self, kind: str) -> str:
        return f"{kind}/event_date={self.date}/hour={self.hour}/"


# --- sources ---------------------------------------------------------------------------------
class LocalHistory:
    """The archive under a local directory."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise BadHistory(f"{root}: not a directory (give a history dir or s3://bucket/prefix)")
        self.root = root

    def hours(self) -> list[Hour]:
        found: set[Hour] = set()
        for kind in archive.KINDS:
            for d in self.root.glob(f"{kind}/event_date=*/hour=*"):
                if d.is_dir():
                    _, date, h = archive.parse_partition(str(d.relative_to(self.root)))
                    found.add(Hour(date, h))
        return sorted(found)

    @contextmanager
    def files(self, hour: Hour) -> Iterator[dict[str, list[Path]]]:
        yield {k: sorted((self.root / hour.rel_dir(k)).glob("*.parquet")) for k in archive.KINDS}


class S3History:
    """The archive under ``s3://bucket/prefix``; an hour is downloaded only while it is read."""

    def __init__(self, uri: str, client: Any | None = None) -> None:
        if not uri.startswith("s3://") or "/" not in uri[5:].rstrip("/") + "/":
            raise BadHistory(f"{uri}: not an s3://bucket/prefix URI")
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise BadHistory(f"{uri}: no bucket")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client
        self._keys: dict[Hour, dict[str, list[str]]] | None = None

    def _index(self) -> dict[Hour, dict[str, list[str]]]:
        """Keys by hour and kind (names only: one listing, a few bytes per object)."""
        if self._keys is None:
            out: dict[Hour, dict[str, list[str]]] = {}
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key: str = obj["Key"]
                    if not key.endswith(".parquet"):
                        continue
                    rel = key[len(self.prefix) :]
                    try:
                        kind, date, h = archive.parse_partition(rel.rsplit("/", 1)[0])
                    except ValueError:
                        continue
                    out.setdefault(Hour(date, h), {}).setdefault(kind, []).append(key)
            self._keys = out
        return self._keys

    def hours(self) -> list[Hour]:
        return sorted(self._index())

    @contextmanager
    def files(self, hour: Hour) -> Iterator[dict[str, list[Path]]]:
        keys = self._index().get(hour, {})
        with tempfile.TemporaryDirectory(prefix="history-") as tmp:
            out: dict[str, list[Path]] = {k: [] for k in archive.KINDS}
            for kind, ks in keys.items():
                for i, key in enumerate(sorted(ks)):
                    path = Path(tmp) / f"{kind}-{i}.parquet"
                    self.client.download_file(self.bucket, key, str(path))
                    out[kind].append(path)
            yield out


def open_history(source: str) -> LocalHistory | S3History:
    return S3History(source) if source.startswith("s3://") else LocalHistory(Path(source))


# --- reading ---------------------------------------------------------------------------------
def _ts(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _query(con: Any, kind: str, paths: Sequence[Path]) -> Any:
    """Rows of one kind in one hour: one per event_id, in (timestamp, event_id) order."""
    cols = [c for c in archive.COLUMNS[kind] if c != "timestamp"]
    select = ", ".join(f'"{c}"' for c in cols)
    sql = f"""
        SELECT epoch_us("timestamp") AS ts_us, {select} FROM (
            SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY "timestamp") AS n
            FROM read_parquet({_sql_list(paths)}, hive_partitioning = false)
        ) WHERE n = 1 ORDER BY ts_us, event_id"""
    cur = con.cursor()
    cur.execute(sql)
    return cur, ["ts_us", *cols]


def _rows(cur: Any, cols: list[str]) -> Iterator[dict[str, Any]]:
    while chunk := cur.fetchmany(FETCH_ROWS):
        for row in chunk:
            yield dict(zip(cols, row, strict=True))


def _margin(row: dict[str, Any]) -> MarginCalc:
    row["timestamp"] = _ts(row.pop("ts_us"))
    return MarginCalc.model_validate(row)


def _move(x: Any) -> Any:
    """A SPY move as the grid writes it (``-0.08``, not the column's ``-0.0800``), so reasons
    read the same as the live decisions'; the value is unchanged."""
    return x.normalize() + 0 if isinstance(x, Decimal) else x


def _stress(row: dict[str, Any]) -> StressResult:
    row["timestamp"] = _ts(row.pop("ts_us"))
    row["worst_scenario"] = _move(row["worst_scenario"])
    for r in row.get("scenarios") or []:
        r["scenario"] = _move(r["scenario"])
    return StressResult.model_validate(row)


def _keyed(results: Iterator[Result]) -> Iterator[tuple[datetime, str, Result]]:
    return ((r.timestamp, r.event_id, r) for r in results)


def read_hour(files: dict[str, list[Path]]) -> Iterator[Result]:
    """One hour's results, margin and stress merged by (timestamp, event_id)."""
    import duckdb

    con = duckdb.connect()
    try:
        streams: list[Iterator[tuple[datetime, str, Result]]] = []
        if paths := files.get(archive.KIND_MARGIN):
            cur, cols = _query(con, archive.KIND_MARGIN, paths)
            streams.append(_keyed(map(_margin, _rows(cur, cols))))
        if paths := files.get(archive.KIND_STRESS):
            cur, cols = _query(con, archive.KIND_STRESS, paths)
            streams.append(_keyed(map(_stress, _rows(cur, cols))))
        for _, _, result in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
            yield result
    finally:
        con.close()


def iter_history(
    source: LocalHistory | S3History,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[Result]:
    """Every result with ``start <= timestamp < end``, in event-time order, an hour at a time."""
    for hour in source.hours():
        if (start is not None and hour.end <= start) or (end is not None and hour.start >= end):
            continue
        with source.files(hour) as files:
            for r in read_hour(files):
                if (start is None or r.timestamp >= start) and (end is None or r.timestamp < end):
                    yield r


# --- writing (the reference writer: tests and the demo; the Spark job writes the same) --------
def _text(v: Any) -> Any:
    if isinstance(v, Decimal):
        return number_text(v)
    if isinstance(v, datetime):
        return iso(v)
    if isinstance(v, list):
        return [_text(x) for x in v]
    if isinstance(v, dict):
        return {k: _text(x) for k, x in v.items()}
    return v


def duck_type(t: str) -> str:
    """A Spark/Hive type of `archive` as DuckDB spells it."""
    if t.startswith("array<struct<"):
        inner = t[len("array<struct<") : -2]
        fields = ", ".join(f"{n} {duck_type(ft)}" for n, ft in _fields(inner))
        return f"STRUCT({fields})[]"
    return {"string": "VARCHAR", "timestamp": "TIMESTAMPTZ"}.get(t, t.upper())


def _fields(inner: str) -> list[tuple[str, str]]:
    out, depth, cur = [], 0, ""
    for ch in inner + ",":
        if ch == "," and depth == 0:
            name, _, typ = cur.partition(":")
            out.append((name, typ))
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return out


def write_history(root: Path, results: Iterable[Result], name: str = "part-0") -> list[Path]:
    """Write results under ``root`` in the archive layout: one file per kind and hour."""
    import duckdb

    groups: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        kind = archive.KIND_STRESS if isinstance(r, StressResult) else archive.KIND_MARGIN
        date, hour = archive.partition_values(r.timestamp)
        groups.setdefault((kind, date, hour), []).append(r)
    written: list[Path] = []
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        with tempfile.TemporaryDirectory(prefix="history-w-") as tmp:
            for (kind, date, hour), rows in sorted(groups.items()):
                cols = archive.COLUMNS[kind]
                src = Path(tmp) / "rows.jsonl"
                with src.open("w", encoding="utf-8") as f:
                    for r in rows:
                        raw = r.model_dump(mode="python", include=set(cols))
                        f.write(json.dumps(_text(raw)) + "\n")
                as_text = ", ".join(
                    f"'{c}': '{'VARCHAR' if not t.startswith('array') else _text_struct(t)}'"
                    for c, t in cols.items()
                )
                casts = ", ".join(
                    f'CAST("{c}" AS {duck_type(t)}) AS "{c}"' for c, t in cols.items()
                )
                out = root / Hour(date, hour).rel_dir(kind) / f"{name}.parquet"
                out.parent.mkdir(parents=True, exist_ok=True)
                con.execute(
                    f"COPY (SELECT {casts} FROM read_json('{src}', format = 'newline_delimited',"
                    f" columns = {{{as_text}}})) TO '{out}' (FORMAT PARQUET)"
                )
                written.append(out)
    finally:
        con.close()
    return written


def _text_struct(t: str) -> str:
    inner = t[len("array<struct<") : -2]
    return "STRUCT(" + ", ".join(f"{n} VARCHAR" for n, _ in _fields(inner)) + ")[]"
