"""The enforcement state machine (spec section 3) as a pure function of (state, event).

`apply_event` never mutates its input and never does I/O: the Lambda, `replay` and the local demo
all call it, so they cannot disagree. Decision ids are derived from the triggering event's id, so
a retried batch produces byte-identical audit records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from margin_risk import names
from margin_risk.models import (
    AuditDetails,
    AuditEvent,
    DeskAction,
    EnforcementInput,
    MarginCalc,
    StressResult,
    iso,
)
from margin_risk.money import cents, exact
from margin_risk.params import PolicyParams

DEFAULT_POLICY = PolicyParams()
RECENT_IDS_KEPT = 32
# Desk actions are typed by people: a few a day on an account at most. Their ids are kept apart
# from the margin clock's so a redelivered action is a duplicate however many results came since.
DESK_ACTION_IDS_KEPT = 256


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"


class PathClock(BaseModel):
    """Ordering and idempotency bookkeeping of one path (margin or stress) of one account.

    ``ids_at_last`` holds every event id applied at ``last_ts`` (needed for correctness: a later
    event with the same timestamp is applied, a repeat is not); ``recent_ids`` a bounded tail of
    older ids, only so that a late repeat is counted as a duplicate rather than as stale.
    """

    model_config = ConfigDict(extra="ignore")

    last_ts: datetime | None = None
    ids_at_last: list[str] = Field(default_factory=list)
    recent_ids: list[str] = Field(default_factory=list)

    def classify(self, event_id: str, ts: datetime) -> Outcome:
        if event_id in self.ids_at_last or event_id in self.recent_ids:
            return Outcome.DUPLICATE
        if self.last_ts is not None and ts < self.last_ts:
            return Outcome.STALE
        return Outcome.APPLIED

    def advance(self, event_id: str, ts: datetime) -> None:
        if self.last_ts is None or ts > self.last_ts:
            self.recent_ids = (self.recent_ids + self.ids_at_last)[-RECENT_IDS_KEPT:]
            self.ids_at_last = [event_id]
            self.last_ts = ts
        else:
            self.ids_at_last.append(event_id)


class MarginPath(BaseModel):
    model_config = ConfigDict(extra="ignore")

    clock: PathClock = Field(default_factory=PathClock)
    call_open: bool = False
    call_amount: Decimal | None = None
    call_issued_at: datetime | None = None
    restricted: bool = False
    liquidation_triggered: bool = False
    warning_armed: bool = True
    # The open call's liquidation deadline when the desk extended it (EXTEND_CALL); None: the
    # policy's (issued_at + call_deadline_seconds).
    call_deadline_extended_to: datetime | None = None
    desk_action_ids: list[str] = Field(default_factory=list)


class StressPath(BaseModel):
    model_config = ConfigDict(extra="ignore")

    clock: PathClock = Field(default_factory=PathClock)
    breached: bool = False


class AccountState(BaseModel):
    """Everything enforcement remembers about one account; ``version`` guards concurrent writers."""

    model_config = ConfigDict(extra="ignore")

    account_id: str
    version: int = 0
    margin: MarginPath = Field(default_factory=MarginPath)
    stress: StressPath = Field(default_factory=StressPath)

    @classmethod
    def new(cls, account_id: str) -> AccountState:
        return cls(account_id=account_id)


@dataclass(frozen=True)
class Transition:
    state: AccountState
    decisions: list[AuditEvent]
    outcome: Outcome
    changed: bool = field(default=False)


def decision_id(trigger_event_id: str, event_type: str) -> str:
    """Deterministic id: one decision of a given type per triggering event, ever."""
    return f"{trigger_event_id}:{event_type}"


def _decision(
    event: EnforcementInput,
    event_type: str,
    *,
    deficiency: Decimal,
    excess: Decimal,
    equity: Decimal,
    maintenance_req: Decimal,
    reason: str,
    scenario: Decimal | None = None,
) -> AuditEvent:
    return AuditEvent(
        event_id=decision_id(event.event_id, event_type),
        event_type=event_type,
        account_id=event.account_id,
        timestamp=event.timestamp,
        details=AuditDetails(
            deficiency=cents(deficiency),
            excess=cents(excess),
            equity=cents(equity),
            maintenance_req=cents(maintenance_req),
            scenario=scenario,
            reason=reason,
        ),
        correlation_id=event.correlation_id,
    )


def _apply_margin(m: MarginPath, e: MarginCalc, policy: PolicyParams) -> list[AuditEvent]:
    """Evaluate the ladder top to bottom, each rule against the state the rules above left."""
    if e.excess >= policy.warning_cushion * e.gross:
        m.warning_armed = True
    out: list[AuditEvent] = []
    for rule in _LADDER:
        decision = rule(m, e, policy)
        if decision is not None:
            out.append(decision)
    return out


def _amounts(e: MarginCalc) -> dict[str, Decimal]:
    return {
        "deficiency": e.deficiency,
        "excess": e.excess,
        "equity": e.equity,
        "maintenance_req": e.maintenance_req,
    }


def _open_for(m: MarginPath, e: MarginCalc) -> float:
    """Seconds the open call has been open at the event's time (0 when none is open)."""
    if m.call_open and m.call_issued_at is not None:
        return (e.timestamp - m.call_issued_at).total_seconds()
    return 0.0


