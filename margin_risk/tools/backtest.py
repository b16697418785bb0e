"""Backtest: the archived results of a period through the same enforcement code with another
policy, and a per-account diff against the decisions actually taken (the audit trail).

Streams: results come an hour partition at a time (`margin_risk.tools.history`) and only each
account's enforcement state and decision counters stay in memory. The audit trail of the period
is held as one small tuple per decision (type and time; decisions are far fewer than results).
The desk's actions of the period (in the trail as EXTENDED / WAIVED / REJECTED decisions) are
applied again at their times, so a waiver the desk gave is part of both sides.

Matching: the k-th decision of a type on an account in the backtest is compared with the k-th of
that type in the trail: both present and at the same time -> same; at another time -> earlier or
later; only in the backtest -> added; only in the trail -> removed.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from margin_risk.enforcement import AccountState, Outcome, apply_event
from margin_risk.models import DESK_DECISIONS, AuditEvent, DeskAction, EnforcementInput, iso
from margin_risk.params import PolicyParams


def actions_of(trail: Iterable[AuditEvent]) -> list[DeskAction]:
    """The desk actions behind the trail's desk decisions (one per action id), in time order."""
    seen: dict[str, DeskAction] = {}
    for d in trail:
        if d.event_type not in DESK_DECISIONS:
            continue
        x = d.details
        aid = getattr(x, "action_id", None)
        if not isinstance(aid, str) or aid in seen:
            continue
        seen[aid] = DeskAction.model_validate(
            {
                "action_id": aid,
                "account_id": d.account_id,
                "action": getattr(x, "action", None),
                "until": getattr(x, "until", None),
                "operator": getattr(x, "operator", None),
                "reason": x.reason,
                "timestamp": d.timestamp,
                "correlation_id": d.correlation_id,
            }
        )
    return sorted(seen.values(), key=lambda a: (a.timestamp, a.action_id))


@dataclass
class AccountDiff:
    added: list[tuple[str, datetime]] = field(default_factory=list)
    removed: list[tuple[str, datetime]] = field(default_factory=list)
    earlier: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    later: list[tuple[str, datetime, datetime]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.earlier or self.later)

    def to_dict(self, account_id: str) -> dict[str, Any]:
        return {
            "account_id": account_id,
            "added": [{"event_type": t, "timestamp": iso(ts)} for t, ts in self.added],
            "removed": [{"event_type": t, "timestamp": iso(ts)} for t, ts in self.removed],
            "earlier": [
                {"event_type": t, "actual": iso(a), "backtest": iso(b)} for t, a, b in self.earlier
            ],
            "later": [
                {"event_type": t, "actual": iso(a), "backtest": iso(b)} for t, a, b in self.later
            ],
        }


@dataclass
class BacktestReport:
    results: int = 0
    accounts: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    backtest: Counter[str] = field(default_factory=Counter)
    actual: Counter[str] = field(default_factory=Counter)
    diffs: dict[str, AccountDiff] = field(default_factory=dict)
    start: datetime | None = None
    end: datetime | None = None

    def totals(self) -> dict[str, int]:
        return {
            "added": sum(len(d.added) for d in self.diffs.values()),
            "removed": sum(len(d.removed) for d in self.diffs.values()),
            "earlier": sum(len(d.earlier) for d in self.diffs.values()),
            "later": sum(len(d.later) for d in self.diffs.values()),
            "same": sum(self.backtest.values())
            - sum(len(d.added) + len(d.earlier) + len(d.later) for d in self.diffs.values()),
            "accounts_differing": len(self.diffs),
        }

    def summary(self, policy: PolicyParams) -> dict[str, Any]:
        return {
            "backtest": {
                "period": {
                    "start": None if self.start is None else iso(self.start),
                    "end": None if self.end is None else iso(self.end),
                },
                "policy": {
                    "warning_cushion": policy.warning_cushion,
                    "restrict_after_seconds": policy.restrict_after_seconds,
                    "call_deadline_seconds": policy.call_deadline_seconds,
                    "liquidation_deficiency_ratio": policy.liquidation_deficiency_ratio,
                },
                "results": self.results,
                "accounts": self.accounts,
                "decisions": dict(sorted(self.backtest.items())),
                "actual_decisions": dict(sorted(self.actual.items())),
                "diff": self.totals(),
            }
        }


class Backtest:
    """Feed results (and the desk's actions) through `apply_event` with ``policy``; match each
    decision against the trail as it is taken."""

    def __init__(self, policy: PolicyParams, trail: Iterable[AuditEvent] = ()) -> None:
        self.policy = policy
        self.states: dict[str, AccountState] = {}
        self.report = BacktestReport()
        # account -> type -> times of the decisions actually taken, in order
        self.actual: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
        trail = list(trail)
        self.actions = actions_of(trail)
        for d in sorted({d.event_id: d for d in trail}.values(), key=lambda d: d.timestamp):
            self.actual[d.account_id][d.event_type].append(d.timestamp)
            self.report.actual[d.event_type] += 1
        self.taken: dict[str, Counter[str]] = defaultdict(Counter)

    def run(self, results: Iterable[EnforcementInput]) -> Iterator[AuditEvent]:
        """Every decision the policy takes, in decision order (the report fills as it goes)."""
        events = heapq.merge(results, self.actions, key=lambda e: e.timestamp)
        rep = self.report
        for ev in events:
            if not isinstance(ev, DeskAction):
                rep.results += 1
                rep.start = ev.timestamp if rep.start is None else rep.start
                rep.end = ev.timestamp
            st = self.states.get(ev.account_id)
            if st is None:
                st = AccountState.new(ev.account_id)
                rep.accounts += 1
            t = apply_event(st, ev, self.policy)
            rep.outcomes[t.outcome.value] += 1
            self.states[ev.account_id] = t.state
            for d in t.decisions:
                self._match(d)
                yield d
        self._finish()

    def _match(self, d: AuditEvent) -> None:
        self.report.backtest[d.event_type] += 1
        k = self.taken[d.account_id][d.event_type]
        self.taken[d.account_id][d.event_type] += 1
        actual = self.actual.get(d.account_id, {}).get(d.event_type, [])
        diff = self.report.diffs.get(d.account_id) or AccountDiff()
        if k >= len(actual):
            diff.added.append((d.event_type, d.timestamp))
        elif d.timestamp < actual[k]:
            diff.earlier.append((d.event_type, actual[k], d.timestamp))
        elif d.timestamp > actual[k]:
            diff.later.append((d.event_type, actual[k], d.timestamp))
        if diff:
            self.report.diffs[d.account_id] = diff

    def _finish(self) -> None:
        for account, by_type in self.actual.items():
            for event_type, times in by_type.items():
                k = self.taken.get(account, Counter())[event_type]
                if k < len(times):
                    diff = self.report.diffs.setdefault(account, AccountDiff())
                    diff.removed.extend((event_type, ts) for ts in times[k:])
        self.report.outcomes.setdefault(Outcome.APPLIED.value, 0)


def in_period(trail: Iterable[AuditEvent], start: datetime, end: datetime) -> list[AuditEvent]:
    """The decisions with ``start <= timestamp < end`` (the period the archive covers)."""
    return [d for d in trail if start <= d.timestamp < end]
