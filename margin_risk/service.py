"""Batch processing of the enforcement function, behind ports so it runs against AWS or fakes.

One call of `EnforcementService.process` handles one MSK batch: decode and validate every record
(bad ones go to the rejected sink, never retried), apply `enforcement.apply_event` per account in
partition order, then do the side effects in the order that keeps the write-once audit trail true:

1. outboxes that must not wait: one whose records this batch reads again (its invocation failed
   after committing) is written and published again; one a deciding commit will replace is written,
2. the heads it loaded copied to history (so history only ever holds committed versions),
3. one conditional write per account touched (the commit point; version-guarded), storing the
   commit's decisions on the head as its audit outbox (`margin_risk.outbox`),
4. the committed decisions' audit objects, keyed by account and committed version, created once,
5. decisions to Kafka and new calls / liquidations to the operator topic (deterministic ids).

A decision is therefore in the trail only once its state change is committed, and nothing in the
trail is ever deleted or rewritten. A failure before the commit fails every valid record of the
batch; a failure at or after the commit fails only that account's records, whose redelivery finds
them applied (duplicates that change nothing) and finishes the audit write and the publish from the
outbox. No boto3 here: adapters implement the ports (`margin_risk.adapters`), tests and benchmarks
use in-memory fakes.
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
from margin_risk.outbox import Outbox
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
    """What the head item records about the batch that wrote it (copied into history later), and
    the audit outbox it stores with the state: this commit's decisions, or, when it decided
    nothing, the outbox of the head it replaces (carried until a deciding commit replaces it)."""

    batch_id: str
    decision_ids: tuple[str, ...]
    committed_at: datetime
    outbox: Outbox | None = None


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


def for_order_management(d: AuditEvent, restricted_met: set[str]) -> bool:
    """Whether order management must hear of ``d`` (``restrictions.v1``): a restriction, and
    anything that lifts one: a cure of a restricted account (its id in ``restricted_met``, since a
    cure's decision does not say whether the account was restricted) or a waiver that lifted one
    (which says so itself, ``details.restriction_lifted``)."""
    if d.event_type == names.EVENT_ACCOUNT_RESTRICTED or d.event_id in restricted_met:
        return True
    lifted = getattr(d.details, "restriction_lifted", False) is True
    return d.event_type == names.EVENT_MARGIN_CALL_WAIVED and lifted


def route(
    decisions: Sequence[AuditEvent], restricted_met: set[str], topics: Topics
) -> list[Publication]:
    """Spec section 4: every decision to margin.calls.v1, plus restrictions and liquidations."""
    out: list[Publication] = []
    for d in decisions:
        out.append(Publication(topics.decisions, d))
        if for_order_management(d, restricted_met):
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
        created: list[str] = []
        # Outboxes to write before anything is committed over them: one whose records this batch
        # reads again (its invocation failed after its commit: write and publish it again), and
        # one that a deciding commit is about to replace on the head.
        flush: dict[str, tuple[Outbox, bool]] = {}
        for a, run in runs.items():
            box = self.repo.outbox(a)
            if box is None:
                continue
            if box.redelivered(_coordinates(run.records)):
                flush[a] = (box, True)
            elif run.changed and run.decisions:
                flush[a] = (box, False)
        try:
            if flush:
                with self.tracing.span("audit outboxes"):
                    written = self._write_outboxes([box for box, _ in flush.values()])
                again: list[Outbox] = []
                for a, (box, redelivered) in flush.items():
                    made = written[a]
                    if isinstance(made, Exception):
                        raise made
                    created.extend(made)
                    # A created object was never written before, so never published either.
                    if redelivered or made:
                        again.append(box)
                self._publish_outboxes(again)
            to_archive = [a for a, r in runs.items() if r.changed and r.base.version > 0]
            if self.history_enabled and to_archive:
                with self.tracing.span("history"):
                    self.repo.archive(to_archive)
        except Exception:
            log.exception("outbox, publish or history failed before commit: batch retried")
            result.failed = [v.coordinate for v in valid]
            result.audit_keys = sorted(created)
            self._emit_counts(result)
            return result

        with self.tracing.span("commit states"):
            firsts = self._first_commits([r for r in runs.values() if r.changed], batch)
        committed: list[_AccountRun] = []
        failed_accounts: list[str] = []
        late: list[Outbox] = []
        for a, run in runs.items():
            final = self._commit(run, result, batch, created, late, firsts.get(a))
            if final is None:
                failed_accounts.append(a)
            else:
                runs[a] = final
                committed.append(final)

        # The audit write of what was committed, one object per account and hour; then publish.
        own = {r.account_id: self._own_outbox(r) for r in committed if r.changed and r.decisions}
        with self.tracing.span("audit put"):
            written = self._write_outboxes(list(own.values()))
        audited: list[Outbox] = []
        for a, made in written.items():
            if isinstance(made, Exception):
                log.error(
                    "audit write failed after commit: the records' redelivery writes it",
                    exc_info=made,
                    extra={"account_id": a},
                )
                failed_accounts.append(a)
            else:
                created.extend(made)
                audited.append(own[a])
        try:
            self._publish_outboxes(audited + late)
        except Exception:
            log.exception("publish failed after commit: the records' redelivery publishes again")
            failed_accounts.extend(b.account_id for b in audited + late)

        final_decisions = [d for run in committed for d in run.decisions]
        result.decisions = final_decisions
        result.audit_keys = sorted(created)
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
                    "deficiency": float(d.details.deficiency or 0),  # a log field, not money
                    "batch_id": result.batch_id,
                },
            )
            self.metrics.add(names.DECISION_METRIC[d.event_type], "Count", 1)
            if d.event_type == names.EVENT_MARGIN_CALL_ISSUED:  # the risk dashboard's $ at risk
                self.metrics.add(
                    names.METRIC_TOTAL_DEFICIENCY, "None", float(d.details.deficiency or 0)
                )
            trigger = d.event_id.rsplit(":", 1)[0]
            start = origin.get(trigger, d.timestamp)
            latency_ms = max(0.0, (now - start).total_seconds() * 1000.0)
            self.metrics.add(names.METRIC_E2E_LATENCY, "Milliseconds", latency_ms)
        self._emit_counts(result)
        return result

    def _own_outbox(self, run: _AccountRun) -> Outbox:
        """The outbox of this run's commit: its decisions, keyed by the version it commits."""
        return Outbox.of(
            run.account_id,
            run.state.version,
            run.decisions,
            (d.event_id for d in run.restrictions),
            _coordinates(run.records),
        )

    def _write_outboxes(self, boxes: Sequence[Outbox]) -> dict[str, list[str] | Exception]:
        """Create each outbox's objects, up to the sink's ``max_concurrent_puts`` accounts at a
        time; per account the keys this call created, or the error it raised."""

        def write(box: Outbox) -> tuple[str, list[str] | Exception]:
            try:
                objects = box.objects(self.audit_prefix)
                made = [k for k, body in objects.items() if self.audit_sink.create(k, body)]
            except Exception as exc:
                return box.account_id, exc
            return box.account_id, made

        workers = min(len(boxes), max(1, self.audit_sink.max_concurrent_puts))
        if workers <= 1:
            return dict(map(write, boxes))
        with ThreadPoolExecutor(workers, thread_name_prefix="audit") as pool:
            return dict(pool.map(self.tracing.in_thread(write), boxes))

    def _publish_outboxes(self, boxes: Sequence[Outbox]) -> None:
        """Decisions to Kafka (at least once: consumers dedupe on event_id), and new calls and
        liquidations to the operator topic."""
        decisions = [d for b in boxes for d in b.decisions()]
        if not decisions:
            return
        restricted_met = {i for b in boxes for i in b.restricted_met}
        with self.tracing.span("kafka publish"):
            self.publisher.publish(route(decisions, restricted_met, self.topics))
        notify = [d for d in decisions if d.event_type in NOTIFY_TYPES]
        if notify:
            with self.tracing.span("sns publish"):
                self.notifier.notify(notify)

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
        box = self._own_outbox(run) if run.decisions else self.repo.outbox(run.account_id)
        return CommitInfo(batch, tuple(d.event_id for d in run.decisions), self.clock(), box)

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
        result: BatchResult,
        batch: str,
        created: list[str],
        late: list[Outbox],
        first: _Attempt | None = None,
    ) -> _AccountRun | None:
        """Conditional write (``first``: its outcome when already attempted); on a conflict
        re-apply on the stored item, after writing the winner's outbox if this run would replace
        it (objects it created go to ``created``, that outbox to ``late`` to be published).
        None: failed."""
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
                box = self.repo.outbox(run.account_id)
                if box is not None and run.changed and run.decisions:
                    made = self._write_outboxes([box])[run.account_id]
                    if isinstance(made, Exception):
                        raise made
                    created.extend(made)
                    if made:
                        late.append(box)
                if self.history_enabled and run.changed:
                    self.repo.archive([run.account_id])  # the winner's head, as it was committed
            except Exception:
                log.exception(
                    "outbox/history failed after conflict", extra={"account_id": run.account_id}
                )
                return None
        return run

    def _emit_counts(self, r: BatchResult) -> None:
        m = self.metrics
        m.add(names.METRIC_RECORDS_PROCESSED, "Count", sum(r.outcomes.values()))
        m.add(names.METRIC_STALE_EVENTS, "Count", r.outcomes[Outcome.STALE])
        m.add(names.METRIC_DUPLICATE_EVENTS, "Count", r.outcomes[Outcome.DUPLICATE])
        m.add(names.METRIC_RECORDS_FAILED, "Count", len(r.failed))
        if r.audit_keys:
            m.add(names.METRIC_AUDIT_OBJECTS, "Count", len(r.audit_keys))
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


def _coordinates(records: Sequence[ValidRecord]) -> list[tuple[str, int, int]]:
    return [(r.coordinate.topic, r.coordinate.partition, r.coordinate.offset) for r in records]


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
