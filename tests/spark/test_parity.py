"""Parity: the Spark expressions and margin_risk give the same exact numbers (zero tolerance)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from emr_jobs.calc import (
    HOUSE_ENTRIES_TYPE,
    HOUSE_LONG,
    HOUSE_NON_MARGINABLE,
    HOUSE_SHORT,
    MARGIN_COLUMNS,
    compute_margin_df,
    compute_stress_df,
    house_in_force,
)
from margin_risk.house import HouseBook, HouseEntry
from margin_risk.params import MarginParams
from margin_risk.rules import cents, compute_margin
from margin_risk.stress import stress_table, worst_scenario
from tests.spark.books import SYMBOLS, Book, generate_books

pytestmark = pytest.mark.spark

N_ACCOUNTS = 3000
POSITIONS = "account_id string, symbol string, quantity decimal(16,4), price decimal(19,4), beta decimal(6,4)"
CASH = "account_id string, cash decimal(19,4)"
# The default rules, and a concentration add-on that binds on many generated books.
PARAMETERS = pytest.mark.parametrize(
    "params",
    [MarginParams(), MarginParams(concentration_addon="0.10", concentration_threshold="0.30")],
    ids=["defaults", "concentration-addon"],
)


def _frames(spark: SparkSession, books: list[Book]):  # type: ignore[no-untyped-def]
    pos = [(b.account_id, h.symbol, h.quantity, h.price, h.beta) for b in books for h in b.holdings]
    positions = spark.createDataFrame(pos, POSITIONS)
    cash = spark.createDataFrame([(b.account_id, b.cash) for b in books], CASH)
    return positions, cash


def assert_same_stress(srow, table, account_id):  # type: ignore[no-untyped-def]
    """Spark's stress row equals the core's table exactly; returns the core's worst scenario."""
    for got_s, want_s in zip(srow["scenarios"], table, strict=True):
        assert got_s["stressed_equity"] == want_s.result.equity
        assert got_s["stressed_maintenance_req"] == want_s.result.maintenance_req
        assert got_s["stressed_deficiency"] == want_s.result.deficiency
    worst = worst_scenario(table)
    assert srow["worst_scenario"] == worst.scenario, account_id
    assert srow["worst_deficiency"] == worst.result.deficiency
    return worst


@PARAMETERS
def test_margin_and_stress_match_reference_exactly(
    spark: SparkSession, params: MarginParams
) -> None:
    # Given thousands of generated books (cent prices, whole and fractional shares, shorts around
    # $5, half-cent requirements)
    books = generate_books(N_ACCOUNTS)
    positions, cash = _frames(spark, books)

    # When Spark computes margin and stress
    margin = {r["account_id"]: r for r in compute_margin_df(positions, cash, params).collect()}
    stress = {r["account_id"]: r for r in compute_stress_df(positions, cash, params).collect()}

    # Then every figure equals margin_risk's exact decimal (not just its cents)
    assert len(margin) == len(stress) == N_ACCOUNTS
    breached = floored = half_cents = 0
    for b in books:
        ref = compute_margin(b.cash, b.holdings, params)
        got = margin[b.account_id]
        for field in MARGIN_COLUMNS:
            assert got[field] == getattr(ref, field), (b.account_id, field)
        half_cents += (ref.maintenance_req * 1000) % 10 == 5
        table = stress_table(b.cash, b.holdings, params)
        srow = stress[b.account_id]
        assert [s["scenario"] for s in srow["scenarios"]] == list(params.scenarios)
        worst = assert_same_stress(srow, table, b.account_id)
        breached += worst.result.deficiency > 0
        floored += any(h.price * (1 + h.beta * s) < 0 for h in b.holdings for s in params.scenarios)
    # And the generated book really exercises the interesting cases
    assert breached > N_ACCOUNTS // 10
    assert floored > 50
    assert half_cents > 50
    assert sum(1 for b in books if not b.holdings) > 50


