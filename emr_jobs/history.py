"""The margin history: every result a micro-batch emits, as Parquet in `margin_risk.archive`'s
layout (``<root>/<kind>/event_date=YYYY-MM-DD/hour=H/<name>.parquet``, its columns and types).

Each kind is one Spark write of the batch's results (already computed and cached for the sink)
into a staging directory of the batch under the job's state, partitioned by event date and hour;
the driver then copies the files into the archive under names made of the batch id and the batch
key (the SHA-256 of its records' coordinates, as in the event ids). A replayed batch has the same
key and the same rows, so it writes the same names again: the archive holds each batch's rows
once, however often the batch ran, and the job never deletes anything in it. All file operations
go through Hadoop's FileSystem, so the same code writes a local directory and ``s3://``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from margin_risk import archive

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
    """Writes a batch's results under ``root`` (a local path or an ``s3://`` URI), staging them
    under ``staging`` (the job's own state directory: Spark's writer lists, reads and deletes
    there, so none of that happens in the archive)."""

    def __init__(self, spark: SparkSession, root: str, staging: str) -> None:
        self.spark = spark
        self.root = root.rstrip("/")
        self.staging = staging.rstrip("/")
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        for k, v in PARQUET_CONF.items():
            spark.conf.set(k, v)

    def _path(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def write(self, frames: Dict[str, DataFrame], batch_id: int, batch_key: str) -> int:
        """Write each kind's frame (columns of `archive_columns`); returns the files written."""
        tag = f"b{batch_id}-{batch_key[:16]}"
        staged = self._path(f"{self.staging}/{tag}")
        staging_fs = staged.getFileSystem(self._conf)
        staging_fs.delete(staged, True)
        for kind, df in frames.items():
            df.write.mode("append").partitionBy(*archive.PARTITION_COLUMNS).parquet(
                f"{self.staging}/{tag}/{kind}"
            )
        written = self._publish(staging_fs, staged, tag)
        staging_fs.delete(staged, True)
        return written

    def _publish(self, staging_fs: Any, staged: Any, tag: str) -> int:
        """Copy every staged Parquet file to ``<kind>/event_date=/hour=/<tag>-<n>.parquet``,
        replacing a file of that name (an earlier attempt of this batch wrote the same rows
        under the same names: the same records give the same partitions)."""
        by_dir: Dict[str, List[Tuple[str, Any]]] = {}
        files = staging_fs.listFiles(staged, True)
        prefix = str(staging_fs.makeQualified(staged).toUri().getPath()).rstrip("/") + "/"
        while files.hasNext():
            path = files.next().getPath()
            name = path.getName()
            if not name.endswith(".parquet") or name.startswith((".", "_")):
                continue
            rel_dir = str(path.toUri().getPath())[len(prefix) :].rsplit("/", 1)[0]
            archive.parse_partition(rel_dir)  # a staged file outside the layout is a bug
            by_dir.setdefault(rel_dir, []).append((name, path))
        dest_fs = self._path(self.root).getFileSystem(self._conf)
        copy = self._jvm.org.apache.hadoop.fs.FileUtil.copy
        written = 0
        for rel_dir, paths in sorted(by_dir.items()):
            for n, (_, path) in enumerate(sorted(paths, key=lambda x: x[0])):
                target = self._path(f"{self.root}/{rel_dir}/{tag}-{n}.parquet")
                if not copy(staging_fs, path, dest_fs, target, True, True, self._conf):
                    raise OSError(f"could not copy {path} to {target}")
                written += 1
        return written
