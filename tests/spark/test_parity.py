"""Parity: the Spark expressions and margin_risk give the same exact numbers (zero tolerance)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pyspark.sql import SparkSession

from emr_jobs.calc import compute_margin_df, compute_stress_df
from margin_risk.params import MarginParams
from margin_risk.rules import cents, compute_margin
from margin_risk.stress import stress_table, worst_scenario
from tests.spark.books import Book, generate_books

pytestmark = pytest.mark.spark

N_ACCOUNTS = 3000
POSITIONS = "account_id string, symbol string, quantity decimal(16,4), price decimal(19,4), beta decimal(6,4)"
CASH = "account_id string, cash decimal(19,4)"


def _frames(spark: SparkSession, books: list[Book]):  # type: ignore[no-untyped-def]
    pos = [(b.account_id, h.symbol, h.quantity, h.price, h.beta) for b in books for h in b.holdings]
    positions = spark.createDataFrame(pos, POSITIONS)
    cash = spark.createDataFrame([(b.account_id, b.cash) for b in books], CASH)
    return positions, cash


@pytest.mark.parametrize(
    "params",
    [MarginParams(), MarginParams(concentration_addon="0.10", concentration_threshold="0.30")],
    ids=["defaults", "concentration-addon"],
)
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
        for field in (
            "long_market_value",
            "short_market_value",
            "equity",
            "maintenance_req",
            "excess",
            "deficiency",
        ):
            assert got[field] == getattr(ref, field), (b.account_id, field)
        half_cents += (ref.maintenance_req * 1000) % 10 == 5
        table = stress_table(b.cash, b.holdings, params)
        srow = stress[b.account_id]
        assert [s["scenario"] for s in srow["scenarios"]] == list(params.scenarios)
        for got_s, want_s in zip(srow["scenarios"], table, strict=True):
            assert got_s["stressed_equity"] == want_s.result.equity
            assert got_s["stressed_maintenance_req"] == want_s.result.maintenance_req
            assert got_s["stressed_deficiency"] == want_s.result.deficiency
        worst = worst_scenario(table)
        assert srow["worst_scenario"] == worst.scenario, b.account_id
        assert srow["worst_deficiency"] == worst.result.deficiency
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
