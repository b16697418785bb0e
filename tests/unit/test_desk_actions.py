"""Spec section 3, desk actions: EXTEND_CALL and WAIVE_CALL on open calls, in event-time order
with the margin path, idempotent on action_id, audited with the operator and the reason.

Book: 1,000 AAPL long with a $20,000 debit (see test_enforcement). At $25 the equity is 5,000
against a 6,250 requirement: a call for 1,250. At $40 the account is healthy.
"""

import pytest
from pydantic import ValidationError

from margin_risk import names
from margin_risk.audit import comparable, rebuild_state, view_of
from margin_risk.enforcement import Outcome, replay
from margin_risk.models import DeskAction, parse_enforcement_input
from margin_risk.params import PolicyParams
from tests.factories import at, desk_action, long_book, margin_calc

A = "ACC_1"
DEBIT = -20_000.0
DAY = 86_400


def calc(seconds, price, account=A):
    return margin_calc(account, seconds, DEBIT, long_book(price))


def extend(seconds, until_seconds, **kw):
    return desk_action(A, seconds, names.DESK_ACTION_EXTEND, until=at(until_seconds), **kw)


def waive(seconds, **kw):
    return desk_action(A, seconds, names.DESK_ACTION_WAIVE, **kw)


def types(decisions):
    return [d.event_type for d in decisions]


def test_extension_moves_the_liquidation_deadline_and_not_the_restriction():
    # Given a call issued at t=60 (deficiency 1,250), default deadline 172,800 s later
    # When the desk extends it to t=60 + 3 days
    ext = extend(120, 60 + 3 * DAY)
    events = [
        calc(0, 50.0),
        calc(60, 25.0),
        ext,
        calc(1_900, 25.0),  # open 1,840 s > 1,800 s: restricted as without the extension
        calc(60 + 2 * DAY + 1, 25.0),  # past the policy's deadline: no liquidation now
        calc(60 + 3 * DAY, 25.0),  # at the new deadline: not after it
        calc(60 + 3 * DAY + 1, 25.0),  # after it: liquidation
    ]
    r = replay(events)
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_MARGIN_CALL_EXTENDED,
        names.EVENT_ACCOUNT_RESTRICTED,
        names.EVENT_LIQUIDATION_TRIGGERED,
    ]
    extended = r.decisions[1]
    assert extended.event_id == f"{ext.action_id}:MARGIN_CALL_EXTENDED"
    assert extended.details.operator == ext.operator
    assert extended.details.reason == "client wiring funds"
    assert extended.details.deficiency == 1_250
    assert extended.details.until == "2026-02-19T14:31:00Z"
    assert extended.details.previous_deadline == "2026-02-18T14:31:00Z"
    assert extended.correlation_id == ext.correlation_id
    assert r.decisions[3].timestamp == at(60 + 3 * DAY + 1)
    assert "extended by the desk" in r.decisions[3].details.reason


def test_an_extension_never_brings_the_deadline_earlier():
    r = replay(
        [
            calc(60, 25.0),
            extend(120, 60 + 2 * DAY),  # equal to the policy's deadline: nothing to extend
            extend(180, 60 + 4 * DAY),
            extend(240, 60 + 3 * DAY),  # earlier than the extension in force
        ]
    )
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_DESK_ACTION_REJECTED,
        names.EVENT_MARGIN_CALL_EXTENDED,
        names.EVENT_DESK_ACTION_REJECTED,
    ]
    assert r.decisions[1].details.rejection == (
        "until 2026-02-18T14:31:00Z is not after the call's deadline 2026-02-18T14:31:00Z"
    )
    assert r.states[A].margin.call_deadline_extended_to == at(60 + 4 * DAY)


def test_waiver_closes_the_call_lifts_the_restriction_and_the_next_deficiency_is_a_new_call():
    w = waive(2_000, reason="goodwill: fee error")
    events = [calc(60, 25.0), calc(1_900, 25.0), w, calc(2_100, 25.0), calc(2_200, 24.0)]
    r = replay(events)
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_ACCOUNT_RESTRICTED,
        names.EVENT_MARGIN_CALL_WAIVED,
        names.EVENT_MARGIN_CALL_ISSUED,  # deficiency 1,250 again: a new breach
    ]
    waived = r.decisions[2]
    assert waived.details.reason == "goodwill: fee error"
    assert waived.details.deficiency == 1_250  # the amount waived
    assert waived.details.restriction_lifted is True
    new_call = r.decisions[3]
    assert new_call.timestamp == at(2_100)
    m = r.states[A].margin
    assert m.call_open and not m.restricted and m.call_issued_at == at(2_100)


