"""A local stand-in for Lambda's MSK event source mapping: poll, batch, invoke, retry, divert.

It behaves like the managed mapping where it matters to correctness: MSK-shaped events
(base64 keys and values, byte-list headers, ``records`` keyed ``topic-partition``), a batch
closes at ``batch_size`` records or after ``window_seconds``, partial batch responses
(``batchItemFailures`` with ``{"partition": "topic-N", "offset": n}``) re-deliver each failed
partition from its lowest failed offset, and a record that still fails after ``max_retries``
re-deliveries goes to the on-failure destination and the partition moves on.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from lambdas.enforcement.local_invoke import FakeLambdaContext, KafkaRecordLike, build_msk_event
from lambdas.enforcement.local_invoke import msk_record as _msk_record
from margin_risk import names

Handler = Callable[[dict[str, Any], Any], Any]


class OnFailure(Protocol):
    """Where records that exhausted their retries go (SQS in AWS and in the demo)."""

    def send(self, records: Sequence[Mapping[str, Any]], reason: str) -> None: ...


def msk_event(messages: Sequence[Message], bootstrap: str) -> dict[str, Any]:
    """The MSK event for consumed messages (the Lambda package's own builder, so both agree)."""
    records = cast(Sequence[KafkaRecordLike], messages)
    return build_msk_event(records, bootstrap_servers=bootstrap)


def msk_record(msg: Message) -> dict[str, Any]:
    return _msk_record(cast(KafkaRecordLike, msg))


def coordinate(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed message (the client types them as optional)."""
    return str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)


def failed_offsets(response: Any) -> dict[tuple[str, int], int]:
    """Lowest failed offset per (topic, partition) from a partial batch response."""
    out: dict[tuple[str, int], int] = {}
    if not isinstance(response, Mapping):
        return out
    for item in response.get("batchItemFailures") or []:
        ident = item.get("itemIdentifier") or {}
        topic, _, part = str(ident.get("partition", "")).rpartition("-")
        tp = (topic, int(part))
        off = int(ident["offset"])
        out[tp] = min(off, out.get(tp, off))
    return out


@dataclass
class EsmStats:
    invocations: int = 0
    records_delivered: int = 0
    redeliveries: int = 0
    sent_to_on_failure: int = 0
    errors: int = 0
    batch_seconds: list[float] = field(default_factory=list)


class LocalEventSourceMapping:
    """Consumes result topics with manual assignment and drives the real handler in-process."""

    def __init__(
        self,
        bootstrap: str,
        handler: Handler,
        *,
        topics: Sequence[str] = names.RESULT_TOPICS,
        batch_size: int = 100,
        window_seconds: float = 0.5,
        max_retries: int = 3,
        on_failure: OnFailure | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.handler = handler
        self.batch_size = batch_size
        self.window_seconds = window_seconds
        self.max_retries = max_retries
        self.on_failure = on_failure
        self.stats = EsmStats()
        self._attempts: dict[tuple[str, int, int], int] = defaultdict(int)
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "local-esm",  # required by the client; never joined (assign only)
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        # Watermark queries on the fetching consumer wait behind its long-poll fetch (~0.5 s
        # each, measured); a client that never fetches answers them in milliseconds.
        self._meta = Consumer({"bootstrap.servers": bootstrap, "group.id": "local-esm-meta"})
        md = self._meta.list_topics(timeout=10)
        self.partitions = [
            TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md.topics[t].partitions
        ]
        self.consumer.assign(self.partitions)

    def close(self) -> None:
        self.consumer.close()
        self._meta.close()

    def _lag(self) -> int:
        """Messages not yet delivered, from the broker's high watermarks and our positions."""
        lag = 0
        positions = self.consumer.position(
            [TopicPartition(tp.topic, tp.partition) for tp in self.partitions]
        )
        for pos in positions:
            _, high = self._meta.get_watermark_offsets(pos, timeout=5, cached=False)
            offset = pos.offset if pos.offset >= 0 else 0
            lag += max(0, high - offset)
        return lag

    def poll_once(self) -> int:
        """Collect one batch (size or window, whichever first) and invoke; returns records seen."""
        deadline = time.monotonic() + self.window_seconds
        batch: list[Message] = []
        while len(batch) < self.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msgs = self.consumer.consume(num_messages=self.batch_size - len(batch), timeout=left)
            batch.extend(m for m in msgs if m.error() is None)
        if batch:
            self.invoke(batch)
        return len(batch)

    def invoke(self, batch: Sequence[Message]) -> None:
        event = msk_event(batch, self.bootstrap)
        started = time.perf_counter()
        try:
            response = self.handler(event, FakeLambdaContext())
            failures = failed_offsets(response)
        except Exception:  # the whole invocation failed: Lambda retries the whole batch
            self.stats.errors += 1
            failures = {}
            for m in batch:
                topic, partition, offset = coordinate(m)
                failures[(topic, partition)] = min(offset, failures.get((topic, partition), offset))
        self.stats.batch_seconds.append(time.perf_counter() - started)
        self.stats.invocations += 1
        self.stats.records_delivered += len(batch)
        if failures:
            self._retry(batch, failures)

    def _retry(self, batch: Sequence[Message], failures: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), offset in failures.items():
            key = (topic, partition, offset)
            self._attempts[key] += 1
            if self._attempts[key] > self.max_retries:
                failed = [m for m in batch if coordinate(m) == key]
                if self.on_failure is not None:
                    self.on_failure.send([msk_record(m) for m in failed], "retries exhausted")
                self.stats.sent_to_on_failure += len(failed)
                self.consumer.seek(TopicPartition(topic, partition, offset + 1))
            else:
                self.stats.redeliveries += 1
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def drain(self, idle_timeout: float = 30.0) -> None:
        """Deliver everything produced so far (returns when nothing is left to deliver)."""
        give_up = time.monotonic() + idle_timeout
        while time.monotonic() < give_up:
            if self.poll_once() == 0 and self._lag() == 0:
                return
        raise TimeoutError(f"event source mapping still lagging after {idle_timeout}s")