def _warning(m: MarginPath, e: MarginCalc, policy: PolicyParams) -> AuditEvent | None:
    cushion = policy.warning_cushion * e.gross
    if m.call_open or not m.warning_armed or not 0 <= e.excess < cushion:
        return None
    m.warning_armed = False
    return _decision(
        e,
        names.EVENT_MARGIN_WARNING,
        reason=(
            f"excess {cents(e.excess)} below warning cushion {cents(cushion)}"
            f" ({policy.warning_cushion:g} x gross)"
        ),
        **_amounts(e),
    )


def _call(m: MarginPath, e: MarginCalc, policy: PolicyParams) -> AuditEvent | None:
    if e.deficiency <= 0 or m.call_open:
        return None
    m.call_open = True
    m.call_amount = e.deficiency
    m.call_issued_at = e.timestamp
    return _decision(
        e,
        names.EVENT_MARGIN_CALL_ISSUED,
        reason=f"deficiency {cents(e.deficiency)}: call issued",
        **_amounts(e),
    )


def _restriction(m: MarginPath, e: MarginCalc, policy: PolicyParams) -> AuditEvent | None:
    open_for = _open_for(m, e)
    if not m.call_open or m.restricted or e.deficiency <= 0:
        return None
    if open_for <= policy.restrict_after_seconds:
        return None
    m.restricted = True
    return _decision(
        e,
        names.EVENT_ACCOUNT_RESTRICTED,
        reason=(
            f"call open {open_for:.0f}s > {policy.restrict_after_seconds:.0f}s"
            f" with deficiency {cents(e.deficiency)}: close-only"
        ),
        **_amounts(e),
    )


def _liquidation(m: MarginPath, e: MarginCalc, policy: PolicyParams) -> AuditEvent | None:
    if m.liquidation_triggered:
        return None
    open_for = _open_for(m, e)
    why = None
    if e.equity < 0:
        why = f"negative equity {cents(e.equity)}"
    elif m.call_open and e.deficiency > 0 and _past_deadline(m, e.timestamp, open_for, policy):
        why = (
            f"call unmet after its deadline {iso(m.call_deadline_extended_to)}"
            f" (extended by the desk)"
            if m.call_deadline_extended_to is not None
            else f"call unmet after {open_for:.0f}s > deadline {policy.call_deadline_seconds:.0f}s"
        )
    elif m.restricted and e.deficiency > policy.liquidation_deficiency_ratio * e.maintenance_req:
        why = (
            f"restricted and deficiency {cents(e.deficiency)} >"
            f" {policy.liquidation_deficiency_ratio:g} x requirement"
        )
    if why is None:
        return None
    m.liquidation_triggered = True
    return _decision(e, names.EVENT_LIQUIDATION_TRIGGERED, reason=why, **_amounts(e))


def _cure(m: MarginPath, e: MarginCalc, policy: PolicyParams) -> AuditEvent | None:
    if not m.call_open or e.deficiency != 0:
        return None
    was_restricted = m.restricted
    close_call(m)
    return _decision(
        e,
        names.EVENT_MARGIN_CALL_MET,
        reason="deficiency cured" + ("; restriction lifted" if was_restricted else ""),
        **_amounts(e),
    )


