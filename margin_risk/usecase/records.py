"""The enforcement use case's records: what a batch carries in, decides and reports out.

Plain frozen dataclasses shared by the service, its ports and the adapters (which import these
and `margin_risk.usecase.ports`, never the service itself).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from margin_risk import names
from margin_risk.enforcement import Outcome
from margin_risk.models import AuditEvent, EnforcementInput
from margin_risk.outbox import Outbox


@dataclass(frozen=True, order=True)
class Coordinate:
    """Where a record sits in Kafka; also how a batch item failure is reported."""

    topic: str
    partition: int
    offset: int

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class InboundRecord:
    """One Kafka record as the event source delivered it, value already base64-decoded.

    ``envelope_error`` is set when the record could not even be decoded (bad base64), so the
    record is rejected instead of failing the whole event.
    """

    coordinate: Coordinate
    value: bytes | None
    kafka_timestamp: datetime | None = None
    headers: Mapping[str, bytes] = field(default_factory=dict)
    envelope_error: str | None = None


@dataclass(frozen=True)
class Rejection:
    """A record that failed validation: written to the rejected sink, never retried."""

    coordinate: Coordinate
    reason_code: str
    reason: str
    raw: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "topic": self.coordinate.topic,
                "partition": self.coordinate.partition,
                "offset": self.coordinate.offset,
                "reason_code": self.reason_code,
                "reason": self.reason,
                "raw": self.raw,
            }
        )


@dataclass(frozen=True)
class ValidRecord:
    coordinate: Coordinate
    event: EnforcementInput
    origin_ts: datetime


@dataclass(frozen=True)
class CommitInfo:
    """What the head item records about the batch that wrote it (copied into history later), and
    the audit outbox it stores with the state: this commit's decisions, or, when it decided
    nothing, the outbox of the head it replaces (carried until a deciding commit replaces it)."""

    batch_id: str
    decision_ids: tuple[str, ...]
    committed_at: datetime
    outbox: Outbox | None = None


@dataclass(frozen=True)
class Publication:
    """One decision on one Kafka topic (key = account, headers carry the correlation id)."""

    topic: str
    decision: AuditEvent

    @property
    def key(self) -> bytes:
        return self.decision.account_id.encode()

    @property
    def value(self) -> bytes:
        return self.decision.to_json().encode()

    @property
    def headers(self) -> dict[str, bytes]:
        return {names.HEADER_CORRELATION_ID: self.decision.correlation_id.encode()}


@dataclass(frozen=True)
class Topics:
    decisions: str = names.TOPIC_MARGIN_CALLS
    restrictions: str = names.TOPIC_RESTRICTIONS
    liquidations: str = names.TOPIC_LIQUIDATIONS


@dataclass
class BatchResult:
    """What one batch did; ``failed`` are the coordinates to report as batch item failures."""

    batch_id: str
    records: int
    decisions: list[AuditEvent]
    rejected: list[Rejection]
    failed: list[Coordinate]
    outcomes: dict[Outcome, int]
    accounts_committed: int
    conflicts: int
    audit_keys: list[str]

    @classmethod
    def start(cls, batch_id: str, records: int, rejected: list[Rejection]) -> BatchResult:
        """A batch's result before any account is decided."""
        return cls(batch_id, records, [], rejected, [], dict.fromkeys(Outcome, 0), 0, 0, [])