def test_the_half_cent_example_presents_half_up(spark: SparkSession) -> None:
    # Given short 755 @ 33.59 and short 605 @ 138.26: 30% of SMV is exactly 32,702.325
    positions = spark.createDataFrame(
        [("A", "X", Decimal(-755), Decimal("33.59"), Decimal(1)),
         ("A", "Y", Decimal(-605), Decimal("138.26"), Decimal(1))],
        POSITIONS,
    )  # fmt: skip
    cash = spark.createDataFrame([("A", Decimal(200000))], CASH)
    row = compute_margin_df(positions, cash, MarginParams()).collect()[0]
    # Then Spark carries it exactly, and it presents as 32,702.33
    assert row["maintenance_req"] == Decimal("32702.325")
    assert cents(row["maintenance_req"]) == Decimal("32702.33")


def test_known_book_numbers_from_the_spec(spark: SparkSession) -> None:
    # Given the spec's example account: 1000 AAPL long at $50, cash -20,000, plus a $4 short
    positions = spark.createDataFrame(
        [("A", "AAPL", Decimal(1000), Decimal(50), Decimal("1.2")),
         ("A", "PENNY", Decimal(-100), Decimal(4), Decimal(1))],
        POSITIONS,
    )  # fmt: skip
    cash = spark.createDataFrame([("A", Decimal(-20000))], CASH)
    # When
    row = compute_margin_df(positions, cash, MarginParams()).collect()[0]
    # Then LMV 50,000, SMV 400, equity 29,600, req 12,500 + max(250, 400) = 12,900
    assert (row["long_market_value"], row["short_market_value"]) == (50000, 400)
    assert row["equity"] == 29600
    assert row["maintenance_req"] == 12900
    assert row["excess"] == 16700 and row["deficiency"] == 0


# --- house requirements per symbol (spec section 7) ----------------------------------------------
T0 = datetime(2026, 2, 16, 14, 0, tzinfo=UTC)


def _entry(symbol: str, hours: int, long_rate: str, short_rate: str, nm: bool) -> HouseEntry:
    return HouseEntry.model_validate(
        {
            "symbol": symbol,
            "long_rate": Decimal(long_rate),
            "short_rate": Decimal(short_rate),
            "non_marginable": nm,
            "as_of": T0 + timedelta(hours=hours),
            "updated_by": "risk-desk",
        }
    )


def house_entries() -> list[HouseEntry]:
    """Entries on most generated symbols: 2x and 3x leveraged-ETF long rates, non-marginable
    names, short rates above the default (and a short rate above the $2.50 / 100% rule of
    cheap shorts), entries that a later one replaces, and entries dated after some of the
    calculations (which must not apply to those)."""
    out = []
    for i, s in enumerate(SYMBOLS):
        kind = i % 6
        if kind == 0:
            out.append(_entry(s, -5, "0.50", "0", False))  # 2x leveraged ETF
            out.append(_entry(s, 2, "0.75", "0", False))  # raised to 3x after some calculations
        elif kind == 1:
            out.append(_entry(s, -3, "0", "0", True))  # non-marginable
        elif kind == 2:
            out.append(_entry(s, -1, "0.75", "0.40", False))  # 3x, short above the default 30%
            out.append(_entry(s, 3, "0", "0", True))  # later: non-marginable
        elif kind == 3:
            out.append(_entry(s, -2, "0", "1.50", False))  # short 150%: above the cheap-short rule
        elif kind == 4:
            out.append(_entry(s, 4, "1", "2", True))  # dated after every calculation
        # kind 5: no entry
    return out


def _calc_time(i: int) -> datetime:
    """Each account's calculation time: before, between and after the entries' as_of."""
    return T0 + timedelta(hours=i % 4, minutes=i % 7)


def _us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


