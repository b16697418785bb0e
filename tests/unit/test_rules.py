"""Spec section 1: maintenance margin, with numbers worked by hand."""

from decimal import Decimal as D

import pytest

from margin_risk.params import MarginParams
from margin_risk.rules import Holding, compute_margin, position_requirement


def test_long_only_book_from_the_spec_example():
    # Given the spec's snapshot: $20,000 debit, 1,000 AAPL at $50
    r = compute_margin(-20_000.0, [Holding("AAPL", 1000, 50.0, 1.2)])
    # Then LMV 50,000, equity 30,000, requirement 25% = 12,500, excess 17,500
    assert (r.long_market_value, r.short_market_value) == (50_000.0, 0.0)
    assert r.equity == 30_000.0
    assert r.maintenance_req == 12_500.0
    assert r.excess == 17_500.0
    assert r.deficiency == 0.0


def test_debit_large_enough_to_be_deficient():
    # equity 10,000 against a 12,500 requirement: deficiency 2,500
    r = compute_margin(-40_000.0, [Holding("AAPL", 1000, 50.0)])
    assert r.equity == 10_000.0
    assert r.excess == -2_500.0
    assert r.deficiency == 2_500.0


@pytest.mark.parametrize(
    ("quantity", "price", "expected"),
    [
        (-1000, 20.0, 6_000.0),  # 30% of 20,000 beats $5 x 1,000
        (-1000, 10.0, 5_000.0),  # $5/share floor beats 30% of 10,000 = 3,000
        (-1000, 5.0, 5_000.0),  # exactly $5 is the >= $5 rule: max(5,000, 1,500)
        (-1000, 3.0, 3_000.0),  # below $5: 100% of 3,000 beats $2.50 x 1,000
        (-1000, 2.0, 2_500.0),  # below $5: $2.50/share floor beats 100% of 2,000
        (-1000, 0.0, 2_500.0),  # a worthless short still owes the per-share floor
        (400, 12.5, 1_250.0),  # long: 25% of 5,000
        (0, 99.0, 0.0),
    ],
)
def test_position_requirement_table(quantity, price, expected):
    assert position_requirement(quantity, price) == D(str(expected))


def test_short_above_five_dollars_with_proceeds_in_cash():
    # Given $30,000 cash (short proceeds included) and 1,000 XYZ short at $20
    r = compute_margin(30_000.0, [Holding("XYZ", -1000, 20.0)])
    assert r.short_market_value == 20_000.0
    assert r.equity == 10_000.0
    assert r.maintenance_req == 6_000.0
    assert r.excess == 4_000.0


def test_mixed_book():
    # long 500 @ 100 (req 12,500), short 1,000 @ 4 (req max(2,500, 4,000) = 4,000),
    # short 200 @ 50 (req max(1,000, 3,000) = 3,000); equity -10,000 + 50,000 - 14,000 = 26,000
    book = [Holding("BIG", 500, 100.0), Holding("PENNY", -1000, 4.0), Holding("MID", -200, 50.0)]
    r = compute_margin(-10_000.0, book)
    assert r.long_market_value == 50_000.0
    assert r.short_market_value == 14_000.0
    assert r.equity == 26_000.0
    assert r.maintenance_req == 19_500.0
    assert r.excess == 6_500.0
    assert r.gross == 64_000.0


def test_cash_only_account():
    r = compute_margin(1_000.0, [])
    assert (r.equity, r.maintenance_req, r.excess, r.deficiency) == (1_000.0, 0.0, 1_000.0, 0.0)


def test_negative_cash_only_account_is_deficient_by_its_debit():
    r = compute_margin(-250.0, [])
    assert r.equity == -250.0
    assert r.deficiency == 250.0


def test_concentration_addon_is_off_by_default_and_applies_over_the_threshold():
    book = [Holding("A", 800, 100.0), Holding("B", 100, 100.0), Holding("C", 100, 100.0)]
    assert compute_margin(0.0, book).maintenance_req == 25_000.0
    # A is 80,000 of 100,000 gross (> 30%): add 10% of 80,000
    house = MarginParams(concentration_addon=0.10)
    assert compute_margin(0.0, book, house).maintenance_req == D("33000.0")


def test_house_rates_are_settings():
    house = MarginParams(long_rate=0.40, short_per_share=6.0)
    assert position_requirement(100, 10.0, house) == D("400.0")
    assert position_requirement(-1000, 10.0, house) == D("6000.0")