# The ladder of spec section 3, in the table's order (one event may emit several steps).
_LADDER = (_warning, _call, _restriction, _liquidation, _cure)


def _past_deadline(m: MarginPath, at: datetime, open_for: float, policy: PolicyParams) -> bool:
    """Whether the open call's liquidation deadline has passed: the desk's extension when there
    is one, else ``call_deadline_seconds`` after the call was issued ("longer than": strict)."""
    if m.call_deadline_extended_to is not None:
        return at > m.call_deadline_extended_to
    return open_for > policy.call_deadline_seconds


def call_deadline(m: MarginPath, policy: PolicyParams) -> datetime | None:
    """The open call's liquidation deadline (None without an open call)."""
    if not m.call_open or m.call_issued_at is None:
        return None
    if m.call_deadline_extended_to is not None:
        return m.call_deadline_extended_to
    return m.call_issued_at + timedelta(seconds=policy.call_deadline_seconds)


class OpenCall(Protocol):
    """The call fields an account's margin path and its audit-rebuilt view share."""

    call_open: bool
    call_amount: Decimal | None
    call_issued_at: datetime | None
    call_deadline_extended_to: datetime | None
    restricted: bool
    liquidation_triggered: bool


def close_call(m: OpenCall) -> None:
    """Met or waived: the call, its deadline, a restriction and the liquidation step all reset
    (the state machine and the rebuild from the audit trail apply the same rule)."""
    m.call_open = False
    m.call_amount = None
    m.call_issued_at = None
    m.call_deadline_extended_to = None
    m.restricted = False
    m.liquidation_triggered = False


def _desk_decision(a: DeskAction, event_type: str, m: MarginPath, **extra: object) -> AuditEvent:
    """A decision on a desk action: the call's amount (if one is open), who and why."""
    details: dict[str, object] = {
        "deficiency": None if m.call_amount is None else cents(m.call_amount),
        "reason": a.reason,
        "operator": a.operator,
        "action": a.action,
        "action_id": a.action_id,
    }
    if a.until is not None:
        details["until"] = iso(a.until)
    details.update(extra)
    return AuditEvent(
        event_id=decision_id(a.action_id, event_type),
        event_type=event_type,
        account_id=a.account_id,
        timestamp=a.timestamp,
        details=AuditDetails.model_validate(details),
        correlation_id=a.correlation_id,
    )


def _rejected(a: DeskAction, m: MarginPath, why: str) -> list[AuditEvent]:
    return [_desk_decision(a, names.EVENT_DESK_ACTION_REJECTED, m, rejection=why)]


def _apply_desk(
    m: MarginPath, a: DeskAction, policy: PolicyParams, known: bool
) -> list[AuditEvent]:
    """EXTEND_CALL / WAIVE_CALL on the margin path's state (its clock already advanced);
    ``known``: the margin path had seen anything before this action."""
    if not m.call_open:
        return _rejected(
            a, m, "no open call on this account" if known else "unknown account: no margin result"
        )
    if a.action == names.DESK_ACTION_WAIVE:
        was_restricted = m.restricted
        decision = _desk_decision(
            a, names.EVENT_MARGIN_CALL_WAIVED, m, restriction_lifted=was_restricted
        )
        close_call(m)
        return [decision]
    until = a.until
    if until is None:  # the model requires it; kept for the type checker
        return _rejected(a, m, "EXTEND_CALL without until")
    if m.liquidation_triggered:
        return _rejected(a, m, "liquidation already triggered for this call")
    deadline = call_deadline(m, policy)
    if deadline is not None and until <= deadline:
        return _rejected(
            a, m, f"until {iso(until)} is not after the call's deadline {iso(deadline)}"
        )
    m.call_deadline_extended_to = until
    return [
        _desk_decision(
            a,
            names.EVENT_MARGIN_CALL_EXTENDED,
            m,
            previous_deadline=None if deadline is None else iso(deadline),
        )
    ]


def _apply_stress(s: StressPath, e: StressResult) -> list[AuditEvent]:
    if e.worst_deficiency <= 0:
        s.breached = False
        return []
    if s.breached:
        return []
    s.breached = True
    worst = e.worst()
    return [
        _decision(
            e,
            names.EVENT_STRESS_BREACH,
            deficiency=e.worst_deficiency,
            excess=worst.stressed_equity - worst.stressed_maintenance_req,
            equity=worst.stressed_equity,
            maintenance_req=worst.stressed_maintenance_req,
            scenario=e.worst_scenario,
            reason=f"stressed deficiency {cents(e.worst_deficiency)} at SPY {e.worst_scenario:+g}",
        )
    ]


