"""The margin history: every result a micro-batch emits, as Parquet in `margin_risk.archive`'s
layout (``<root>/<kind>/event_date=YYYY-MM-DD/hour=H/<name>.parquet``, its columns and types).

Each kind is one Spark write of the batch's results (already computed and cached for the sink)
into a staging directory of the batch, partitioned by event date and hour; the driver then moves
the files into the archive under names made of the batch id and the batch key (the SHA-256 of
its records' coordinates, as in the event ids). A replayed batch has the same key, so it first
removes what an earlier attempt of it moved and then moves its own: the archive holds each
batch's rows once, however often the batch ran. All file operations go through Hadoop's
FileSystem, so the same code writes a local directory and ``s3://``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from margin_risk import archive

STAGING = "_staging"
# Spark's parquet writer stamps TIMESTAMP_MICROS (an instant in UTC) with this session setting,
# not INT96 (its default, which not every engine reads as an instant).
PARQUET_CONF = {"spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS"}


def archive_columns(kind: str, values: Dict[str, Column], ts_us: Column) -> List[Column]:
    """The archive's columns of ``kind`` in file order (``values``: column name -> expression;
    ``timestamp`` comes from ``ts_us``), then the partition columns of the result's time."""
    ts = F.timestamp_micros(ts_us)
    cols = []
    for name, typ in archive.COLUMNS[kind].items():
        expr = ts if name == "timestamp" else values[name]
        cols.append(expr.cast(typ).alias(name))
    return [
        *cols,
        F.date_format(ts, "yyyy-MM-dd").alias("event_date"),
        F.hour(ts).alias("hour"),
    ]


class HistoryWriter:
    """Writes a batch's results under ``root`` (a local path or an ``s3://`` URI)."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        self.spark = spark
        self.root = root.rstrip("/")
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        for k, v in PARQUET_CONF.items():
            spark.conf.set(k, v)

    def _path(self, rel: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(f"{self.root}/{rel}" if rel else self.root)

    def write(self, frames: Dict[str, DataFrame], batch_id: int, batch_key: str) -> int:
        """Write each kind's frame (columns of `archive_columns`); returns the files moved."""
        tag = f"b{batch_id}-{batch_key[:16]}"
        staging = f"{STAGING}/{tag}"
        fs = self._path("").getFileSystem(self._conf)
        fs.delete(self._path(staging), True)
        for kind, df in frames.items():
            df.write.mode("append").partitionBy(*archive.PARTITION_COLUMNS).parquet(
                f"{self.root}/{staging}/{kind}"
            )
        moved = self._move(fs, staging, tag)
        fs.delete(self._path(staging), True)
        return moved

    def _move(self, fs: Any, staging: str, tag: str) -> int:
        """Every staged Parquet file to ``<kind>/event_date=/hour=/<tag>-<n>.parquet``, after
        removing files of the same tag there (an earlier attempt of this batch)."""
        by_dir: Dict[str, List[Tuple[str, Any]]] = {}
        files = fs.listFiles(self._path(staging), True)
        prefix = str(fs.makeQualified(self._path(staging)).toUri().getPath()).rstrip("/") + "/"
        while files.hasNext():
            path = files.next().getPath()
            name = path.getName()
            if not name.endswith(".parquet") or name.startswith((".", "_")):
                continue
            rel = str(path.toUri().getPath())[len(prefix) :]
            rel_dir = rel.rsplit("/", 1)[0]
            archive.parse_partition(rel_dir)  # a staged file outside the layout is a bug
            by_dir.setdefault(rel_dir, []).append((name, path))
        moved = 0
        for rel_dir, staged in sorted(by_dir.items()):
            dest = self._path(rel_dir)
            if fs.exists(dest):
                for st in fs.listStatus(dest):
                    if st.getPath().getName().startswith(tag + "-"):
                        fs.delete(st.getPath(), False)
            else:
                fs.mkdirs(dest)
            for n, (_, path) in enumerate(sorted(staged, key=lambda x: x[0])):
                target = self._path(f"{rel_dir}/{tag}-{n}.parquet")
                if not fs.rename(path, target):
                    raise OSError(f"could not move {path} to {target}")
                moved += 1
        return moved