@PARAMETERS
def test_house_entries_in_force_at_the_calculation_time_match_the_core_exactly(
    spark: SparkSession, params: MarginParams
) -> None:
    # Given generated books, each account calculated at its own time, and house entries on its
    # symbols (some dated after that time)
    books = generate_books(1200, seed=21)
    entries = house_entries()
    book_of_entries = HouseBook(entries)
    by_symbol: dict[str, list[tuple[Any, ...]]] = {}
    for e in sorted(entries, key=lambda e: e.as_of):
        by_symbol.setdefault(e.symbol, []).append(
            (_us(e.as_of), e.long_rate, e.short_rate, e.non_marginable)
        )
    symbols = spark.createDataFrame(
        list(by_symbol.items()), f"symbol string, h_entries {HOUSE_ENTRIES_TYPE}"
    )
    pos = [
        (b.account_id, h.symbol, h.quantity, h.price, h.beta, _us(_calc_time(i)))
        for i, b in enumerate(books)
        for h in b.holdings
    ]
    rows = spark.createDataFrame(pos, POSITIONS + ", at long").join(symbols, "symbol", "left")
    in_force = house_in_force(F.col("h_entries"), F.col("at"))
    positions = rows.select(
        "account_id",
        "symbol",
        "quantity",
        "price",
        "beta",
        in_force["long_rate"].alias(HOUSE_LONG),
        in_force["short_rate"].alias(HOUSE_SHORT),
        in_force["non_marginable"].alias(HOUSE_NON_MARGINABLE),
    )
    cash = spark.createDataFrame([(b.account_id, b.cash) for b in books], CASH)

    # When Spark computes margin and stress with the entries in force
    margin = {r["account_id"]: r for r in compute_margin_df(positions, cash, params).collect()}
    stress = {r["account_id"]: r for r in compute_stress_df(positions, cash, params).collect()}

    # Then every figure is the core's exact decimal with the entries in force at that time
    raised = later_ignored = 0
    for i, b in enumerate(books):
        house = book_of_entries.in_force(_calc_time(i))
        ref = compute_margin(b.cash, b.holdings, params, house)
        got = margin[b.account_id]
        for field in MARGIN_COLUMNS:
            assert got[field] == getattr(ref, field), (b.account_id, field)
        table = stress_table(b.cash, b.holdings, params, house=house)
        srow = stress[b.account_id]
        assert_same_stress(srow, table, b.account_id)
        plain = compute_margin(b.cash, b.holdings, params)
        raised += ref.maintenance_req > plain.maintenance_req
        every = book_of_entries.in_force(T0 + timedelta(days=1))
        later_ignored += compute_margin(b.cash, b.holdings, params, every) != ref
    # And the entries really raise requirements, and the later ones really were left out
    assert raised > len(books) // 2
    assert later_ignored > len(books) // 4


def test_house_examples_from_the_spec(spark: SparkSession) -> None:
    # Given long 100 TQQQ at $50, with long_rate 0.75 and then non-marginable
    positions = spark.createDataFrame(
        [("A", "TQQQ", Decimal(100), Decimal(50), Decimal(3), Decimal("0.75"), Decimal(0), False),
         ("B", "TQQQ", Decimal(100), Decimal(50), Decimal(3), Decimal(0), Decimal(0), True),
         ("C", "TQQQ", Decimal(100), Decimal(50), Decimal(3), None, None, None)],
        POSITIONS + f", {HOUSE_LONG} decimal(6,4), {HOUSE_SHORT} decimal(6,4),"
        f" {HOUSE_NON_MARGINABLE} boolean",
    )  # fmt: skip
    cash = spark.createDataFrame([(a, Decimal(0)) for a in "ABC"], CASH)
    got = {r["account_id"]: r["maintenance_req"] for r in
           compute_margin_df(positions, cash, MarginParams()).collect()}  # fmt: skip
    # Then 3,750, 5,000, and the default 1,250 without an entry
    assert got == {"A": Decimal(3750), "B": Decimal(5000), "C": Decimal(1250)}