def test_a_waived_call_after_an_extension_forgets_the_extension():
    r = replay([calc(60, 25.0), extend(90, 9 * DAY), waive(120), calc(180, 25.0)])
    assert types(r.decisions)[-1] == names.EVENT_MARGIN_CALL_ISSUED
    assert r.states[A].margin.call_deadline_extended_to is None


def test_actions_without_an_open_call_are_rejected_with_the_reason():
    r = replay(
        [
            waive(10),  # nothing known about the account
            calc(60, 50.0),
            waive(120),  # healthy account
            extend(180, DAY),
        ]
    )
    assert types(r.decisions) == [names.EVENT_DESK_ACTION_REJECTED] * 3
    assert [d.details.rejection for d in r.decisions] == [
        "unknown account: no margin result",
        "no open call on this account",
        "no open call on this account",
    ]
    assert all(d.details.operator and d.details.reason for d in r.decisions)
    assert r.decisions[0].details.deficiency is None


def test_an_action_is_idempotent_on_its_action_id():
    w = waive(120)
    r = replay([calc(60, 25.0), w, calc(130, 24.0), w])
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_MARGIN_CALL_WAIVED,
        names.EVENT_MARGIN_CALL_ISSUED,
    ]
    assert r.counts[Outcome.DUPLICATE] == 1


def test_an_action_older_than_the_margin_path_is_audited_as_rejected_not_dropped():
    # The desk acted at t=100 on the call it saw; a result of t=200 was applied first.
    late = waive(100)
    r = replay([calc(60, 25.0), calc(200, 24.0), late, late])
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_DESK_ACTION_REJECTED,
    ]
    assert r.decisions[1].details.rejection.startswith(
        "stale: the account's margin was last evaluated at 2026-02-16T14:33:20Z"
    )
    assert r.states[A].margin.call_open
    assert r.counts[Outcome.DUPLICATE] == 1  # its redelivery


def test_actions_share_the_margin_paths_clock():
    # A margin result older than an applied action is stale, as behind any margin result.
    r = replay([calc(60, 25.0), extend(120, 5 * DAY), calc(100, 40.0)])
    assert r.counts[Outcome.STALE] == 1
    assert r.states[A].margin.call_open


def test_the_deadline_under_another_policy():
    # With a one-hour deadline, an extension to two hours is later than it.
    policy = PolicyParams(call_deadline_seconds=3_600)
    r = replay([calc(60, 25.0), extend(120, 60 + 7_200), calc(60 + 3_601, 25.0)], policy)
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_MARGIN_CALL_EXTENDED,
        names.EVENT_ACCOUNT_RESTRICTED,
    ]
    r = replay([calc(60, 25.0), extend(120, 60 + 7_200), calc(60 + 7_201, 25.0)], policy)
    assert types(r.decisions)[-1] == names.EVENT_LIQUIDATION_TRIGGERED


def test_rebuild_reproduces_deadlines_and_waivers():
    events = [
        calc(60, 25.0),
        extend(120, 60 + 3 * DAY),
        calc(60, 25.0, account="ACC_2"),
        desk_action("ACC_2", 100, names.DESK_ACTION_WAIVE),
        calc(200, 24.0, account="ACC_2"),
        desk_action("ACC_2", 300, names.DESK_ACTION_WAIVE),
    ]
    r = replay(events)
    views = rebuild_state(r.decisions)
    assert views[A].call_deadline_extended_to == at(60 + 3 * DAY)
    assert views["ACC_2"].calls_waived == 2
    assert not views["ACC_2"].call_open
    for account, state in r.states.items():
        assert comparable(views[account]) == comparable(view_of(state))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"until": None}, "EXTEND_CALL needs until"),
        ({"action": "WAIVE_CALL"}, "WAIVE_CALL takes no until"),
        ({"action": "CANCEL_CALL"}, "action"),
        ({"operator": ""}, "operator"),
        ({"reason": 5}, "reason"),
        ({"until": "tomorrow"}, "until"),
    ],
)
def test_bad_actions_are_invalid_records(change, why):
    raw = extend(120, DAY).model_dump(mode="json") | change
    with pytest.raises(ValidationError, match=why):
        parse_enforcement_input(raw)


def test_actions_are_told_apart_from_results_by_their_fields():
    raw = extend(120, DAY).model_dump(mode="json")
    action = parse_enforcement_input(raw)
    assert isinstance(action, DeskAction)
    assert action.event_id == action.action_id
