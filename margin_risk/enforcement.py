"""The enforcement state machine (spec section 3) as a pure function of (state, event).

`apply_event` never mutates its input and never does I/O: the Lambda, `replay` and the local demo
all call it, so they cannot disagree. Decision ids are derived from the triggering event's id, so
a retried batch produces byte-identical audit records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from margin_risk import names
from margin_risk.models import (
    AuditDetails,
    AuditEvent,
    EnforcementInput,
    MarginCalc,
    StressResult,
)
from margin_risk.money import cents, exact
from margin_risk.params import PolicyParams

DEFAULT_POLICY = PolicyParams()
RECENT_IDS_KEPT = 32


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
    out: list[AuditEvent] = []
    amounts = {
        "deficiency": e.deficiency,
        "excess": e.excess,
        "equity": e.equity,
        "maintenance_req": e.maintenance_req,
    }
    cushion = policy.warning_cushion * e.gross
    if e.excess >= cushion:
        m.warning_armed = True

    if not m.call_open and m.warning_armed and 0 <= e.excess < cushion:
        m.warning_armed = False
        out.append(
            _decision(
                e,
                names.EVENT_MARGIN_WARNING,
                reason=(
                    f"excess {cents(e.excess)} below warning cushion {cents(cushion)}"
                    f" ({policy.warning_cushion:g} x gross)"
                ),
                **amounts,
            )
        )

    if e.deficiency > 0 and not m.call_open:
        m.call_open = True
        m.call_amount = e.deficiency
        m.call_issued_at = e.timestamp
        out.append(
            _decision(
                e,
                names.EVENT_MARGIN_CALL_ISSUED,
                reason=f"deficiency {cents(e.deficiency)}: call issued",
                **amounts,
            )
        )

    open_for = (
        (e.timestamp - m.call_issued_at).total_seconds()
        if m.call_open and m.call_issued_at is not None
        else 0.0
    )
    if (
        m.call_open
        and not m.restricted
        and e.deficiency > 0
        and open_for > policy.restrict_after_seconds
    ):
        m.restricted = True
        out.append(
            _decision(
                e,
                names.EVENT_ACCOUNT_RESTRICTED,
                reason=(
                    f"call open {open_for:.0f}s > {policy.restrict_after_seconds:.0f}s"
                    f" with deficiency {cents(e.deficiency)}: close-only"
                ),
                **amounts,
            )
        )

    if not m.liquidation_triggered:
        why = None
        if e.equity < 0:
            why = f"negative equity {cents(e.equity)}"
        elif m.call_open and e.deficiency > 0 and open_for > policy.call_deadline_seconds:
            why = f"call unmet after {open_for:.0f}s > deadline {policy.call_deadline_seconds:.0f}s"
        elif (
            m.restricted and e.deficiency > policy.liquidation_deficiency_ratio * e.maintenance_req
        ):
            why = (
                f"restricted and deficiency {cents(e.deficiency)} >"
                f" {policy.liquidation_deficiency_ratio:g} x requirement"
            )
        if why is not None:
            m.liquidation_triggered = True
            out.append(_decision(e, names.EVENT_LIQUIDATION_TRIGGERED, reason=why, **amounts))

    if m.call_open and e.deficiency == 0:
        was_restricted = m.restricted
        m.call_open = False
        m.call_amount = None
        m.call_issued_at = None
        m.restricted = False
        m.liquidation_triggered = False
        out.append(
            _decision(
                e,
                names.EVENT_MARGIN_CALL_MET,
                reason=("deficiency cured" + ("; restriction lifted" if was_restricted else "")),
                **amounts,
            )
        )
    return out


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
    """Apply one margin or stress result; duplicates and stale events change nothing."""
    if event.account_id != state.account_id:
        raise ValueError(f"event for {event.account_id} applied to state of {state.account_id}")
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
