"""Batch processing of the enforcement function, behind ports so it runs against AWS or fakes.

One call of `EnforcementService.process` handles one MSK batch: decode and validate every record
(bad ones go to the rejected sink, never retried), apply `enforcement.apply_event` per account in
partition order, then do the side effects in the order that keeps a retry safe:

1. the audit object(s) for the batch (deterministic key: a retry overwrites),
2. decisions to Kafka and new calls / liquidations to the operator topic (deterministic ids),
3. the heads it loaded copied to history (so history only ever holds committed versions),
4. one conditional write per account touched (the commit point; version-guarded),
5. a rewrite of the audit object if a conflict or a failed commit changed what was committed.

A failure before the commit fails every valid record of the batch; a failure at the commit fails
only that account's records. Either way the retry recomputes the same ids and keys, and records an
account has already applied are duplicates that change nothing. No boto3 here: adapters implement
the ports (`margin_risk.adapters`), tests and benchmarks use in-memory fakes.
"""

from __future__ import annotations

import heapq
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from margin_risk import audit, names, untrusted
from margin_risk.enforcement import DEFAULT_POLICY, AccountState, Outcome, apply_event
from margin_risk.models import (
    AuditEvent,
    EnforcementInput,
    describe_error,
    iso,
    parse_enforcement_input,
    reason_code,
)
from margin_risk.params import PolicyParams

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5
T = TypeVar("T")
R = TypeVar("R")


class _Committed:
    """The outcome of a commit attempt that stored the state."""


_COMMITTED = _Committed()
# One commit attempt: stored, the other writer's state (a conflict), or the error it raised.
_Attempt = _Committed | AccountState | Exception
NOTIFY_TYPES = frozenset({names.EVENT_MARGIN_CALL_ISSUED, names.EVENT_LIQUIDATION_TRIGGERED})


# --- Records -----------------------------------------------------------------------------------
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