@exact
def apply_event(
    state: AccountState, event: EnforcementInput, policy: PolicyParams = DEFAULT_POLICY
) -> Transition:
    """Apply one margin or stress result or desk action; duplicates and stale results change
    nothing."""
    if event.account_id != state.account_id:
        raise ValueError(f"event for {event.account_id} applied to state of {state.account_id}")
    if isinstance(event, DeskAction):
        return _apply_action(state, event, policy)
    path = state.stress if isinstance(event, StressResult) else state.margin
    outcome = path.clock.classify(event.event_id, event.timestamp)
    if outcome is not Outcome.APPLIED:
        return Transition(state, [], outcome, changed=False)

    new = _copy_for_update(state, stress=isinstance(event, StressResult))
    if isinstance(event, StressResult):
        new.stress.clock.advance(event.event_id, event.timestamp)
        decisions = _apply_stress(new.stress, event)
    else:
        new.margin.clock.advance(event.event_id, event.timestamp)
        decisions = _apply_margin(new.margin, event, policy)
    return Transition(new, decisions, outcome, changed=True)


def _apply_action(state: AccountState, a: DeskAction, policy: PolicyParams) -> Transition:
    """A desk action, on the margin path's clock (so it is ordered with the margin results).

    A repeat of an ``action_id`` changes nothing. An action older than the margin path's last
    result is not applied (the desk acted on a state that has moved on since) but, unlike a stale
    result, it is never dropped silently: it is audited as ``DESK_ACTION_REJECTED``.
    """
    m = state.margin
    if a.action_id in m.desk_action_ids or m.clock.classify(a.action_id, a.timestamp) is (
        Outcome.DUPLICATE
    ):
        return Transition(state, [], Outcome.DUPLICATE, changed=False)
    new = _copy_for_update(state, stress=False)
    nm = new.margin
    nm.desk_action_ids = [*nm.desk_action_ids, a.action_id][-DESK_ACTION_IDS_KEPT:]
    last = m.clock.last_ts
    if last is not None and a.timestamp < last:
        why = f"stale: the account's margin was last evaluated at {iso(last)}, after this action"
        return Transition(new, _rejected(a, nm, why), Outcome.APPLIED, changed=True)
    nm.clock.advance(a.action_id, a.timestamp)
    decisions = _apply_desk(nm, a, policy, known=last is not None)
    return Transition(new, decisions, Outcome.APPLIED, changed=True)


def _copy_for_update(state: AccountState, stress: bool) -> AccountState:
    """A copy of ``state`` whose ``stress`` (else ``margin``) path and its clock's id lists are
    new objects: all that applying one event mutates. The other path is shared, never changed.

    A deep copy of the whole state per record was half of the handler's time (cProfile, 1,000-
    record batches with in-memory ports); every other field is an immutable value.
    """
    path: MarginPath | StressPath = state.stress if stress else state.margin
    clock = path.clock.model_copy(
        update={
            "ids_at_last": list(path.clock.ids_at_last),
            "recent_ids": list(path.clock.recent_ids),
        }
    )
    new_path = path.model_copy(update={"clock": clock})
    return state.model_copy(update={"stress" if stress else "margin": new_path})


@dataclass
class ReplayResult:
    decisions: list[AuditEvent]
    states: dict[str, AccountState]
    counts: dict[Outcome, int]


def replay(
    events: Iterable[EnforcementInput],
    policy: PolicyParams = DEFAULT_POLICY,
    states: dict[str, AccountState] | None = None,
) -> ReplayResult:
    """Feed events in the given order through `apply_event` with in-memory state."""
    book: dict[str, AccountState] = {} if states is None else states
    decisions: list[AuditEvent] = []
    counts = dict.fromkeys(Outcome, 0)
    for ev in events:
        st = book.get(ev.account_id) or AccountState.new(ev.account_id)
        t = apply_event(st, ev, policy)
        counts[t.outcome] += 1
        book[ev.account_id] = t.state
        decisions.extend(t.decisions)
    return ReplayResult(decisions, book, counts)
