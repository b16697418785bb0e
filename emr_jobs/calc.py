"""Margin (spec section 1) and beta-weighted SPY stress (section 2) as native Spark expressions.

No Python UDF: per account, positions are collected into an array sorted by symbol and folded
with Spark's ``aggregate`` higher-order function. Folding in symbol order performs exactly the
same IEEE-754 operations, in the same order, as ``margin_risk.rules.compute_margin`` fed with
holdings sorted by symbol, so both engines agree bit for bit (not just to the cent).
"""

from __future__ import annotations

from typing import List

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from margin_risk.params import MarginParams

POSITION_COLUMNS = ("account_id", "symbol", "quantity", "price", "beta")
MARGIN_COLUMNS = (
    "long_market_value",
    "short_market_value",
    "equity",
    "maintenance_req",
    "excess",
    "deficiency",
)


def _lit(x: float) -> Column:
    return F.lit(float(x))


def position_requirement(qty: Column, price: Column, p: MarginParams) -> Column:
    """USD requirement of one position before add-ons (mirrors rules.position_requirement)."""
    mv = F.abs(qty * price)
    shares = -qty
    short_high = F.greatest(_lit(p.short_per_share) * shares, _lit(p.short_rate) * mv)
    short_low = F.greatest(
        _lit(p.low_price_short_per_share) * shares, _lit(p.low_price_short_rate) * mv
    )
    return (
        F.when(qty > 0, _lit(p.long_rate) * mv)
        .when((qty < 0) & (price >= _lit(p.low_price_threshold)), short_high)
        .when(qty < 0, short_low)
        .otherwise(_lit(0.0))
    )


def _fold_margin(holdings: Column, cash: Column, p: MarginParams) -> Column:
    """Struct(lmv, smv, equity, req) from an array of struct(symbol, quantity, price, beta)."""
    zero = F.struct(_lit(0.0).alias("lmv"), _lit(0.0).alias("smv"), _lit(0.0).alias("req"))

    def step(acc: Column, h: Column) -> Column:
        mv = h["quantity"] * h["price"]
        return F.struct(
            F.when(mv > 0, acc["lmv"] + mv).otherwise(acc["lmv"]).alias("lmv"),
            F.when(mv < 0, acc["smv"] + (-mv)).otherwise(acc["smv"]).alias("smv"),
            (acc["req"] + position_requirement(h["quantity"], h["price"], p)).alias("req"),
        )

    base = F.aggregate(holdings, zero, step)
    lmv, smv = base["lmv"], base["smv"]
    req = base["req"]
    if p.concentration_addon > 0:
        gross = lmv + smv

        def addon(acc: Column, h: Column) -> Column:
            v = F.abs(h["quantity"] * h["price"])
            return F.when(
                v > _lit(p.concentration_threshold) * gross, acc + _lit(p.concentration_addon) * v
            ).otherwise(acc)

        req = F.aggregate(holdings, req, addon)
    equity = cash + lmv - smv
    return F.struct(
        lmv.alias("long_market_value"),
        smv.alias("short_market_value"),
        equity.alias("equity"),
        req.alias("maintenance_req"),
    )


def _shock(holdings: Column, move: float) -> Column:
    """Reprice every holding at price * (1 + beta * move), floored at 0."""
    return F.transform(
        holdings,
        lambda h: F.struct(
            h["symbol"].alias("symbol"),
            h["quantity"].alias("quantity"),
            F.greatest(_lit(0.0), h["price"] * (_lit(1.0) + h["beta"] * _lit(move))).alias("price"),
            h["beta"].alias("beta"),
        ),
    )


def holdings_by_account(positions_df: DataFrame, cash_df: DataFrame) -> DataFrame:
    """account_id, cash, holdings (array sorted by symbol): every account with cash or a position.

    Positions with quantity 0 are dropped; accounts without a cash row have cash 0.
    """
    pos = positions_df.where(F.col("quantity") != 0).select(
        "account_id",
        F.struct(
            F.col("symbol").cast("string").alias("symbol"),
            F.col("quantity").cast("double").alias("quantity"),
            F.col("price").cast("double").alias("price"),
            F.coalesce(F.col("beta").cast("double"), _lit(1.0)).alias("beta"),
        ).alias("h"),
    )
    grouped = pos.groupBy("account_id").agg(F.array_sort(F.collect_list("h")).alias("holdings"))
    cash = cash_df.select("account_id", F.col("cash").cast("double").alias("cash"))
    empty = F.array().cast("array<struct<symbol:string,quantity:double,price:double,beta:double>>")
    return grouped.join(cash, "account_id", "full_outer").select(
        "account_id",
        F.coalesce(F.col("cash"), _lit(0.0)).alias("cash"),
        F.coalesce(F.col("holdings"), empty).alias("holdings"),
    )


