"""Spec section 2: beta-weighted SPY stress, repricing every position and recomputing the rules."""

from decimal import Decimal as D

import pytest

from margin_risk.params import DEFAULT_SCENARIOS
from margin_risk.rules import Holding, compute_margin
from margin_risk.stress import shocked_price, stress_table, worst_scenario


def row(rows, s):
    return next(r for r in rows if r.scenario == D(repr(s)))


def test_default_grid_is_the_high_cap_broad_index_grid():
    assert (
        tuple(D(s) for s in ("-0.08", "-0.06", "-0.04", "-0.02", "0", "0.02", "0.04", "0.06"))
        == DEFAULT_SCENARIOS
    )


def test_long_book_reprices_by_beta():
    # Given 1,000 AAPL at $50, beta 1.2, and a $20,000 debit
    rows = stress_table(-20_000.0, [Holding("AAPL", 1000, 50.0, 1.2)])
    # When SPY falls 8%: price 50 * (1 - 0.096) = 45.20, LMV 45,200
    r = row(rows, -0.08).result
    assert r.long_market_value == D("45200.0")
    assert r.equity == D("25200.0")
    assert r.maintenance_req == D("11300.0")
    assert r.deficiency == 0.0


def test_short_crossing_five_dollars_switches_to_the_low_price_rule():
    # Given 1,000 shares short at $5.10 (beta 1) and $10,000 cash
    book = [Holding("NEAR5", -1000, 5.10, 1.0)]
    rows = stress_table(10_000.0, book)
    # At the base price the $5/share floor applies: max(5,000, 1,530) = 5,000
    assert row(rows, 0.0).result.maintenance_req == D("5000.0")
    # SPY -2%: 5.10 * 0.98 = 4.998 < $5, so max($2.50 x 1,000, 100% x 4,998) = 4,998
    down = row(rows, -0.02).result
    assert down.maintenance_req == D("4998.0")
    assert down.equity == D("5002")
    # SPY +2%: 5.202 >= $5, back to max(5,000, 30% x 5,202 = 1,560.6) = 5,000
    assert row(rows, 0.02).result.maintenance_req == D("5000.0")


def test_a_beta_large_enough_floors_the_price_at_zero():
    assert shocked_price(10.0, 15.0, -0.08) == 0.0  # 1 + 15 x -0.08 = -0.2 -> floored
    rows = stress_table(-500.0, [Holding("LEV", 100, 10.0, 15.0)])
    r = row(rows, -0.08).result
    assert r.long_market_value == 0.0
    assert r.maintenance_req == 0.0
    assert r.equity == -500.0
    assert r.deficiency == 500.0


def test_up_moves_hurt_short_books_and_pick_the_worst_scenario():
    # Given 1,000 shares short at $50 (beta 2) and $62,000 cash (proceeds included)
    book = [Holding("HOT", -1000, 50.0, 2.0)]
    rows = stress_table(62_000.0, book)
    # SPY +6%: price 56, equity 6,000, requirement 30% x 56,000 = 16,800, deficiency 10,800
    up = row(rows, 0.06).result
    assert up.equity == D("6000.0")
    assert up.maintenance_req == D("16800.0")
    assert up.deficiency == D("10800.0")
    w = worst_scenario(rows)
    assert w.scenario == D("0.06")
    assert [r.breached for r in rows].count(True) >= 1


def test_worst_scenario_ties_go_to_the_lowest_excess():
    # A cash-only account never breaches; every deficiency is 0, every excess equal -> grid order
    rows = stress_table(1_000.0, [])
    assert worst_scenario(rows).scenario == D("-0.08")
    # A long book with no breach: the lowest stressed excess is the biggest down move
    rows = stress_table(100_000.0, [Holding("A", 100, 100.0, 1.0)])
    assert worst_scenario(rows).scenario == D("-0.08")


def test_shock_zero_equals_the_base_result():
    book = [
        Holding("A", 300, 12.0, 1.3),
        Holding("B", -800, 4.5, 0.7),
        Holding("C", -50, 80.0, 1.1),
    ]
    base = compute_margin(2_000.0, book)
    assert row(stress_table(2_000.0, book), 0.0).result == base


def test_custom_scenarios_replace_the_grid():
    rows = stress_table(0.0, [Holding("A", 10, 10.0)], scenarios=[D("-0.05"), D("-0.10")])
    assert [r.scenario for r in rows] == [D("-0.05"), D("-0.10")]
    with pytest.raises(ValueError):
        worst_scenario([])
