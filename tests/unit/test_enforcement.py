"""Spec section 3: the enforcement ladder, idempotency and ordering, on realistic books.

Book used throughout: 1,000 AAPL long with a $20,000 debit. At price P, equity = 1000P - 20,000,
requirement = 250P, so the account is deficient below P = 26.67 and has equity < 0 below P = 20.
Warning cushion: excess < 5% of gross = 50P, i.e. 750P - 20,000 < 50P -> P < 28.57.
"""

from decimal import Decimal

from margin_risk import names
from margin_risk.enforcement import AccountState, Outcome, apply_event, replay
from margin_risk.params import PolicyParams
from tests.factories import long_book, margin_calc, stress_result

A = "ACC_1"
DEBIT = -20_000.0


def calc(seconds, price, **kw):
    return margin_calc(A, seconds, DEBIT, long_book(price), **kw)


def types(decisions):
    return [d.event_type for d in decisions]


def test_healthy_account_emits_nothing():
    r = replay([calc(0, 50.0), calc(60, 45.0)])
    assert r.decisions == []
    assert r.counts[Outcome.APPLIED] == 2


def test_call_issued_once_per_breach_then_met_then_reissued_on_a_new_breach():
    events = [
        calc(0, 50.0),
        calc(60, 25.0),  # equity 5,000 < req 6,250: deficiency 1,250 -> call
        calc(120, 24.0),  # still deficient: no second call
        calc(180, 26.0),  # still deficient (6,000 < 6,500)
        calc(240, 40.0),  # cured -> met
        calc(300, 25.0),  # new breach -> new call
    ]
    r = replay(events)
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_MARGIN_CALL_MET,
        names.EVENT_MARGIN_CALL_ISSUED,
    ]
    first = r.decisions[0]
    assert first.details.deficiency == 1_250.0
    assert first.details.equity == 5_000.0
    assert first.details.maintenance_req == 6_250.0
    assert first.details.excess == -1_250.0
    assert first.timestamp == events[1].timestamp
    state = r.states[A].margin
    assert state.call_open and state.call_amount == 1_250.0
    assert state.call_issued_at == events[5].timestamp


def test_warning_fires_once_in_the_cushion_and_rearms_above_it():
    r = replay([calc(0, 28.0), calc(60, 27.5), calc(120, 40.0), calc(180, 28.0)])
    # 28: excess 1,000 < cushion 1,400 -> warning; 27.5 still inside but disarmed;
    # 40 re-arms (excess 10,000 >= 2,000); 28 warns again
    assert types(r.decisions) == [names.EVENT_MARGIN_WARNING, names.EVENT_MARGIN_WARNING]
    assert r.decisions[0].details.excess == 1_000.0


def test_no_warning_while_a_call_is_open():
    r = replay([calc(0, 25.0), calc(60, 28.0)])
    # 28 cures the call (deficiency 0) in the cushion: the warning rule runs first with the call
    # still open, so only MET is emitted.
    assert types(r.decisions) == [names.EVENT_MARGIN_CALL_ISSUED, names.EVENT_MARGIN_CALL_MET]


def test_restriction_after_thirty_minutes_and_lift_on_cure():
    events = [calc(0, 25.0), calc(1800, 25.0), calc(1801, 25.0), calc(1900, 25.5), calc(2000, 40.0)]
    r = replay(events)
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_ACCOUNT_RESTRICTED,  # open 1,801 s > 1,800 s, not at exactly 1,800 s
        names.EVENT_MARGIN_CALL_MET,
    ]
    assert r.decisions[1].timestamp == events[2].timestamp
    assert "restriction lifted" in r.decisions[2].details.reason
    assert not r.states[A].margin.restricted


def test_liquidation_after_the_call_deadline():
    policy = PolicyParams(restrict_after_seconds=10_000_000)  # isolate the deadline rule
    events = [calc(0, 25.0), calc(172_800, 25.0), calc(172_801, 25.0), calc(172_900, 25.0)]
    r = replay(events, policy)
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_LIQUIDATION_TRIGGERED,
    ]
    assert r.decisions[1].timestamp == events[2].timestamp
    assert "deadline" in r.decisions[1].details.reason


def test_liquidation_at_once_on_negative_equity_in_the_same_event_as_the_call():
    r = replay([calc(0, 50.0), calc(60, 19.0)])  # equity -1,000
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_LIQUIDATION_TRIGGERED,
    ]
    liq = r.decisions[1]
    assert liq.details.equity == -1_000.0
    assert liq.details.deficiency == 5_750.0  # req 4,750 - equity (-1,000)
    assert "negative equity" in liq.details.reason


def test_liquidation_when_restricted_and_deficiency_over_half_the_requirement():
    # At P = 21: equity 1,000, req 5,250, deficiency 4,250 > 0.5 x 5,250
    r = replay([calc(0, 25.0), calc(1801, 25.0), calc(1900, 21.0), calc(2000, 20.5)])
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_ACCOUNT_RESTRICTED,
        names.EVENT_LIQUIDATION_TRIGGERED,
    ]
    assert "restricted" in r.decisions[2].details.reason