def margin_struct(holdings: Column, cash: Column, p: MarginParams) -> Column:
    """All six money fields of spec section 1 as one struct column."""
    m = _fold_margin(holdings, cash, p)
    excess = m["equity"] - m["maintenance_req"]
    return F.struct(
        m["long_market_value"].alias("long_market_value"),
        m["short_market_value"].alias("short_market_value"),
        m["equity"].alias("equity"),
        m["maintenance_req"].alias("maintenance_req"),
        excess.alias("excess"),
        F.greatest(_lit(0.0), m["maintenance_req"] - m["equity"]).alias("deficiency"),
    )


def stress_columns(holdings: Column, cash: Column, p: MarginParams) -> List[Column]:
    """scenarios (array in grid order), worst_scenario, worst_deficiency (spec section 2)."""
    rows = []
    for s in p.scenarios:
        m = _fold_margin(_shock(holdings, s), cash, p)
        rows.append(
            F.struct(
                _lit(s).alias("scenario"),
                m["equity"].alias("stressed_equity"),
                m["maintenance_req"].alias("stressed_maintenance_req"),
                F.greatest(_lit(0.0), m["maintenance_req"] - m["equity"]).alias(
                    "stressed_deficiency"
                ),
                (m["equity"] - m["maintenance_req"]).alias("stressed_excess"),
            )
        )
    grid = F.array(*rows)

    def pick(best: Column, r: Column) -> Column:
        d, bd = r["stressed_deficiency"], best["stressed_deficiency"]
        better = (d > bd) | ((d == bd) & (r["stressed_excess"] < best["stressed_excess"]))
        return F.when(better, r).otherwise(best)

    worst = F.aggregate(F.slice(grid, 2, max(len(p.scenarios) - 1, 1)), grid[0], pick)
    if len(p.scenarios) == 1:
        worst = grid[0]
    return [
        grid.alias("scenarios_full"),
        worst["scenario"].alias("worst_scenario"),
        worst["stressed_deficiency"].alias("worst_deficiency"),
    ]


def compute_margin_df(positions_df: DataFrame, cash_df: DataFrame, p: MarginParams) -> DataFrame:
    """Per account: account_id, cash and the six money fields of spec section 1 (unrounded USD).

    positions_df: account_id, symbol, quantity (signed), price, beta; cash_df: account_id, cash.
    """
    acc = holdings_by_account(positions_df, cash_df)
    return acc.select(
        "account_id", "cash", margin_struct(F.col("holdings"), F.col("cash"), p).alias("m")
    ).select("account_id", "cash", *[F.col("m")[c].alias(c) for c in MARGIN_COLUMNS])


def compute_stress_df(positions_df: DataFrame, cash_df: DataFrame, p: MarginParams) -> DataFrame:
    """Per account: scenarios [{scenario, stressed_equity, stressed_maintenance_req,
    stressed_deficiency}] in grid order, worst_scenario and worst_deficiency (spec section 2)."""
    acc = holdings_by_account(positions_df, cash_df)
    return acc.select("account_id", *stress_columns(F.col("holdings"), F.col("cash"), p)).select(
        "account_id",
        public_scenarios(F.col("scenarios_full")).alias("scenarios"),
        "worst_scenario",
        "worst_deficiency",
    )


def public_scenarios(grid: Column) -> Column:
    """The grid without the helper excess field (the spec's four scenario fields)."""
    return F.transform(
        grid,
        lambda r: F.struct(
            r["scenario"].alias("scenario"),
            r["stressed_equity"].alias("stressed_equity"),
            r["stressed_maintenance_req"].alias("stressed_maintenance_req"),
            r["stressed_deficiency"].alias("stressed_deficiency"),
        ),
    )
