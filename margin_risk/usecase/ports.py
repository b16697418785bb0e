"""The ports of the enforcement use case: what it needs from the world, as protocols.

Adapters (`margin_risk.adapters`) implement them against AWS; tests and benchmarks use the
in-memory ones. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

from margin_risk.enforcement import AccountState
from margin_risk.models import AuditEvent
from margin_risk.outbox import Outbox
from margin_risk.usecase.records import CommitInfo, Publication, Rejection

T = TypeVar("T")
R = TypeVar("R")


class StateRepository(Protocol):
    """Account state: a head item per account, history items below it.

    History is written from *committed* heads only: before a batch commits version v+1 it archives
    the head it loaded (version v) as ``H#v``. A failed history write therefore fails the batch
    before its commit, and no history item can describe a version that was never committed.
    """

    # How many commits may be in flight at once: a network-bound store gains from parallel
    # writes (one per account, on distinct keys); an in-memory one only pays for the threads.
    max_concurrent_commits: int

    def load_many(self, account_ids: Sequence[str]) -> dict[str, AccountState]:
        """Current state of each known account (unknown accounts are simply absent)."""
        ...

    def outbox(self, account_id: str) -> Outbox | None:
        """The audit outbox of the head last loaded (or returned by a conflict) for the account."""
        ...

    def commit(
        self, state: AccountState, expected_version: int, info: CommitInfo
    ) -> AccountState | None:
        """Store ``state`` if the stored version is ``expected_version`` (0: no item yet).

        Returns None on success, or the stored state when another writer got there first.
        """
        ...

    def archive(self, account_ids: Sequence[str]) -> None:
        """Copy the heads last loaded (or returned by a conflict) for these accounts to history."""
        ...


class AuditSink(Protocol):
    """The write-once trail: objects are created, never overwritten or deleted."""

    # Creates in flight at once (each is one request on its own key).
    max_concurrent_puts: int

    def create(self, key: str, body: bytes) -> bool:
        """Create the object unless the key exists (then leave it): True if this call created it.

        Callers only ever create a key with the one body its outbox fixes, so an existing object
        already holds exactly these bytes.
        """
        ...


class RejectedSink(Protocol):
    def put_rejected(self, batch_id: str, rejections: Sequence[Rejection]) -> None: ...


class DecisionPublisher(Protocol):
    def publish(self, publications: Sequence[Publication]) -> None:
        """Deliver every publication or raise (at-least-once; consumers dedupe on event_id)."""
        ...


class Notifier(Protocol):
    def notify(self, decisions: Sequence[AuditEvent]) -> None: ...


class MetricsSink(Protocol):
    def add(
        self,
        name: str,
        unit: str,
        value: float,
        dimensions: Mapping[str, str] | None = None,
    ) -> None: ...


class Tracing(Protocol):
    def span(self, name: str) -> AbstractContextManager[Any]: ...

    def in_thread(self, fn: Callable[[T], R]) -> Callable[[T], R]:
        """``fn`` wrapped to run in a worker thread under the caller's current span."""
        ...


class NullTracing:
    """Tracing that records nothing (tests, benchmarks, the CLI)."""

    @contextmanager
    def _noop(self) -> Iterator[None]:
        yield

    def span(self, name: str) -> AbstractContextManager[Any]:
        return self._noop()

    def in_thread(self, fn: Callable[[T], R]) -> Callable[[T], R]:
        return fn


class NullPublisher:
    """Kafka publishing switched off (no bootstrap configured): the audit trail keeps everything."""

    def publish(self, publications: Sequence[Publication]) -> None:
        return None