def test_one_event_can_emit_restriction_and_liquidation_in_table_order():
    r = replay([calc(0, 25.0), calc(1801, 21.0)])
    assert types(r.decisions) == [
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_ACCOUNT_RESTRICTED,
        names.EVENT_LIQUIDATION_TRIGGERED,
    ]


def test_duplicate_event_id_changes_nothing_and_writes_nothing():
    e = calc(60, 25.0)
    st = AccountState.new(A)
    first = apply_event(st, e)
    again = apply_event(first.state, e)
    assert again.outcome is Outcome.DUPLICATE
    assert again.decisions == []
    assert again.state == first.state


def test_stale_event_is_counted_not_applied():
    r = replay([calc(0, 50.0), calc(120, 45.0), calc(60, 19.0)])
    assert r.decisions == []
    assert r.counts[Outcome.STALE] == 1
    # an event at the same timestamp as the last applied one is not stale
    r = replay([calc(0, 50.0), calc(0, 25.0)])
    assert types(r.decisions) == [names.EVENT_MARGIN_CALL_ISSUED]


def test_correlation_ids_are_carried_and_decision_ids_are_deterministic():
    e = calc(60, 19.0, event_id="mc-42", correlation_id="corr-xyz")
    r = replay([e])
    assert {d.correlation_id for d in r.decisions} == {"corr-xyz"}
    assert [d.event_id for d in r.decisions] == [
        "mc-42:MARGIN_CALL_ISSUED",
        "mc-42:LIQUIDATION_TRIGGERED",
    ]
    assert replay([e]).decisions == r.decisions


def test_stress_breach_is_informational_and_never_blocks_a_call():
    book = [("HOT", -1000, 50.0, 2.0)]
    from margin_risk.rules import Holding

    h = [Holding(*b) for b in book]
    events = [
        stress_result(A, 0, 62_000.0, h),  # +6% breaches (see test_stress)
        stress_result(A, 30, 62_000.0, h),  # still breached: once per breach
        margin_calc(A, 60, DEBIT, long_book(25.0)),  # margin path unaffected by the stress flag
        stress_result(A, 90, 200_000.0, h),  # worst_deficiency 0 clears the stress path
        stress_result(A, 120, 62_000.0, h),  # breaches again
    ]
    r = replay(events)
    assert types(r.decisions) == [
        names.EVENT_STRESS_BREACH,
        names.EVENT_MARGIN_CALL_ISSUED,
        names.EVENT_STRESS_BREACH,
    ]
    s = r.decisions[0]
    assert s.details.scenario == Decimal("0.06")
    assert s.details.deficiency == 10_800.0
    assert s.details.equity == 6_000.0
    assert s.details.maintenance_req == 16_800.0


def test_stale_margin_event_does_not_make_a_newer_stress_event_stale():
    h = long_book(50.0)
    r = replay(
        [
            calc(100, 50.0),
            stress_result(A, 50, -45_000.0, h),  # older than the margin path, newer on its own
        ]
    )
    assert r.counts[Outcome.STALE] == 0
    assert types(r.decisions) == [names.EVENT_STRESS_BREACH]


def test_events_for_another_account_are_refused():
    import pytest

    with pytest.raises(ValueError):
        apply_event(AccountState.new("OTHER"), calc(0, 50.0))


def test_apply_event_never_changes_a_state_it_was_given_or_returned_earlier():
    # A sequence touching every mutation: a call, a same-timestamp event (appends to the clock's
    # ids), a later one (rotates them into recent_ids), a stress breach and its clearing.
    h = long_book(50.0)
    events = [
        calc(0, 25.0),
        calc(0, 24.0),
        calc(60, 30.0),
        stress_result(A, 60, -45_000.0, h),
        stress_result(A, 90, 200_000.0, h),
        calc(120, 19.0),
    ]
    states = [AccountState.new(A)]
    dumps = [states[0].model_dump()]
    for e in events:
        t = apply_event(states[-1], e)
        assert t.outcome is Outcome.APPLIED
        states.append(t.state)
        dumps.append(t.state.model_dump())
    # every state, the input and each intermediate result, is exactly as it was returned
    assert [s.model_dump() for s in states] == dumps
    assert dumps[1]["margin"]["call_open"] and dumps[1]["margin"]["clock"]["ids_at_last"] == [
        events[0].event_id
    ]
    assert dumps[2]["margin"]["clock"]["ids_at_last"] == [events[0].event_id, events[1].event_id]
    assert dumps[3]["margin"]["clock"]["recent_ids"] == [events[0].event_id, events[1].event_id]
    assert dumps[4]["stress"]["breached"] and not dumps[5]["stress"]["breached"]
