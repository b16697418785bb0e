"""Spec section 7: house requirements per symbol raise (never lower) a position's requirement."""

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from margin_risk.house import HouseBook, HouseEntry
from margin_risk.params import HouseRates, MarginParams
from margin_risk.rules import Holding, compute_margin, position_requirement
from margin_risk.stress import stress_table
from tests.unit.test_properties import books, decimals, house, money

T0 = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)


def entry(symbol="TQQQ", as_of="2026-02-01T00:00:00Z", **kw):
    raw = {
        "symbol": symbol,
        "long_rate": 0.25,
        "short_rate": 0.30,
        "non_marginable": False,
        "as_of": as_of,
        "updated_by": "risk-desk",
    } | kw
    return HouseEntry.model_validate(raw)


def test_spec_example_leveraged_etf_long_rate():
    # Given long 100 TQQQ at $50 and a house long_rate of 0.75 (a 3x ETF)
    book = [Holding("TQQQ", 100, D("50"))]
    house = {"TQQQ": HouseRates(long_rate=D("0.75"))}
    # Then the requirement is 0.75 x 5,000 = 3,750 (25% default would be 1,250)
    assert compute_margin(D(0), book).maintenance_req == 1_250
    assert compute_margin(D(0), book, house=house).maintenance_req == 3_750


def test_spec_example_non_marginable_is_the_whole_market_value():
    book = [Holding("TQQQ", 100, D("50"))]
    house = {"TQQQ": HouseRates(long_rate=D("0.75"), non_marginable=True)}
    assert compute_margin(D(0), book, house=house).maintenance_req == 5_000


@pytest.mark.parametrize(
    ("quantity", "price", "rates", "expected"),
    [
        # a house long rate below the default changes nothing: max(0.25, 0.10) x 4,000
        (100, "40", HouseRates(long_rate=D("0.10")), "1000"),
        (100, "40", HouseRates(long_rate=D("0.50")), "2000"),  # 2x ETF
        # short 1,000 at $20: section 1 gives max(5,000, 6,000) = 6,000; house 0.50 -> 10,000
        (-1000, "20", HouseRates(short_rate=D("0.50")), "10000"),
        # short 1,000 at $10: the $5 floor (5,000) beats house 0.40 x 10,000 = 4,000
        (-1000, "10", HouseRates(short_rate=D("0.40")), "5000"),
        # short below $5: max(2,500, 100% x 3,000) = 3,000; house 1.50 -> 4,500
        (-1000, "3", HouseRates(short_rate=D("1.50")), "4500"),
        # non-marginable says nothing about shorts: section 1 rule, 6,000
        (-1000, "20", HouseRates(non_marginable=True), "6000"),
        # a short rate says nothing about longs
        (100, "40", HouseRates(short_rate=D("2")), "1000"),
    ],
)
def test_house_rates_per_position(quantity, price, rates, expected):
    assert position_requirement(D(quantity), D(price), MarginParams(), rates) == D(expected)


def test_stress_applies_the_entry_at_the_shocked_prices():
    # Given 100 TQQQ at $50, beta 3, a 3x ETF entry (0.75), $2,000 cash
    book = [Holding("TQQQ", 100, D("50"), D("3"))]
    rows = stress_table(D(2_000), book, house={"TQQQ": HouseRates(long_rate=D("0.75"))})
    worst = next(r for r in rows if r.scenario == D("-0.08")).result
    # SPY -8%: price 50 x (1 - 0.24) = 38, LMV 3,800; requirement 0.75 x 3,800 = 2,850
    assert worst.long_market_value == 3_800
    assert worst.maintenance_req == 2_850
    assert worst.equity == 5_800
    # without the entry the requirement would be 950
    plain = stress_table(D(2_000), book)
    assert next(r for r in plain if r.scenario == D("-0.08")).result.maintenance_req == 950


