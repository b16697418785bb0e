"""The demo's market session: reproducible, and its roles play out through the reference rules."""

from collections import defaultdict

from margin_risk import names
from margin_risk.enforcement import replay
from margin_risk.params import PolicyParams
from margin_risk.tools.local.simulator import MarketSimulator, expected_margin_events

DEMO_POLICY = PolicyParams(call_deadline_seconds=3600)


def test_same_seed_same_session_and_another_seed_differs():
    a, b, c = MarketSimulator(60, 12, 1), MarketSimulator(60, 12, 1), MarketSimulator(60, 12, 2)
    assert [r for _, r in a.iter_records()] == [r for _, r in b.iter_records()]
    assert [r for _, r in a.iter_records()] != [r for _, r in c.iter_records()]


def test_roles_play_out_through_the_reference_rules():
    sim = MarketSimulator(200, 30, 11)
    decisions = replay(expected_margin_events(sim), DEMO_POLICY).decisions
    by_account = defaultdict(list)
    for d in decisions:
        by_account[d.account_id].append(d)
    role = {a.account_id: a.role for a in sim.accounts}
    for acct, ds in by_account.items():
        kinds = [d.event_type for d in ds]
        if role[acct] == "strong":
            raise AssertionError(f"strong account {acct} got {kinds}")
        if role[acct] == "weak_cures":
            assert kinds.count(names.EVENT_MARGIN_CALL_ISSUED) == 1
            assert kinds[-1] == names.EVENT_MARGIN_CALL_MET
        if role[acct] == "weak_defaults":
            assert names.EVENT_LIQUIDATION_TRIGGERED in kinds
        if role[acct] == "wipe_out":
            liq = next(d for d in ds if d.event_type == names.EVENT_LIQUIDATION_TRIGGERED)
            assert liq.details.equity < 0 and "negative equity" in liq.details.reason
    for a in sim.accounts:
        if a.role in ("weak_cures", "weak_defaults", "wipe_out"):
            assert a.account_id in by_account, f"{a.role} {a.account_id} never breached"


def test_bad_records_and_duplicates_are_part_of_the_session():
    sim = MarketSimulator(30, 6, 5)
    assert sim.expected_rejections == 4
    assert sim.duplicates_sent >= 1
    fills = [r for _, r in sim.iter_records() if r.topic == names.TOPIC_FILLS]
    assert len(fills) > len({r.value for r in fills}) - 1
