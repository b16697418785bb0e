"""In-memory implementations of the enforcement service's ports and of Powertools' idempotency
persistence layer, so the benchmark measures the handler's own cost (parsing, validation, the state
machine, audit serialisation, Powertools batch and idempotency plumbing) without any I/O.

Each fake counts its calls, which gives the call pattern per batch without an endpoint.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from margin_risk.enforcement import AccountState
from margin_risk.models import AuditEvent
from margin_risk.outbox import Outbox
from margin_risk.usecase.records import CommitInfo, Publication, Rejection


class MemoryStateRepository:
    """`StateRepository`: head states by account, version-guarded like the conditional put;
    `archive` copies the heads last seen to history, as the DynamoDB adapter does."""

    max_concurrent_commits = 1  # nothing to overlap: measures the handler's own cost

    def __init__(self, calls: Counter[str]) -> None:
        self.heads: dict[str, tuple[AccountState, CommitInfo | None]] = {}
        self.history: list[tuple[AccountState, CommitInfo | None]] = []
        self.calls = calls

    def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        self.calls["state.load_many"] += 1
        return {a: self.heads[a][0] for a in account_ids if a in self.heads}

    def outbox(self, account_id: str) -> Outbox | None:
        head = self.heads.get(account_id)
        return None if head is None or head[1] is None else head[1].outbox

    def commit(
        self, state: AccountState, expected_version: int, info: CommitInfo
    ) -> AccountState | None:
        self.calls["state.commit"] += 1
        current = self.heads.get(state.account_id)
        if (current[0].version if current else 0) != expected_version:
            return current[0] if current else None
        self.heads[state.account_id] = (state, info)
        return None

    def archive(self, account_ids: Sequence[str]) -> None:
        self.calls["state.archive"] += 1
        self.history.extend(self.heads[a] for a in account_ids if a in self.heads)


class MemoryAuditSink:
    def __init__(self, calls: Counter[str]) -> None:
        self.objects: dict[str, bytes] = {}
        self.calls = calls

    max_concurrent_puts = 1

    def create(self, key: str, body: bytes) -> bool:
        self.calls["audit.create"] += 1
        if key in self.objects:
            return False
        self.objects[key] = body
        return True


class MemoryRejectedSink:
    def __init__(self, calls: Counter[str]) -> None:
        self.rejected: list[Rejection] = []
        self.calls = calls

    def put_rejected(self, batch_id: str, rejections: Sequence[Rejection]) -> None:
        self.calls["rejected.put"] += 1
        self.rejected.extend(rejections)


class MemoryPublisher:
    def __init__(self, calls: Counter[str]) -> None:
        self.published = 0
        self.calls = calls

    def publish(self, publications: Sequence[Publication]) -> None:
        self.calls["kafka.publish"] += 1
        for pub in publications:  # serialise as the real publisher would
            _ = pub.key, pub.value, pub.headers
        self.published += len(publications)


class MemoryNotifier:
    def __init__(self, calls: Counter[str]) -> None:
        self.sent: list[AuditEvent] = []
        self.calls = calls

    def notify(self, decisions: Sequence[AuditEvent]) -> None:
        self.calls["sns.notify"] += 1
        self.sent.extend(decisions)


class MemoryPersistenceLayer(BasePersistenceLayer):
    """Powertools idempotency records in a dict (the DynamoDB layer's semantics, minus expiry)."""

    def __init__(self, calls: Counter[str]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.records: dict[str, DataRecord] = {}
        self.calls = calls

    def _get_record(self, idempotency_key: str) -> DataRecord:
        self.calls["idempotency.get"] += 1
        try:
            return self.records[idempotency_key]
        except KeyError as e:
            raise IdempotencyItemNotFoundError from e

    def _put_record(self, data_record: DataRecord) -> None:
        self.calls["idempotency.put"] += 1
        old = self.records.get(data_record.idempotency_key)
        if old is not None:
            raise IdempotencyItemAlreadyExistsError(old_data_record=old)
        self.records[data_record.idempotency_key] = data_record

    def _update_record(self, data_record: DataRecord) -> None:
        self.calls["idempotency.update"] += 1
        self.records[data_record.idempotency_key] = data_record

    def _delete_record(self, data_record: DataRecord) -> None:
        self.calls["idempotency.delete"] += 1
        self.records.pop(data_record.idempotency_key, None)


def fake_ports(calls: Counter[str]) -> dict[str, Any]:
    """Keyword arguments of `EnforcementService` for everything but metrics and tracing."""
    return {
        "repo": MemoryStateRepository(calls),
        "audit_sink": MemoryAuditSink(calls),
        "rejected_sink": MemoryRejectedSink(calls),
        "publisher": MemoryPublisher(calls),
        "notifier": MemoryNotifier(calls),
    }