def test_concentration_addon_still_applies_after_netting_with_house_entries():
    # TQQQ 800 x $100 = 80,000 of 100,000 gross: 0.75 x 80,000 + 10% add-on of 80,000
    book = [Holding("TQQQ", 500, D(100)), Holding("TQQQ", 300, D(100)), Holding("B", 200, D(100))]
    p = MarginParams(concentration_addon=D("0.10"))
    r = compute_margin(D(0), book, p, {"TQQQ": HouseRates(long_rate=D("0.75"))})
    assert r.maintenance_req == D(60_000) + D(8_000) + D(5_000)


def test_entry_in_force_is_the_latest_as_of_not_after_the_event_time():
    book = HouseBook(
        [
            entry(as_of="2026-02-01T00:00:00Z", long_rate=0.50),
            entry(as_of="2026-02-16T14:30:00Z", long_rate=0.75),
            entry(as_of="2026-03-01T00:00:00Z", long_rate=1),
            entry(symbol="UVXY", as_of="2026-02-20T00:00:00Z", non_marginable=True),
        ]
    )
    assert book.in_force(datetime(2026, 1, 31, tzinfo=UTC)) == {}
    assert book.in_force(T0.replace(minute=29)) == {"TQQQ": HouseRates(D("0.50"), D("0.30"))}
    # an entry whose as_of equals the event time is in force
    assert book.in_force(T0)["TQQQ"].long_rate == D("0.75")
    assert set(book.in_force(datetime(2026, 2, 20, tzinfo=UTC))) == {"TQQQ", "UVXY"}
    assert book.in_force(datetime(2026, 3, 2, tzinfo=UTC), ["UVXY"]) == {
        "UVXY": HouseRates(D("0.25"), D("0.30"), True)
    }


def test_same_as_of_twice_the_later_one_read_wins():
    book = HouseBook([entry(long_rate=0.50), entry(long_rate=0.60)])
    assert book.in_force(T0)["TQQQ"].long_rate == D("0.60")


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("long_rate", 1.5, "less than or equal to 1"),
        ("long_rate", -0.1, "greater than or equal to 0"),
        ("short_rate", 10, "less than 10"),
        ("short_rate", 0.00001, "at most 4 decimal places"),
        ("long_rate", "0.5", "should be a number"),
        ("non_marginable", "yes", "valid boolean"),
        ("non_marginable", 1, "valid boolean"),
        ("as_of", "2026-02-01", "not ISO-8601 with a zone"),
        ("symbol", "", "at least 1 character"),
        ("updated_by", None, "string"),
    ],
)
def test_bad_entries_are_rejected_with_the_field(field, value, why):
    with pytest.raises(ValidationError) as err:
        entry(**{field: value})
    assert field in str(err.value)
    assert why.lower() in str(err.value).lower()


def test_missing_field_is_rejected():
    raw = entry().model_dump(mode="json")
    del raw["short_rate"]
    with pytest.raises(ValidationError, match="short_rate"):
        HouseEntry.model_validate(raw)


rates = st.builds(
    HouseRates,
    long_rate=decimals("0", "1", 4),
    short_rate=decimals("0", "9.9999", 4),
    non_marginable=st.booleans(),
)


@settings(max_examples=300, deadline=None)  # a property of the numbers, not of speed
@given(money, books(), house, st.dictionaries(st.sampled_from("ABCDE"), rates, max_size=5))
def test_a_house_entry_never_lowers_any_requirement(cash, book, p, entries):
    # Given any book, house-wide settings and any house entries for its symbols
    # Then the requirement with the entries is at least the one without, at the mark and in
    # every stress scenario, and nothing but the requirement changes
    plain, raised = compute_margin(cash, book, p), compute_margin(cash, book, p, entries)
    assert raised.maintenance_req >= plain.maintenance_req
    assert (raised.equity, raised.gross) == (plain.equity, plain.gross)
    rows = zip(stress_table(cash, book, p), stress_table(cash, book, p, house=entries), strict=True)
    for a, b in rows:
        assert b.result.maintenance_req >= a.result.maintenance_req
        assert b.result.equity == a.result.equity
