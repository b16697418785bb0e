"""Invoke the real handler in-process with an MSK-shaped event (the local demo and the tests).

`build_msk_event` turns consumed Kafka records (confluent-kafka ``Message`` objects, or
`LocalRecord` for tests) into exactly what the MSK event source mapping delivers: records grouped
under ``"topic-partition"``, base64 values and keys, header values as byte lists, ms timestamps.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from margin_risk import names

LOCAL_CLUSTER_ARN = f"arn:aws:kafka:us-east-1:123456789012:cluster/{names.MSK_CLUSTER}/local-1"


class KafkaRecordLike(Protocol):
    """The accessor methods of ``confluent_kafka.Message`` that an MSK event needs."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | str | None: ...
    def value(self) -> bytes | str | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def headers(self) -> list[tuple[str, bytes | str | None]] | None: ...


@dataclass
class LocalRecord:
    """A `KafkaRecordLike` built by hand (tests, generators)."""

    topic_: str
    partition_: int
    offset_: int
    value_: bytes | None
    key_: bytes | None = None
    timestamp_ms: int = 0
    headers_: list[tuple[str, bytes | str | None]] = field(default_factory=list)

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def timestamp(self) -> tuple[int, int]:
        return (1, self.timestamp_ms)  # TIMESTAMP_CREATE_TIME

    def headers(self) -> list[tuple[str, bytes | str | None]]:
        return self.headers_


def _b64(v: bytes | str | None) -> str | None:
    if v is None:
        return None
    raw = v.encode("utf-8") if isinstance(v, str) else v
    return base64.b64encode(raw).decode("ascii")


def _header_bytes(v: bytes | str | None) -> list[int]:
    if v is None:
        return []
    return list(v.encode("utf-8") if isinstance(v, str) else v)


def msk_record(r: KafkaRecordLike) -> dict[str, Any]:
    ts_type, ts = r.timestamp()
    return {
        "topic": r.topic(),
        "partition": r.partition(),
        "offset": r.offset(),
        "timestamp": ts,
        "timestampType": "LOG_APPEND_TIME" if ts_type == 2 else "CREATE_TIME",
        "key": _b64(r.key()),
        "value": _b64(r.value()) or "",
        "headers": [{k: _header_bytes(v)} for k, v in (r.headers() or [])],
    }


def build_msk_event(
    records: Sequence[KafkaRecordLike],
    *,
    bootstrap_servers: str = "localhost:9092",
    event_source_arn: str = LOCAL_CLUSTER_ARN,
) -> dict[str, Any]:
    """The event the MSK event source mapping would deliver for these records."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        grouped.setdefault(f"{r.topic()}-{r.partition()}", []).append(msk_record(r))
    for recs in grouped.values():
        recs.sort(key=lambda x: x["offset"])
    return {
        "eventSource": "aws:kafka",
        "eventSourceArn": event_source_arn,
        "bootstrapServers": bootstrap_servers,
        "records": grouped,
    }


@dataclass
class FakeLambdaContext:
    """Enough of ``LambdaContext`` for Powertools (logger, idempotency timeout, tracer)."""

    function_name: str = names.ENFORCEMENT_FUNCTION
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    timeout_ms: int = 60_000
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = (
        f"arn:aws:lambda:us-east-1:123456789012:function:{names.ENFORCEMENT_FUNCTION}"
    )
    log_group_name: str = f"/aws/lambda/{names.ENFORCEMENT_FUNCTION}"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_ms


def invoke(event: dict[str, Any], context: Any | None = None) -> PartialItemFailureResponse:
    """Call the real handler in this process (the environment selects the AWS endpoint)."""
    from lambdas.enforcement.app import lambda_handler

    return cast(PartialItemFailureResponse, lambda_handler(event, context or FakeLambdaContext()))
