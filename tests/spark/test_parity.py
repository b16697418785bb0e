"""Parity: the Spark expressions and margin_risk give the same numbers to the cent."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession

from emr_jobs.calc import compute_margin_df, compute_stress_df
from margin_risk.params import MarginParams
from margin_risk.rules import cents, compute_margin
from margin_risk.stress import stress_table, worst_scenario
from tests.spark.books import Book, generate_books

pytestmark = pytest.mark.spark

N_ACCOUNTS = 3000


def _frames(spark: SparkSession, books: list[Book]):  # type: ignore[no-untyped-def]
    pos = [(b.account_id, h.symbol, h.quantity, h.price, h.beta) for b in books for h in b.holdings]
    positions = spark.createDataFrame(
        pos, "account_id string, symbol string, quantity double, price double, beta double"
    )
    cash = spark.createDataFrame(
        [(b.account_id, b.cash) for b in books], "account_id string, cash double"
    )
    return positions, cash


@pytest.mark.parametrize(
    "params",
    [MarginParams(), MarginParams(concentration_addon=0.10, concentration_threshold=0.30)],
    ids=["defaults", "concentration-addon"],
)
def test_margin_and_stress_match_reference_to_the_cent(
    spark: SparkSession, params: MarginParams
) -> None:
    # Given thousands of generated books
    books = generate_books(N_ACCOUNTS)
    positions, cash = _frames(spark, books)

    # When Spark computes margin and stress
    margin = {r["account_id"]: r for r in compute_margin_df(positions, cash, params).collect()}
    stress = {r["account_id"]: r for r in compute_stress_df(positions, cash, params).collect()}

    # Then every account matches margin_risk to the cent, including the worst scenario
    assert len(margin) == len(stress) == N_ACCOUNTS
    breached = floored = 0
    for b in books:
        hs = sorted(b.holdings, key=lambda h: h.symbol)
        ref = compute_margin(b.cash, hs, params)
        got = margin[b.account_id]
        for field, want in (
            ("long_market_value", ref.long_market_value),
            ("short_market_value", ref.short_market_value),
            ("equity", ref.equity),
            ("maintenance_req", ref.maintenance_req),
            ("excess", ref.excess),
            ("deficiency", ref.deficiency),
        ):
            assert cents(got[field]) == cents(want), (b.account_id, field, got[field], want)
        table = stress_table(b.cash, hs, params)
        srow = stress[b.account_id]
        assert [s["scenario"] for s in srow["scenarios"]] == list(params.scenarios)
        for got_s, want_s in zip(srow["scenarios"], table, strict=True):
            assert cents(got_s["stressed_equity"]) == cents(want_s.result.equity)
            assert cents(got_s["stressed_maintenance_req"]) == cents(want_s.result.maintenance_req)
            assert cents(got_s["stressed_deficiency"]) == cents(want_s.result.deficiency)
        worst = worst_scenario(table)
        assert srow["worst_scenario"] == worst.scenario, b.account_id
        assert cents(srow["worst_deficiency"]) == cents(worst.result.deficiency)
        breached += worst.result.deficiency > 0
        floored += any(h.price * (1 + h.beta * s) < 0 for h in b.holdings for s in params.scenarios)
    # And the generated book really exercises the interesting cases
    assert breached > N_ACCOUNTS // 10
    assert floored > 50
    assert sum(1 for b in books if not b.holdings) > 50


def test_known_book_numbers_from_the_spec(spark: SparkSession) -> None:
    # Given the spec's example account: 1000 AAPL long at $50, cash -20,000, plus a $4 short
    positions = spark.createDataFrame(
        [("A", "AAPL", 1000.0, 50.0, 1.2), ("A", "PENNY", -100.0, 4.0, 1.0)],
        "account_id string, symbol string, quantity double, price double, beta double",
    )
    cash = spark.createDataFrame([("A", -20000.0)], "account_id string, cash double")
    # When
    row = compute_margin_df(positions, cash, MarginParams()).collect()[0]
    # Then LMV 50,000, SMV 400, equity 29,600, req 12,500 + max(250, 400) = 12,900
    assert (row["long_market_value"], row["short_market_value"]) == (50000.0, 400.0)
    assert row["equity"] == 29600.0
    assert row["maintenance_req"] == 12900.0
    assert row["excess"] == 16700.0 and row["deficiency"] == 0.0