def _parse_ts(value: object) -> datetime | None:
    """``origin_ts`` (latency telemetry only): strict like every timestamp, None when unusable."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        return untrusted.parse_timestamp(value)
    except ValueError:
        return None


def decode(record: InboundRecord) -> ValidRecord | Rejection:
    """Validate one record into a margin/stress model, or say exactly why not.

    Every way a record can be wrong ends here as a `Rejection` (see `margin_risk.untrusted`), so
    one hostile record can never fail the batch that carries valid ones.
    """
    c = record.coordinate
    raw_text = "" if record.value is None else record.value.decode("utf-8", "replace")
    if record.envelope_error is not None or record.value is None:
        why = record.envelope_error or "record has no value"
        return Rejection(c, "malformed_record", why, raw_text)
    try:
        raw = untrusted.load_object(record.value, untrusted.MAX_RECORD_BYTES)
        event = parse_enforcement_input(raw)
    except untrusted.Rejected as e:
        return Rejection(c, e.code, e.reason, raw_text)
    except ValidationError as e:
        return Rejection(c, reason_code(e), describe_error(e), raw_text)
    origin = (
        _parse_ts(raw.get("origin_ts"))
        or _parse_ts(record.headers.get(names.HEADER_ORIGIN_TS))
        or event.timestamp
    )
    return ValidRecord(c, event, origin)


# --- Ports -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CommitInfo:
    """What the head item records about the batch that wrote it (copied into history later)."""

    batch_id: str
    decision_ids: tuple[str, ...]
    committed_at: datetime


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
    def put_objects(self, objects: Mapping[str, bytes]) -> None: ...

    def delete_objects(self, keys: Sequence[str]) -> None: ...


class RejectedSink(Protocol):
    def put_rejected(self, batch_id: str, rejections: Sequence[Rejection]) -> None: ...


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


@dataclass(frozen=True)
class Topics:
    decisions: str = names.TOPIC_MARGIN_CALLS
    restrictions: str = names.TOPIC_RESTRICTIONS
    liquidations: str = names.TOPIC_LIQUIDATIONS


# --- Results -----------------------------------------------------------------------------------
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


@dataclass
class _AccountRun:
    account_id: str
    records: list[ValidRecord]
    base: AccountState
    state: AccountState
    decisions: list[AuditEvent]
    restrictions: list[AuditEvent]
    outcomes: list[Outcome]
    changed: bool


def route(
    decisions: Sequence[AuditEvent], restricted_met: set[str], topics: Topics
) -> list[Publication]:
    """Spec section 4: every decision to margin.calls.v1, plus restrictions and liquidations."""
    out: list[Publication] = []
    for d in decisions:
        out.append(Publication(topics.decisions, d))
        if d.event_type == names.EVENT_ACCOUNT_RESTRICTED or d.event_id in restricted_met:
            out.append(Publication(topics.restrictions, d))
        if d.event_type == names.EVENT_LIQUIDATION_TRIGGERED:
            out.append(Publication(topics.liquidations, d))
    return out


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EnforcementService:
    """Applies MSK batches to account state with the side-effect order described above."""

    def __init__(
        self,
        *,
        repo: StateRepository,
        audit_sink: AuditSink,
        rejected_sink: RejectedSink,
        publisher: DecisionPublisher,
        notifier: Notifier,
        metrics: MetricsSink,
        tracing: Tracing | None = None,
        policy: PolicyParams = DEFAULT_POLICY,
        audit_prefix: str = names.AUDIT_PREFIX,
        topics: Topics | None = None,
        history_enabled: bool = True,
        clock: Any = _utcnow,
    ) -> None:
        self.repo = repo
        self.audit_sink = audit_sink
        self.rejected_sink = rejected_sink
        self.publisher = publisher
        self.notifier = notifier
        self.metrics = metrics
        self.tracing = tracing or NullTracing()
        self.policy = policy
        self.audit_prefix = audit_prefix
        self.topics = topics or Topics()
        self.history_enabled = history_enabled
        self.clock = clock

    # -- per account ---------------------------------------------------------------------------
    def _run_account(self, base: AccountState, records: list[ValidRecord]) -> _AccountRun:
        state = base
        decisions: list[AuditEvent] = []
        restricted_met: list[AuditEvent] = []
        outcomes: list[Outcome] = []
        changed = False
        # One span per account, not per record: a 1,000-record batch made 1,000 subsegments, and
        # a subsegment costs even with tracing off (~15% of the handler with in-memory ports).
        with self.tracing.span(f"account {base.account_id} ({len(records)} records)"):
            for r in records:
                was_restricted = state.margin.restricted
                t = apply_event(state, r.event, self.policy)
                outcomes.append(t.outcome)
                if t.outcome is Outcome.APPLIED:
                    changed = changed or t.changed
                    state = t.state
                    decisions.extend(t.decisions)
                    if was_restricted:
                        restricted_met.extend(
                            d for d in t.decisions if d.event_type == names.EVENT_MARGIN_CALL_MET
                        )
                else:
                    log.info(
                        "record not applied",
                        extra={
                            "outcome": t.outcome.value,
                            "coordinate": r.coordinate.key,
                            "event_id": r.event.event_id,
                            "correlation_id": r.event.correlation_id,
                        },
                    )
        if changed:
            state = state.model_copy(update={"version": base.version + 1})
        return _AccountRun(
            base.account_id, records, base, state, decisions, restricted_met, outcomes, changed
        )

    # -- the batch -----------------------------------------------------------------------------
    def process(self, records: Sequence[InboundRecord]) -> BatchResult:
        coords = [r.coordinate for r in records]
        batch = audit.batch_id([c.key for c in coords])
        self.metrics.add(names.METRIC_BATCH_SIZE, "Count", len(records))

        valid: list[ValidRecord] = []
        rejected: list[Rejection] = []
        for rec in records:
            decoded = decode(rec)
            if isinstance(decoded, Rejection):
                rejected.append(decoded)
                log.warning(
                    "record rejected",
                    extra={
                        "coordinate": decoded.coordinate.key,
                        "reason_code": decoded.reason_code,
                        "reason": decoded.reason,
                    },
                )
            else:
                valid.append(decoded)
        if rejected:
            # Raises on an AWS error: the whole batch is retried, the key makes it an overwrite.
            with self.tracing.span("rejected sink"):
                self.rejected_sink.put_rejected(batch, rejected)
            for rj in rejected:
                self.metrics.add(
                    names.METRIC_RECORDS_REJECTED, "Count", 1, {names.DIM_REASON: rj.reason_code}
                )

        result = BatchResult(
            batch_id=batch,
            records=len(records),
            decisions=[],
            rejected=rejected,
            failed=[],
            outcomes=dict.fromkeys(Outcome, 0),
            accounts_committed=0,
            conflicts=0,
            audit_keys=[],
        )
        if not valid:
            self._emit_counts(result)
            return result

        by_account = _group(valid)
        try:
            with self.tracing.span("load state"):
                loaded = self.repo.load_many(list(by_account))
        except Exception:
            log.exception("state load failed: the whole batch is retried")
            result.failed = [v.coordinate for v in valid]
            self._emit_counts(result)
            return result

        runs = {
            a: self._run_account(loaded.get(a) or AccountState.new(a), recs)
            for a, recs in by_account.items()
        }
        origin = {v.event.event_id: v.origin_ts for v in valid}
        all_decisions = [d for run in runs.values() for d in run.decisions]
        written: dict[str, bytes] = {}
        published: set[str] = set()
        try:
            written = audit.audit_objects(all_decisions, batch, self.audit_prefix)
            if written:
                with self.tracing.span("audit put"):
                    self.audit_sink.put_objects(written)
            self._publish(runs.values(), published)
            to_archive = [a for a, r in runs.items() if r.changed and r.base.version > 0]
            if self.history_enabled and to_archive:
                with self.tracing.span("history"):
                    self.repo.archive(to_archive)
        except Exception:
            log.exception("audit, publish or history failed before commit: batch retried")
            self._cleanup(list(written))
            result.failed = [v.coordinate for v in valid]
            self._emit_counts(result)
            return result

        with self.tracing.span("commit states"):
            firsts = self._first_commits([r for r in runs.values() if r.changed], batch)
        committed: list[_AccountRun] = []
        failed_accounts: list[str] = []
        for a, run in runs.items():
            final = self._commit(run, published, result, batch, firsts.get(a))
            if final is None:
                failed_accounts.append(a)
            else:
                runs[a] = final
                committed.append(final)

        final_decisions = [d for run in committed for d in run.decisions]
        final_objects = audit.audit_objects(final_decisions, batch, self.audit_prefix)
        try:
            if final_objects != written:
                with self.tracing.span("audit rewrite"):
                    if final_objects:
                        self.audit_sink.put_objects(final_objects)
                    stale = [k for k in written if k not in final_objects]
                    if stale:
                        self.audit_sink.delete_objects(stale)
        except Exception:
            # The state is committed; a retry finds duplicates and changes nothing. The audit
            # object still holds the first computation, whose ids a reader dedupes on.
            log.exception("audit rewrite failed after commit")

        result.decisions = final_decisions
        result.audit_keys = sorted(final_objects)
        result.accounts_committed = sum(1 for r in committed if r.changed)
        for r in committed:
            for o in r.outcomes:
                result.outcomes[o] += 1
        failed_set = set(failed_accounts)
        result.failed = sorted(v.coordinate for v in valid if v.event.account_id in failed_set)
        now = self.clock()
        for d in final_decisions:
            # One line per committed decision under its own correlation id, so the Logs
            # Insights trace query finds a margin call in the Lambda's logs, not only in Athena.
            log.info(
                "decision",
                extra={
                    "correlation_id": d.correlation_id,
                    "event_id": d.event_id,
                    "event_type": d.event_type,
                    "account_id": d.account_id,
                    "deficiency": float(d.details.deficiency),  # a log field, not money
                    "batch_id": result.batch_id,
                },
            )
            self.metrics.add(names.DECISION_METRIC[d.event_type], "Count", 1)
            if d.event_type == names.EVENT_MARGIN_CALL_ISSUED:  # the risk dashboard's $ at risk
                self.metrics.add(names.METRIC_TOTAL_DEFICIENCY, "None", float(d.details.deficiency))
            trigger = d.event_id.rsplit(":", 1)[0]
            start = origin.get(trigger, d.timestamp)
            latency_ms = max(0.0, (now - start).total_seconds() * 1000.0)
            self.metrics.add(names.METRIC_E2E_LATENCY, "Milliseconds", latency_ms)
        if result.audit_keys:
            self.metrics.add(names.METRIC_AUDIT_OBJECTS, "Count", len(result.audit_keys))
        self._emit_counts(result)
        return result

    def _publish(self, runs: Any, published: set[str]) -> None:
        """Publish decisions not yet published in this invocation (conflict re-runs add some)."""
        fresh = [d for run in runs for d in run.decisions if d.event_id not in published]
        if not fresh:
            return
        restricted_met = {d.event_id for run in runs for d in run.restrictions}
        with self.tracing.span("kafka publish"):
            self.publisher.publish(route(fresh, restricted_met, self.topics))
        notify = [d for d in fresh if d.event_type in NOTIFY_TYPES]
        if notify:
            with self.tracing.span("sns publish"):
                self.notifier.notify(notify)
        published.update(d.event_id for d in fresh)

    def _first_commits(self, runs: list[_AccountRun], batch: str) -> dict[str, _Attempt]:
        """The first conditional write of every changed account, up to the repository's
        ``max_concurrent_commits`` at a time: the accounts are distinct items, so the writes are
        independent, and one after the other they were the batch's longest step (one network
        round trip per account). Conflicts and failures are handled afterwards, in order."""
        jobs = [(r, self._commit_info(r, batch)) for r in runs]  # the clock is read here

        def attempt(job: tuple[_AccountRun, CommitInfo]) -> tuple[str, _Attempt]:
            return job[0].account_id, self._try_commit(*job)

        workers = min(len(runs), max(1, self.repo.max_concurrent_commits))
        if workers <= 1:
            return dict(map(attempt, jobs))
        with ThreadPoolExecutor(workers, thread_name_prefix="commit") as pool:
            return dict(pool.map(self.tracing.in_thread(attempt), jobs))

    def _commit_info(self, run: _AccountRun, batch: str) -> CommitInfo:
        return CommitInfo(batch, tuple(d.event_id for d in run.decisions), self.clock())

    def _try_commit(self, run: _AccountRun, info: CommitInfo) -> _Attempt:
        """One conditional write; errors are returned, to be reported in the handler's thread."""
        try:
            stored = self.repo.commit(run.state, run.base.version, info)
        except Exception as exc:
            return exc
        return _COMMITTED if stored is None else stored

    def _commit(
        self,
        run: _AccountRun,
        published: set[str],
        result: BatchResult,
        batch: str,
        first: _Attempt | None = None,
    ) -> _AccountRun | None:
        """Conditional write (``first``: its outcome when already attempted); on a conflict
        re-apply on the stored item. None: failed."""
        attempts = 0
        outcome = first
        while run.changed:
            if outcome is None:
                with self.tracing.span(f"commit {run.account_id}"):
                    outcome = self._try_commit(run, self._commit_info(run, batch))
            if isinstance(outcome, Exception):
                log.error(
                    "state commit failed", exc_info=outcome, extra={"account_id": run.account_id}
                )
                return None
            if isinstance(outcome, _Committed):
                return run
            current = outcome
            outcome = None
            attempts += 1
            result.conflicts += 1
            self.metrics.add(names.METRIC_STATE_CONFLICTS, "Count", 1)
            log.warning(
                "version conflict: re-applying on the stored state",
                extra={"account_id": run.account_id, "stored_version": current.version},
            )
            if attempts > MAX_CONFLICT_RETRIES:
                return None
            run = self._run_account(current, run.records)
            try:
                self._publish([run], published)
                if self.history_enabled and run.changed:
                    self.repo.archive([run.account_id])  # the winner's head, as it was committed
            except Exception:
                log.exception(
                    "publish/history failed after conflict", extra={"account_id": run.account_id}
                )
                return None
        return run

    def _cleanup(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            self.audit_sink.delete_objects(keys)
        except Exception:
            log.exception("could not remove the uncommitted audit object(s); a retry overwrites")

    def _emit_counts(self, r: BatchResult) -> None:
        m = self.metrics
        m.add(names.METRIC_RECORDS_PROCESSED, "Count", sum(r.outcomes.values()))
        m.add(names.METRIC_STALE_EVENTS, "Count", r.outcomes[Outcome.STALE])
        m.add(names.METRIC_DUPLICATE_EVENTS, "Count", r.outcomes[Outcome.DUPLICATE])
        m.add(names.METRIC_RECORDS_FAILED, "Count", len(r.failed))
        log.info(
            "batch done",
            extra={
                "batch_id": r.batch_id,
                "records": r.records,
                "decisions": len(r.decisions),
                "rejected": len(r.rejected),
                "failed": len(r.failed),
                "outcomes": {k.value: v for k, v in r.outcomes.items()},
                "conflicts": r.conflicts,
                "at": iso(self.clock()),
            },
        )


def _group(valid: Sequence[ValidRecord]) -> dict[str, list[ValidRecord]]:
    """Per account: each topic-partition in offset order, partitions merged by event time.

    Within a partition the delivery order is kept (so an out-of-order record is seen as stale,
    exactly as `replay` sees it); margin and stress records of one account arrive on two topics
    and are interleaved by event time, which only orders their decisions (the paths are separate).
    """
    per: dict[str, dict[tuple[str, int], list[ValidRecord]]] = {}
    for v in valid:
        c = v.coordinate
        per.setdefault(v.event.account_id, {}).setdefault((c.topic, c.partition), []).append(v)
    out: dict[str, list[ValidRecord]] = {}
    for account, parts in per.items():
        lists = [
            sorted(recs, key=lambda r: r.coordinate.offset) for _, recs in sorted(parts.items())
        ]
        out[account] = list(heapq.merge(*lists, key=lambda r: r.event.timestamp))
    return out
