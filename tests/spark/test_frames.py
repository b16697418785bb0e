"""emr_jobs.frames: a batch's driver-side rows reach the JVM exactly, nested types included."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pyspark.sql import SparkSession

from emr_jobs.book import SymbolFacts
from emr_jobs.frames import literal_array, local_frame
from emr_jobs.state import CASH_TYPE, SYMBOL_FIELDS

D = Decimal


def test_symbol_rows_with_house_entries_arrive_exactly(spark: SparkSession) -> None:
    # Given a symbol whose house entry is dated after its last change (the table then carries
    # every entry, an array of structs of decimals) and one with no entry at all
    f = SymbolFacts(tick=(10, 0, 1, D("50.1234")), changed_ts=10)
    f = f.merged(SymbolFacts(house=((20, 0, 2, D("0.7500"), D("0.3333"), True, 5),)))
    assert f.house_ahead()
    price, beta = f.effective()
    rows = [
        ("TQQQ", price, beta, f.changed_ts, *f.house_columns()),
        ("AAPL", D("190.0001"), None, None, None, None, None, None),
    ]

    # When they become a local frame of the symbol table's fields
    got = {r["symbol"]: r for r in local_frame(spark, SYMBOL_FIELDS, rows).collect()}

    # Then every value is the driver's, to the last digit, and the nested entries are structs
    t = got["TQQQ"]
    assert (t["price"], t["beta"], t["changed_ts"]) == (D("50.1234"), D(1), 10)
    assert (t["h_long"], t["h_short"], t["h_nm"]) == (None, None, None)
    [entry] = t["h_entries"]
    assert entry.asDict() == {
        "as_of": 20,
        "long_rate": D("0.7500"),
        "short_rate": D("0.3333"),
        "non_marginable": True,
    }
    a = got["AAPL"]
    assert a["price"] == D("190.0001") and a["h_entries"] is None and a["beta"] is None


def test_wide_decimals_and_literal_arrays_stay_exact(spark: SparkSession) -> None:
    # Given cash at the full width of its type and a literal array of structs with decimals
    cash = D("-1234567890123456789012345678.12345678")
    frame = local_frame(spark, (("account_id", "string"), ("cash", CASH_TYPE)), [("A1", cash)])
    docs = [{"rate": D("0.0001"), "n": 3}, {"rate": D("1.2500"), "n": None}]
    arr = spark.range(1).select(literal_array(docs, "struct<rate:decimal(6,4),n:int>").alias("a"))

    # Then both come back exactly
    assert frame.collect()[0]["cash"] == cash
    assert [r.asDict() for r in arr.collect()[0]["a"]] == [
        {"rate": D("0.0001"), "n": 3},
        {"rate": D("1.2500"), "n": None},
    ]


def test_values_that_cannot_travel_exactly_are_refused(spark: SparkSession) -> None:
    fields = (("symbol", "string"), ("h_entries", SYMBOL_FIELDS[-1][1]))
    # A double is not exact
    with pytest.raises(TypeError, match="float"):
        local_frame(spark, (("x", "decimal(6,4)"),), [(0.1,)])
    # An entry with a missing field is not a struct of the type
    with pytest.raises(TypeError, match="not a struct of 4 fields"):
        local_frame(spark, fields, [("X", [(1, D("0.5"), D(0))])])
    # A decimal the column would round or overflow (Spark's reader would change it silently)
    with pytest.raises(ValueError, match="more than 4 decimal places"):
        local_frame(spark, (("x", "decimal(6,4)"),), [(D("0.12345"),)])
    with pytest.raises(ValueError, match="more than 2 integer digits"):
        local_frame(spark, (("x", "decimal(6,4)"),), [(D("123.5"),)])
    with pytest.raises(ValueError, match="more than 4 decimal places"):
        local_frame(spark, fields, [("X", [(1, D("0.123456"), D(0), False)])])
    # ... while trailing zeros beyond the scale are the same number
    assert local_frame(spark, (("x", "decimal(6,4)"),), [(D("1.500000"),)]).first()[0] == D("1.5")
    # A row of the wrong width
    with pytest.raises(ValueError, match="a row of 1 values for 2 fields"):
        local_frame(spark, fields, [("X",)])
