"""The enforcement service's ports in memory (the project's in-memory adapters) and Powertools'
idempotency persistence layer in a dict, so the benchmark measures the handler's own cost (parsing,
validation, the state machine, audit serialisation, Powertools batch and idempotency plumbing)
without any I/O. Every fake counts its calls into one counter: the call pattern per batch.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from margin_risk.adapters.memory import (
    MemoryNotifier,
    MemoryObjectStore,
    MemoryPublisher,
    MemoryStateRepository,
)


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
    """Keyword arguments of `EnforcementService` for everything but metrics and tracing: the
    in-memory adapters (`margin_risk.adapters.memory`), counting into one counter."""
    store = MemoryObjectStore(calls=calls)
    return {
        "repo": MemoryStateRepository(calls=calls),
        "audit_sink": store,
        "rejected_sink": store,
        "publisher": MemoryPublisher(calls=calls),
        "notifier": MemoryNotifier(calls=calls),
    }
