"""Desk actions (desk.actions.v1) through the real handler, beside the margin results.

Book: 1,000 AAPL with a $20,000 debit. At $25 the equity is 5,000 against a 6,250 requirement: a
call for 1,250 (spec section 1). At $50 the account is healthy. Default policy: restricted after
1,800 s, liquidation 172,800 s (two days) after the call.

In AWS each topic has its own mapping, so actions and results arrive in separate batches with no
order between them; the local harness can also put them in one batch, where the service merges
each account's records by event time. Both are exercised here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest

from margin_risk import names
from margin_risk.audit import comparable, rebuild_state, view_of
from margin_risk.enforcement import AccountState, apply_event
from margin_risk.models import AuditEvent, EnforcementInput
from tests.factories import at, desk_action

from .harness import Deployment, Feed, book, calc

pytestmark = pytest.mark.integration
DAY = 86_400
DEBIT = -20_000


def failures(resp: dict[str, Any]) -> list[Any]:
    return list(resp["batchItemFailures"])


def by_account(trail: list[AuditEvent]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for d in sorted(trail, key=lambda d: (d.timestamp, d.event_id)):
        out[d.account_id].append(d.event_type)
    return dict(out)


def reference(batches: list[list[EnforcementInput]]) -> dict[str, AccountState]:
    """The state machine alone, batch by batch, each account's records in event-time order
    (what the service does with one batch)."""
    states: dict[str, AccountState] = {}
    for batch in batches:
        for ev in sorted(batch, key=lambda e: e.timestamp):
            st = states.get(ev.account_id) or AccountState.new(ev.account_id)
            states[ev.account_id] = apply_event(st, ev).state
    return states


def test_desk_actions_interleaved_with_margin_results_extend_waive_and_reject(
    deployment: Deployment, feed: Feed
):
    ext = desk_action("D-EXT", 120, names.DESK_ACTION_EXTEND, until=at(3 * DAY), action_id="ext-1")
    waive = desk_action("D-WAIVE", 2_000, names.DESK_ACTION_WAIVE, action_id="waive-1")
    no_call = desk_action("D-OK", 60, names.DESK_ACTION_WAIVE, action_id="nocall-1")
    unknown = desk_action("D-NEW", 60, names.DESK_ACTION_WAIVE, action_id="unknown-1")
    # An extension without `until`: nobody can carry it out as written.
    bad = {**json.loads(ext.to_json()), "action_id": "bad-1", "until": None}
    # Given one batch where the actions come first in delivery order (their own topic), and
    # the margin results they act on come after them but are older
    first: list[EnforcementInput] = [ext, waive, no_call, unknown]
    margin = [
        calc("D-EXT", 0, DEBIT, book(25), "e0"),  # call for 1,250
        calc("D-WAIVE", 0, DEBIT, book(25), "w0"),  # call for 1,250
        calc("D-WAIVE", 1_900, DEBIT, book(25), "w1"),  # open 1,900 s > 1,800 s: restricted
        calc("D-OK", 0, DEBIT, book(50), "k0"),  # healthy: no call
    ]
    records = [
        *feed.records(first[:2]),
        feed.record(raw=json.dumps(bad).encode(), account="D-EXT", topic=names.TOPIC_DESK_ACTIONS),
        *feed.records(first[2:]),
        *feed.records(margin),
    ]
    # When the batch is handled
    assert failures(deployment.send(records)) == []
    # Then each account's records were applied in event-time order: the extension found the
    # call, the waiver closed a restricted call, the actions without a call were rejected
    trail = deployment.audit()
    assert by_account(trail) == {
        "D-EXT": [names.EVENT_MARGIN_CALL_ISSUED, names.EVENT_MARGIN_CALL_EXTENDED],
        "D-WAIVE": [
            names.EVENT_MARGIN_CALL_ISSUED,
            names.EVENT_ACCOUNT_RESTRICTED,
            names.EVENT_MARGIN_CALL_WAIVED,
        ],
        "D-OK": [names.EVENT_DESK_ACTION_REJECTED],
        "D-NEW": [names.EVENT_DESK_ACTION_REJECTED],
    }
    decisions = {d.event_id: d for d in trail}
    extended = decisions["ext-1:MARGIN_CALL_EXTENDED"].details
    assert extended.operator == ext.operator  # type: ignore[attr-defined]
    assert extended.reason == ext.reason
    assert extended.until == "2026-02-19T14:30:00Z"  # type: ignore[attr-defined]
    assert extended.previous_deadline == "2026-02-18T14:30:00Z"  # type: ignore[attr-defined]
    assert extended.deficiency == 1250
    waived = decisions["waive-1:MARGIN_CALL_WAIVED"].details
    assert waived.restriction_lifted is True  # type: ignore[attr-defined]
    assert waived.operator == waive.operator  # type: ignore[attr-defined]
    assert decisions["nocall-1:DESK_ACTION_REJECTED"].details.rejection == (  # type: ignore[attr-defined]
        "no open call on this account"
    )
    assert decisions["unknown-1:DESK_ACTION_REJECTED"].details.rejection == (  # type: ignore[attr-defined]
        "unknown account: no margin result"
    )
    # And the malformed action was rejected to rejected/, counted, never retried, and held
    # nothing back
    (rejected,) = deployment.rejected()
    assert rejected["topic"] == names.TOPIC_DESK_ACTIONS
    assert rejected["reason_code"] == "missing_field"
    assert "EXTEND_CALL needs until" in rejected["reason"]
    assert deployment.metric_total(names.METRIC_RECORDS_REJECTED, reason="missing_field") == 1
    assert deployment.metric_total(names.METRIC_CALLS_EXTENDED) == 1
    assert deployment.metric_total(names.METRIC_CALLS_WAIVED) == 1
    states = deployment.states()
    assert not states["D-WAIVE"].margin.call_open and not states["D-WAIVE"].margin.restricted

    # When the extended account is still deficient past the policy's two-day deadline (its own
    # batch, as the margin mapping delivers it)
    late_margin = calc("D-EXT", 2 * DAY + 60, DEBIT, book(25), "e1")
    assert failures(deployment.send(feed.records([late_margin]))) == []
    # Then it is restricted (the restriction step is unchanged) but not liquidated
    assert by_account(deployment.audit())["D-EXT"][2:] == [names.EVENT_ACCOUNT_RESTRICTED]

    # When a waiver the desk typed before that result arrives only now (the desk mapping's
    # batch, after the margin mapping's): it acted on a state that has moved on
    stale = desk_action("D-EXT", DAY, names.DESK_ACTION_WAIVE, action_id="stale-1")
    assert failures(deployment.send(feed.records([stale]))) == []
    # Then it is audited as rejected (stale), and the call stays open
    d = {x.event_id: x for x in deployment.audit()}["stale-1:DESK_ACTION_REJECTED"]
    assert d.details.rejection.startswith(  # type: ignore[attr-defined]
        "stale: the account's margin was last evaluated at 2026-02-18T14:31:00Z"
    )
    assert deployment.states()["D-EXT"].margin.call_open

    # When the deficiency persists past the extended deadline
    last = calc("D-EXT", 3 * DAY + 1, DEBIT, book(25), "e2")
    assert failures(deployment.send(feed.records([last]))) == []
    # Then the liquidation comes, at the new deadline and not before (the trail in event-time
    # order: the stale rejection carries its action's time)
    trail = deployment.audit()
    assert by_account(trail)["D-EXT"][2:] == [
        names.EVENT_DESK_ACTION_REJECTED,
        names.EVENT_ACCOUNT_RESTRICTED,
        names.EVENT_LIQUIDATION_TRIGGERED,
    ]
    liquidation = {x.event_id: x for x in trail}["e2:LIQUIDATION_TRIGGERED"]
    assert "extended by the desk" in liquidation.details.reason
    assert deployment.metric_total(names.METRIC_DESK_ACTIONS_REJECTED) == 3

    # And DynamoDB holds what the state machine alone gives, and what the trail rebuilds
    batches: list[list[EnforcementInput]] = [[*first, *margin], [late_margin], [stale], [last]]
    expected = reference(batches)
    states = deployment.states()
    assert set(states) == set(expected)
    for a, st in expected.items():
        assert states[a].model_dump(exclude={"version"}) == st.model_dump(exclude={"version"}), a
    rebuilt = {a: comparable(v) for a, v in rebuild_state(trail).items()}
    assert rebuilt == {a: comparable(view_of(s)) for a, s in states.items()}


def test_a_redelivered_action_is_applied_once(deployment: Deployment, feed: Feed):
    # Given a call and its waiver, handled
    events: list[EnforcementInput] = [
        calc("D-TWICE", 0, DEBIT, book(25), "t0"),
        desk_action("D-TWICE", 60, names.DESK_ACTION_WAIVE, action_id="twice-1"),
    ]
    assert failures(deployment.send(feed.records(events))) == []
    # When the same action arrives again after a new call (a producer retry, or a replay)
    again = calc("D-TWICE", 120, DEBIT, book(25), "t1")
    assert failures(deployment.send(feed.records([again, events[1]]))) == []
    # Then it is a duplicate: the second call stays open
    assert by_account(deployment.audit())["D-TWICE"] == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_MARGIN_CALL_WAIVED,
        names.EVENT_MARGIN_CALL_ISSUED,
    ]
    assert deployment.states()["D-TWICE"].margin.call_open
    assert deployment.metric_total(names.METRIC_DUPLICATE_EVENTS) == 1
