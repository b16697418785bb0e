"""Local driver: the local Kafka-protocol broker in, the same ``process_batch`` out.

Spark's Kafka connector jar cannot be downloaded on this machine, so this driver plays the part of
Spark's Kafka source and sink: it reads the input topics with confluent-kafka (manual partition
assignment; no consumer group), builds a DataFrame with exactly the Kafka source's columns, calls
``process_batch`` and produces the outputs back to the broker with their headers.

Like Spark's offset log, the driver writes the planned offset range of a batch to the state dir
before processing it, and the range's end is stored in the batch's commit marker. A restart
re-reads exactly the planned range of an uncommitted batch, so the replay has the same records,
the same event ids and applies every fill once. Not shipped to EMR (needs confluent-kafka).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from pyspark.sql import DataFrame, SparkSession

from emr_jobs.batch import DEDUPE_HORIZON_HOURS, BatchStats, JobContext, process_batch
from emr_jobs.frames import kafka_frame
from emr_jobs.history import HistoryWriter
from emr_jobs.kafka_io import SOURCE_TOPICS
from emr_jobs.metrics import JobLog, MetricsWriter
from emr_jobs.session import build_local_session
from emr_jobs.state import COMPACT_EVERY, StateStore
from margin_risk.params import MarginParams

Offsets = Dict[str, int]  # "topic:partition" -> next offset to read


def _tp_key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class LocalMarginJob:
    """Micro-batches from the local broker through ``process_batch``; restartable from state_dir."""

    def __init__(
        self,
        bootstrap: str,
        state_dir: str,
        params: Optional[MarginParams] = None,
        metrics_dir: Optional[str] = None,
        max_batch_records: int = 50_000,
        poll_timeout_s: float = 0.2,
        idle_timeout_s: float = 1.0,
        max_read_s: float = 0.25,
        spark: Optional[SparkSession] = None,
        shuffle_partitions: int = 2,
        dedupe_horizon_hours: int = DEDUPE_HORIZON_HOURS,
        compact_every: int = COMPACT_EVERY,
        history_dir: Optional[str] = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.params = params or MarginParams()
        self.dedupe_horizon_hours = dedupe_horizon_hours
        self.max_batch_records = max_batch_records
        self.poll_timeout_s = poll_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_read_s = max_read_s
        self.spark = spark or build_local_session(shuffle_partitions=shuffle_partitions)
        self.state = StateStore(self.spark, state_dir, compact_every=compact_every)
        self.metrics = MetricsWriter(metrics_dir) if metrics_dir else None
        self.log = JobLog(metrics_dir) if metrics_dir else None
        self.history = (
            HistoryWriter(self.spark, history_dir, f"{state_dir}/history-staging")
            if history_dir
            else None
        )
        self._producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "margin-job-local",  # never joined: partitions are assigned manually
                "enable.auto.commit": False,
                "enable.partition.eof": False,
            }
        )
        # Watermark queries on the fetching consumer wait behind its long-poll fetch (0.5 s
        # each, measured); a second client that never fetches answers them in milliseconds.
        self._meta = Consumer({"bootstrap.servers": bootstrap, "group.id": "margin-job-local-meta"})
        self._assigned: Optional[Offsets] = None
        # The last committed batch and its end offsets, once read (or written) by this driver:
        # reading them back lists every marker, which an idle poll would do many times a second.
        self._last_commit: Optional[Tuple[int, Offsets]] = None
        # The last unplanned read: seconds spent reading, when it ended and how old its newest
        # record was then (a diagnostic for latency: see the e2e benchmark).
        self.last_read: Dict[str, float] = {}
        self.last_read_stamps: List[float] = []  # its records' Kafka timestamps (s since epoch)

    # --- source ---------------------------------------------------------------------------------
    def _partitions(self) -> List[Tuple[str, int]]:
        md = self._meta.list_topics(timeout=10)
        out: List[Tuple[str, int]] = []
        for topic in SOURCE_TOPICS:
            tmd = md.topics.get(topic)
            if tmd is not None:
                out.extend((topic, p) for p in sorted(tmd.partitions))
        return out

    def _assign(self, start: Offsets) -> None:
        tps = []
        for topic, p in self._partitions():
            off = start.get(_tp_key(topic, p), OFFSET_BEGINNING)
            tps.append(TopicPartition(topic, p, off if off >= 0 else OFFSET_BEGINNING))
        self._consumer.assign(tps)
        self._assigned = dict(start)

    def _committed_offsets(self) -> Tuple[int, Offsets]:
        if self._last_commit is None:
            self._last_commit = self._read_committed_offsets()
        last, offsets = self._last_commit
        return last, dict(offsets)

    def _read_committed_offsets(self) -> Tuple[int, Offsets]:
        last = self.state.last_committed()
        if last is None:
            return -1, {}
        info = self.state.commit_info(last)
        return last, dict(info.get("offsets", {}))

    def _read(self, start: Offsets, end: Optional[Offsets]) -> Tuple[List[Message], Offsets]:
        """Records from ``start``: up to ``end`` when replaying a plan; otherwise what arrives
        within max_read_s of the first record (or until the topics are idle for poll_timeout_s,
        or max_batch_records). Spark's Kafka source likewise fixes a micro-batch's range when it
        plans it. Reading on until the topics went quiet ran on under steady input: at 1,000
        events/s one batch's read took 12.6 s (measured in the e2e benchmark)."""
        if self._assigned != start:
            self._assign(start)
        msgs: List[Message] = []
        nxt = dict(start)

        read_until: Optional[float] = None  # unplanned: set by the first record

        def done() -> bool:
            if end is None:
                full = len(msgs) >= self.max_batch_records
                return full or (read_until is not None and time.monotonic() >= read_until)
            return all(nxt.get(k, 0) >= v for k, v in end.items())

        deadline = time.monotonic() + 60.0
        idle_deadline = time.monotonic() + self.idle_timeout_s
        first = True
        while not done():
            timeout = self.poll_timeout_s
            if read_until is not None:
                timeout = min(timeout, max(0.0, read_until - time.monotonic()))
            elif first:
                # consume() waits for num_messages or the timeout, so a first call with the poll
                # timeout held every read poll_timeout_s before its window even began (each e2e
                # read took 0.45 s, not 0.25). Take what the client has already fetched first.
                timeout = 0.0
            first = False
            got = self._consumer.consume(min(10_000, self.max_batch_records), timeout=timeout)
            for m in got:
                if m.error() is not None:
                    continue
                key = _tp_key(m.topic() or "", m.partition() or 0)
                if end is not None and int(m.offset() or 0) >= end.get(key, 0):
                    continue
                msgs.append(m)
                nxt[key] = int(m.offset() or 0) + 1
            if end is None and msgs and read_until is None:
                read_until = time.monotonic() + self.max_read_s
            if not got:
                # The first fetch after assign() can take longer than one poll: only an empty
                # poll after data, or a whole idle_timeout without any, ends an unplanned batch.
                if end is None and msgs:
                    break
                if end is None and time.monotonic() > idle_deadline:
                    # A fresh consumer's first fetch can outlast the idle timeout (seen under
                    # load): give up only when the broker really has nothing past `start`.
                    if self._backlog(start) == 0:
                        break
                    idle_deadline = time.monotonic() + self.idle_timeout_s
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not re-read planned range {end}")
        # After a planned replay the consumer may have fetched past the plan's end: re-seek.
        self._assigned = dict(nxt) if end is None else None
        return msgs, nxt

    def _to_df(self, msgs: List[Message]) -> DataFrame:
        rows = []
        for m in msgs:
            _, ts_ms = m.timestamp()
            rows.append(
                (
                    m.key(),
                    m.value(),
                    m.topic(),
                    m.partition(),
                    m.offset(),
                    ts_ms * 1000,
                    0,
                    list(m.headers() or []),
                )
            )
        return kafka_frame(self.spark, rows)

    def pending(self) -> int:
        """Input records not yet in a committed batch: the broker's high watermarks minus the
        offsets of the last commit. Lets a caller settle without waiting out an idle timeout."""
        return self._backlog(self._committed_offsets()[1])

    def _backlog(self, start: Offsets) -> int:
        n = 0
        for topic, p in self._partitions():
            low, high = self._meta.get_watermark_offsets(
                TopicPartition(topic, p), timeout=5, cached=False
            )
            n += max(0, high - max(low, start.get(_tp_key(topic, p), 0)))
        return n

    # --- sink -----------------------------------------------------------------------------------
    def _sink(self, outputs: DataFrame, batch_id: int) -> None:
        # One job: a local batch's outputs fit in the driver, and an ordered toLocalIterator
        # would add a sampling job plus a job per partition.
        rows = sorted(outputs.collect(), key=lambda r: (r["topic"], r["key"] or ""))
        for r in rows:
            self._producer.produce(
                r["topic"],
                key=r["key"].encode("utf-8") if r["key"] is not None else None,
                value=r["value"].encode("utf-8"),
                headers=[(h["key"], bytes(h["value"])) for h in r["headers"]],
            )
            self._producer.poll(0)
        remaining = self._producer.flush(30)
        if remaining:
            raise RuntimeError(f"batch {batch_id}: {remaining} output records not delivered")

    # --- driver ---------------------------------------------------------------------------------
    def run_once(self) -> Optional[BatchStats]:
        """Run one micro-batch; None when there was nothing to read. Replays a planned but
        uncommitted batch first (after a crash) with exactly its planned records."""
        last, start = self._committed_offsets()
        batch_id = last + 1
        plan = self.state.read_plan(batch_id)
        if plan is not None:
            start = dict(plan["start"])
            msgs, end = self._read(start, dict(plan["end"]))
        else:
            t_read = time.monotonic()
            msgs, end = self._read(start, None)
            if not msgs:
                return None
            self.last_read_stamps = [m.timestamp()[1] / 1000.0 for m in msgs]
            self.last_read = _read_info(self.last_read_stamps, time.monotonic() - t_read)
            self.state.write_plan(batch_id, {"start": start, "end": end})
        ctx = JobContext(
            self.params,
            self.state,
            self._sink,
            self.metrics,
            self.dedupe_horizon_hours,
            self.log,
            self.history,
        )
        self._last_commit = None  # until this batch is known committed
        stats = process_batch(self.spark, self._to_df(msgs), batch_id, ctx, {"offsets": end})
        self._last_commit = (batch_id, dict(end))
        self.state.prune_plans(batch_id)
        return stats

    def run_until(self, stop: threading.Event, idle_sleep_s: float = 0.05) -> List[BatchStats]:
        """Run micro-batches until ``stop`` is set; returns the stats of the batches run."""
        out: List[BatchStats] = []
        while not stop.is_set():
            stats = self.run_once()
            if stats is None:
                stop.wait(idle_sleep_s)
            else:
                out.append(stats)
        return out

    def close(self) -> None:
        self.state.release()
        self._consumer.close()
        self._meta.close()
        # Drop the producer now, not at garbage collection: its librdkafka threads would
        # otherwise log "connection refused" when the broker stops before them.
        producer = self.__dict__.pop("_producer", None)
        if producer is not None:
            producer.flush(10)

    def __enter__(self) -> LocalMarginJob:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _read_info(stamps: List[float], read_s: float) -> Dict[str, float]:
    now = time.time()
    return {
        "read_s": read_s,
        "newest_age_s": now - max(stamps),
        "ended_at": now,
    }
