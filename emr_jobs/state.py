"""The job's state store: parquet snapshots per micro-batch, committed by a marker file.

Layout under ``state_dir`` (a local path or ``s3://`` URI; all I/O goes through Hadoop's
FileSystem so the same code runs on EMR Serverless):

    snapshots/<batch_id>/{positions,accounts,symbols}/   parquet, written by batch <batch_id>
    seen/v=<batch_id>/hour=<event hour>/                  applied fill/cash ids, per event hour
    commits/<batch_id>.json                               the commit marker, written last

The applied-id table (exactly-once on ``fill_id``/``txn_id``) is not rewritten whole: it is kept
per event hour (hours since the epoch, UTC), and a batch writes a new version only of the hours
its records fall in, as ``seen/v=<batch_id>/hour=<h>/`` (the hour's previous ids plus its own).
The commit marker's ``seen`` manifest names the live version of every hour. Hours older than the
dedupe horizon are dropped from the manifest, and a fill or cash record older than the horizon is
rejected (``older_than_dedupe_horizon``) instead of applied, so an id that is no longer remembered
can never be applied twice (see ``SeenManifest.advance``).

A batch reads the snapshot of the newest *committed* batch below its own id, writes its own
snapshot (overwriting any half-written attempt of the same id), emits its outputs, writes its seen
hours, then writes the marker. A crash before the marker replays the batch from the same base
state, so a fill is neither lost nor applied twice; outputs of a replayed batch carry the same
deterministic event ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Set

from pyspark.sql import DataFrame, SparkSession

KEEP_COMMITTED = 3

_LATEST = "struct<ts:timestamp,partition:int,offset:long,value:decimal(19,4)>"
SCHEMAS: Dict[str, str] = {
    "positions": "account_id string, symbol string, quantity decimal(24,4)",
    # last_ts: event time of the newest input that ever contributed to the account.
    "accounts": "account_id string, cash decimal(38,8), last_ts timestamp",
    # Each fact is the latest record by (event ts, partition, offset) carrying it.
    "symbols": (
        f"symbol string, tick {_LATEST}, tick_beta {_LATEST}, fill {_LATEST}, override {_LATEST}"
    ),
    "seen": "kind string, id string, hour long",
}
# The files of a seen version, with the partition columns of their path.
_SEEN_FILES = "kind string, id string, v long, hour long"


@dataclass
class SeenManifest:
    """Which version holds the applied ids of each event hour, and the horizon so far.

    ``cutoff``: the oldest event hour still remembered; it only moves forward. Records of an hour
    below it are rejected, and only hours below it are forgotten, so a record accepted now was
    either never applied or is still in a remembered hour."""

    hours: Dict[int, int] = field(default_factory=dict)  # event hour -> batch id of its version
    cutoff: Optional[int] = None
    max_arrival_hour: Optional[int] = None  # newest Kafka-timestamp hour of a valid fill/cash

    def advance(
        self, batch_hours: Iterable[int], arrival_hour: Optional[int], horizon_hours: int
    ) -> "SeenManifest":
        """The horizon after a batch whose valid fill/cash records fall in ``batch_hours``.

        The newest event hour counts only up to an hour past the newest arrival, so one record
        stamped in the future cannot push the horizon past the records that follow it."""
        hours = set(self.hours) | set(batch_hours)
        arrivals = [a for a in (self.max_arrival_hour, arrival_hour) if a is not None]
        arrival = max(arrivals) if arrivals else None
        cutoff = self.cutoff
        if hours and arrival is not None:
            candidate = min(max(hours), arrival + 1) - horizon_hours
            cutoff = candidate if cutoff is None else max(cutoff, candidate)
        return SeenManifest(dict(self.hours), cutoff, arrival)

    def live(self) -> Dict[int, int]:
        return {h: v for h, v in self.hours.items() if self.remembers(h)}

    def remembers(self, hour: int) -> bool:
        return self.cutoff is None or hour >= self.cutoff

    def written(self, batch_id: int, hours: Iterable[int]) -> "SeenManifest":
        """The manifest after batch <batch_id> wrote new versions of ``hours``: forgotten hours
        dropped."""
        return SeenManifest(
            {**self.live(), **{h: batch_id for h in hours}}, self.cutoff, self.max_arrival_hour
        )

    def to_json(self) -> Dict[str, Any]:
        return {
            "hours": {str(h): v for h, v in sorted(self.hours.items())},
            "cutoff": self.cutoff,
            "max_arrival_hour": self.max_arrival_hour,
        }

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "SeenManifest":
        return cls(
            {int(h): int(v) for h, v in raw.get("hours", {}).items()},
            raw.get("cutoff"),
            raw.get("max_arrival_hour"),
        )


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

    def commit(
        self, batch_id: int, seen: SeenManifest, extra: Optional[Dict[str, Any]] = None
    ) -> None:
        """Write the marker that makes snapshot <batch_id> the current state; prune old ones."""
        body = {"batch_id": batch_id, **(extra or {}), "seen": seen.to_json()}
        self._write_text(f"commits/{batch_id}.json", json.dumps(body, sort_keys=True))
        for old in self.committed_ids()[:-KEEP_COMMITTED]:
            self._delete(f"snapshots/{old}")
            self._delete(f"commits/{old}.json")
        self._prune_seen(below=batch_id)

    def _prune_seen(self, below: int) -> None:
        """Delete seen versions that no kept commit refers to (and no later batch wrote)."""
        referenced: Set[int] = set()
        for cid in self.committed_ids():
            referenced.update(self.seen_manifest(cid).hours.values())
        for name in self._list("seen"):
            if name.startswith("v=") and name[2:].isdigit():
                v = int(name[2:])
                if v < below and v not in referenced:
                    self._delete(f"seen/{name}")

    def seen_manifest(self, batch_id: Optional[int]) -> SeenManifest:
        if batch_id is None:
            return SeenManifest()
        raw = self.commit_info(batch_id).get("seen")
        if raw is None:
            raise RuntimeError(
                f"{self.root}: commit {batch_id} has no seen manifest (state written before the "
                "per-hour seen layout); start the job on a new checkpoint directory"
            )
        return SeenManifest.from_json(raw)

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

    # --- applied ids ----------------------------------------------------------------------------
    def load_seen(self, manifest: SeenManifest) -> DataFrame:
        """kind, id, hour of every remembered applied id (the manifest's live hours)."""
        paths = [f"{self.root}/seen/v={v}/hour={h}" for h, v in sorted(manifest.live().items())]
        if not paths:
            return self.empty("seen")
        df = (
            self.spark.read.schema(_SEEN_FILES)
            .option("basePath", f"{self.root}/seen")
            .parquet(*paths)
        )
        return df.select("kind", "id", "hour")

    def write_seen(self, batch_id: int, df: DataFrame) -> None:
        """Write version <batch_id> of the hours in ``df`` (kind, id, hour); a retried batch
        overwrites its own version."""
        self._delete(f"seen/v={batch_id}")
        df.write.partitionBy("hour").parquet(f"{self.root}/seen/v={batch_id}")
