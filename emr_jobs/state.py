"""The job's state store: parquet snapshots per micro-batch, committed by a marker file.

Layout under ``state_dir`` (a local path or ``s3://`` URI; all I/O goes through Hadoop's
FileSystem so the same code runs on EMR Serverless):

    snapshots/<batch_id>/{positions,accounts,symbols,seen}/   parquet, written by batch <batch_id>
    commits/<batch_id>.json                                    the commit marker, written last

A batch reads the snapshot of the newest *committed* batch below its own id, writes its own
snapshot (overwriting any half-written attempt of the same id), emits its outputs, then writes the
marker. A crash before the marker replays the batch from the same base state, so a fill is neither
lost nor applied twice; outputs of a replayed batch carry the same deterministic event ids.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from pyspark.sql import DataFrame, SparkSession

TABLES = ("positions", "accounts", "symbols", "seen")
KEEP_COMMITTED = 3

_LATEST = "struct<ts:timestamp,partition:int,offset:long,value:double>"
SCHEMAS: Dict[str, str] = {
    "positions": "account_id string, symbol string, quantity double",
    # last_ts: event time of the newest input that ever contributed to the account.
    "accounts": "account_id string, cash double, last_ts timestamp",
    # Each fact is the latest record by (event ts, partition, offset) carrying it.
    "symbols": (
        f"symbol string, tick {_LATEST}, tick_beta {_LATEST}, fill {_LATEST}, override {_LATEST}"
    ),
    "seen": "kind string, id string",
}


class StateStore:
    """Snapshots and commit markers under one directory (see module docstring)."""

    def __init__(self, spark: SparkSession, state_dir: str) -> None:
        self.spark = spark
        self.root = state_dir.rstrip("/")
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self._jvm = jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    # --- Hadoop FileSystem helpers -------------------------------------------------------------
    def _path(self, rel: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(f"{self.root}/{rel}")

    def _fs(self, path: Any) -> Any:
        return path.getFileSystem(self._conf)

    def _write_text(self, rel: str, text: str) -> None:
        """Write via a temporary file and a rename, so readers never see half a marker."""
        final = self._path(rel)
        tmp = self._path(rel + ".tmp")
        fs = self._fs(final)
        out = fs.create(tmp, True)
        out.write(bytearray(text.encode("utf-8")))
        out.close()
        if fs.exists(final):
            fs.delete(final, False)
        fs.rename(tmp, final)

    def _read_text(self, rel: str) -> str:
        path = self._path(rel)
        fs = self._fs(path)
        stream = fs.open(path)
        reader = self._jvm.java.io.BufferedReader(self._jvm.java.io.InputStreamReader(stream))
        lines = []
        line = reader.readLine()
        while line is not None:
            lines.append(line)
            line = reader.readLine()
        reader.close()
        return "\n".join(lines)

    def _list(self, rel: str) -> List[str]:
        path = self._path(rel)
        fs = self._fs(path)
        if not fs.exists(path):
            return []
        return [s.getPath().getName() for s in fs.listStatus(path)]

    def _delete(self, rel: str) -> None:
        path = self._path(rel)
        fs = self._fs(path)
        if fs.exists(path):
            fs.delete(path, True)

    # --- commits --------------------------------------------------------------------------------
    def committed_ids(self) -> List[int]:
        ids = []
        for name in self._list("commits"):
            if name.endswith(".json") and name[:-5].isdigit():
                ids.append(int(name[:-5]))
        return sorted(ids)

    def last_committed(self, below: Optional[int] = None) -> Optional[int]:
        ids = [i for i in self.committed_ids() if below is None or i < below]
        return ids[-1] if ids else None

    def is_committed(self, batch_id: int) -> bool:
        return batch_id in self.committed_ids()

    def commit_info(self, batch_id: int) -> Dict[str, Any]:
        info: Dict[str, Any] = json.loads(self._read_text(f"commits/{batch_id}.json"))
        return info

    def commit(self, batch_id: int, extra: Optional[Dict[str, Any]] = None) -> None:
        """Write the marker that makes snapshot <batch_id> the current state; prune old ones."""
        body = {"batch_id": batch_id, **(extra or {})}
        self._write_text(f"commits/{batch_id}.json", json.dumps(body, sort_keys=True))
        for old in self.committed_ids()[:-KEEP_COMMITTED]:
            self._delete(f"snapshots/{old}")
            self._delete(f"commits/{old}.json")

    # --- plans (the local driver's offset log) -------------------------------------------------
    def write_plan(self, batch_id: int, plan: Dict[str, Any]) -> None:
        self._write_text(f"plans/{batch_id}.json", json.dumps(plan, sort_keys=True))

    def read_plan(self, batch_id: int) -> Optional[Dict[str, Any]]:
        if f"{batch_id}.json" not in self._list("plans"):
            return None
        plan: Dict[str, Any] = json.loads(self._read_text(f"plans/{batch_id}.json"))
        return plan

    def prune_plans(self, upto: int) -> None:
        for name in self._list("plans"):
            if name.endswith(".json") and name[:-5].isdigit() and int(name[:-5]) < upto:
                self._delete(f"plans/{name}")

    # --- snapshots ------------------------------------------------------------------------------
    def empty(self, table: str) -> DataFrame:
        return self.spark.createDataFrame([], SCHEMAS[table])

    def load(self, table: str, batch_id: Optional[int]) -> DataFrame:
        if batch_id is None:
            return self.empty(table)
        return self.spark.read.schema(SCHEMAS[table]).parquet(
            f"{self.root}/snapshots/{batch_id}/{table}"
        )

    def save(self, table: str, batch_id: int, df: DataFrame) -> DataFrame:
        """Write one table of snapshot <batch_id> (overwrite) and return it re-read from disk,
        which also cuts the lineage so later batches never recompute earlier ones."""
        path = f"{self.root}/snapshots/{batch_id}/{table}"
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.schema(SCHEMAS[table]).parquet(path)
