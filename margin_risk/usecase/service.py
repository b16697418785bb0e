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
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from margin_risk import audit, names
from margin_risk.enforcement import DEFAULT_POLICY, AccountState, Outcome, apply_event
from margin_risk.models import AuditEvent, iso
from margin_risk.outbox import Outbox
from margin_risk.params import PolicyParams
from margin_risk.usecase.decode import decode
from margin_risk.usecase.ports import (
    AuditSink,
    DecisionPublisher,
    MetricsSink,
    Notifier,
    NullTracing,
    RejectedSink,
    StateRepository,
    Tracing,
)
from margin_risk.usecase.records import (
    BatchResult,
    CommitInfo,
    InboundRecord,
    Rejection,
    Topics,
    ValidRecord,
)
from margin_risk.usecase.routing import NOTIFY_TYPES, route

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5


class _Committed:
    """The outcome of a commit attempt that stored the state."""


_COMMITTED = _Committed()
# One commit attempt: stored, the other writer's state (a conflict), or the error it raised.
_Attempt = _Committed | AccountState | Exception


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

    # -- the batch: decode -> decide -> flush -> commit -> emit -> report -----------------------
    def process(self, records: Sequence[InboundRecord]) -> BatchResult:
        batch = audit.batch_id([r.coordinate.key for r in records])
        self.metrics.add(names.METRIC_BATCH_SIZE, "Count", len(records))
        valid, rejected = self._decode(records, batch)
        result = BatchResult.start(batch, len(records), rejected)
        if not valid:
            return self._report(result)
        runs = self._decide(valid)
        if runs is None:
            return self._fail_all(result, valid, [])
        created: list[str] = []
        if not self._flush_before_commit(runs, created):
            return self._fail_all(result, valid, created)
        committed, failed_accounts, late = self._commit_all(runs, result, batch, created)
        failed_accounts += self._emit(committed, created, late)
        result.decisions = [d for run in committed for d in run.decisions]
        result.audit_keys = sorted(created)
        result.accounts_committed = sum(1 for r in committed if r.changed)
        for r in committed:
            for o in r.outcomes:
                result.outcomes[o] += 1
        failed_set = set(failed_accounts)
        result.failed = sorted(v.coordinate for v in valid if v.event.account_id in failed_set)
        self._report_decisions(result, {v.event.event_id: v.origin_ts for v in valid})
        return self._report(result)

    def _decode(
        self, records: Sequence[InboundRecord], batch: str
    ) -> tuple[list[ValidRecord], list[Rejection]]:
        """Valid records, and the rejected ones written to the rejected sink and counted (a sink
        error raises: the whole batch is retried, and the sink's key makes it an overwrite)."""
        valid: list[ValidRecord] = []
        rejected: list[Rejection] = []
        for rec in records:
            decoded = decode(rec)
            if isinstance(decoded, ValidRecord):
                valid.append(decoded)
                continue
            rejected.append(decoded)
            log.warning(
                "record rejected",
                extra={
                    "coordinate": decoded.coordinate.key,
                    "reason_code": decoded.reason_code,
                    "reason": decoded.reason,
                },
            )
        if rejected:
            with self.tracing.span("rejected sink"):
                self.rejected_sink.put_rejected(batch, rejected)
            for rj in rejected:
                self.metrics.add(
                    names.METRIC_RECORDS_REJECTED, "Count", 1, {names.DIM_REASON: rj.reason_code}
                )
        return valid, rejected

    def _decide(self, valid: Sequence[ValidRecord]) -> dict[str, _AccountRun] | None:
        """Each account's records applied to its stored state (None: the state load failed)."""
        by_account = _group(valid)
        try:
            with self.tracing.span("load state"):
                loaded = self.repo.load_many(list(by_account))
        except Exception:
            log.exception("state load failed: the whole batch is retried")
            return None
        return {
            a: self._run_account(loaded.get(a) or AccountState.new(a), recs)
            for a, recs in by_account.items()
        }

    def _flush_before_commit(self, runs: dict[str, _AccountRun], created: list[str]) -> bool:
        """Outboxes that must not wait, then history; False when the batch must be retried.

        An outbox whose records this batch reads again (its invocation failed after its commit)
        is written and published again; one a deciding commit is about to replace on the head
        is written first, so no committed decision can drop out of the trail."""
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
            return False
        return True

    def _commit_all(
        self, runs: dict[str, _AccountRun], result: BatchResult, batch: str, created: list[str]
    ) -> tuple[list[_AccountRun], list[str], list[Outbox]]:
        """The conditional writes: committed runs, failed accounts, and outboxes of conflict
        winners written on the way (to be published)."""
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
                committed.append(final)
        return committed, failed_accounts, late

    def _emit(
        self, committed: Sequence[_AccountRun], created: list[str], late: Sequence[Outbox]
    ) -> list[str]:
        """The audit write of what was committed (one object per account and hour), then the
        publish; returns the accounts whose records must be redelivered to finish either."""
        failed: list[str] = []
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
                failed.append(a)
            else:
                created.extend(made)
                audited.append(own[a])
        try:
            self._publish_outboxes([*audited, *late])
        except Exception:
            log.exception("publish failed after commit: the records' redelivery publishes again")
            failed.extend(b.account_id for b in [*audited, *late])
        return failed

    def _fail_all(
        self, result: BatchResult, valid: Sequence[ValidRecord], created: list[str]
    ) -> BatchResult:
        result.failed = [v.coordinate for v in valid]
        result.audit_keys = sorted(created)
        return self._report(result)

    def _report_decisions(self, result: BatchResult, origin: dict[str, datetime]) -> None:
        """One log line per committed decision under its own correlation id (so the Logs Insights
        trace query finds a margin call in the Lambda's logs, not only in Athena), its metric,
        and its end-to-end latency from the input that triggered it."""
        now = self.clock()
        for d in result.decisions:
            deficiency = float(d.details.deficiency or 0)  # a log field and a metric, not money
            log.info(
                "decision",
                extra={
                    "correlation_id": d.correlation_id,
                    "event_id": d.event_id,
                    "event_type": d.event_type,
                    "account_id": d.account_id,
                    "deficiency": deficiency,
                    "batch_id": result.batch_id,
                },
            )
            self.metrics.add(names.DECISION_METRIC[d.event_type], "Count", 1)
            if d.event_type == names.EVENT_MARGIN_CALL_ISSUED:  # the risk dashboard's $ at risk
                self.metrics.add(names.METRIC_TOTAL_DEFICIENCY, "None", deficiency)
            start = origin.get(d.event_id.rsplit(":", 1)[0], d.timestamp)
            latency_ms = max(0.0, (now - start).total_seconds() * 1000.0)
            self.metrics.add(names.METRIC_E2E_LATENCY, "Milliseconds", latency_ms)

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

    def _report(self, r: BatchResult) -> BatchResult:
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
        return r


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
