"""In-memory implementations of the service ports: unit tests and benchmarks run the real
`EnforcementService` logic on them, with no endpoint at all. Semantics match the AWS adapters
(version-guarded commit returning the stored state on a conflict, create-only audit objects,
history copied from the heads last loaded). Each counts its calls in ``calls`` (shareable, so a
benchmark reads the call pattern of a batch from one counter)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from margin_risk.enforcement import AccountState
from margin_risk.models import AuditEvent
from margin_risk.outbox import Outbox
from margin_risk.usecase.records import CommitInfo, Publication, Rejection


@dataclass
class MemoryStateRepository:
    """Rows are stored as JSON, as in DynamoDB, so callers never share mutable state with it."""

    rows: dict[str, str] = field(default_factory=dict)
    history: dict[tuple[str, int], str] = field(default_factory=dict)
    # The audit outbox stored on each head (JSON), as the DynamoDB item's attribute.
    outboxes: dict[str, str] = field(default_factory=dict)
    _seen: dict[str, str] = field(default_factory=dict)
    _seen_outbox: dict[str, str] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    max_concurrent_commits: int = 1  # no I/O to overlap

    @property
    def heads(self) -> dict[str, AccountState]:
        return {a: AccountState.model_validate_json(j) for a, j in self.rows.items()}

    def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        self.calls["state.load_many"] += 1
        rows = self.rows
        self._seen = {a: rows[a] for a in account_ids if a in rows}
        self._seen_outbox = {a: self.outboxes[a] for a in account_ids if a in self.outboxes}
        return {a: AccountState.model_validate_json(j) for a, j in self._seen.items()}

    def commit(
        self, state: AccountState, expected_version: int, info: CommitInfo
    ) -> AccountState | None:
        self.calls["state.commit"] += 1
        row = self.rows.get(state.account_id)
        current = None if row is None else AccountState.model_validate_json(row)
        stored = 0 if current is None else current.version
        if stored != expected_version:
            if row is not None:
                self._seen[state.account_id] = row
                box = self.outboxes.get(state.account_id)
                if box is None:
                    self._seen_outbox.pop(state.account_id, None)
                else:
                    self._seen_outbox[state.account_id] = box
            return current
        self.rows[state.account_id] = state.model_dump_json()
        if info.outbox is None:
            self.outboxes.pop(state.account_id, None)
        else:
            self.outboxes[state.account_id] = info.outbox.to_json()
        return None

    def outbox(self, account_id: str) -> Outbox | None:
        box = self._seen_outbox.get(account_id)
        return None if box is None else Outbox.from_json(box)

    def archive(self, account_ids: Sequence[str]) -> None:
        self.calls["state.archive"] += 1
        for a in account_ids:
            row = self._seen.get(a)
            if row is not None:
                self.history[(a, AccountState.model_validate_json(row).version)] = row


@dataclass
class MemoryObjectStore:
    """Both sinks: audit objects by key and rejected records by batch."""

    objects: dict[str, bytes] = field(default_factory=dict)
    rejected: dict[str, list[Rejection]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    max_concurrent_puts: int = 1  # no I/O to overlap

    def create(self, key: str, body: bytes) -> bool:
        self.calls["audit.create"] += 1
        old = self.objects.get(key)
        if old is None:
            self.objects[key] = body
            return True
        if old != body:  # the protocol's invariant: a key only ever gets one body
            raise AssertionError(f"audit object {key} written again with different content")
        return False

    def put_rejected(self, batch_id: str, rejections: Sequence[Rejection]) -> None:
        self.calls["rejected.put"] += 1
        self.rejected[batch_id] = list(rejections)


@dataclass
class MemoryPublisher:
    sent: list[Publication] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)

    def publish(self, publications: Sequence[Publication]) -> None:
        self.calls["kafka.publish"] += 1
        for pub in publications:  # serialise as the real publisher does
            _ = pub.key, pub.value, pub.headers
        self.sent.extend(publications)


@dataclass
class MemoryNotifier:
    sent: list[AuditEvent] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)

    def notify(self, decisions: Sequence[AuditEvent]) -> None:
        self.calls["sns.notify"] += 1
        self.sent.extend(decisions)


@dataclass
class MemoryMetrics:
    points: list[tuple[str, float, tuple[tuple[str, str], ...]]] = field(default_factory=list)

    def add(
        self, name: str, unit: str, value: float, dimensions: Mapping[str, str] | None = None
    ) -> None:
        self.points.append((name, value, tuple(sorted((dimensions or {}).items()))))

    def total(self, name: str) -> float:
        return sum(v for n, v, _ in self.points if n == name)
