"""Margin (spec section 1) and beta-weighted SPY stress (section 2) as native Spark expressions.

Columnar and exact: every per-position term (market value and requirement, at the mark and at
each shocked price) is a decimal column, and each account's sums are a hash aggregation over its
positions. Decimal arithmetic runs with ``spark.sql.decimalOperations.allowPrecisionLoss=false``
(see ``emr_jobs.session``), so a product keeps the sum of its operands' scales; the terms are then
held at ``decimal(38, RESULT_SCALE)``, exact for every input within the bounds of
``margin_risk.params``. Exact sums are the same in any order, so the job agrees with
``margin_risk.rules`` and ``margin_risk.stress`` to the last digit, not just to the cent.
No Python UDF, no per-account arrays of positions, no sorts or higher-order folds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import List, Sequence, Tuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from margin_risk.params import RESULT_PRECISION, RESULT_SCALE, MarginParams

MARGIN_COLUMNS = (
    "long_market_value",
    "short_market_value",
    "equity",
    "maintenance_req",
    "excess",
    "deficiency",
)
# Column types of the job's exact numbers (sized from margin_risk.params).
QUANTITY_TYPE = "decimal(24,4)"  # net position: a sum of bounded fills
PRICE_TYPE = "decimal(19,4)"
BETA_TYPE = "decimal(6,4)"
CASH_TYPE = "decimal(38,8)"  # cash.v1 amounts (4 places) and fills' quantity x price (8)
MONEY_TYPE = f"decimal({RESULT_PRECISION},{RESULT_SCALE})"
MOVE_TYPE = "decimal(6,4)"  # a SPY move of the grid


def _lit(x: Decimal) -> Column:
    """An exact decimal literal (its own precision and scale, never a double)."""
    return F.lit(Decimal(x))


def _money(c: Column) -> Column:
    return c.cast(MONEY_TYPE)


def position_requirement(qty: Column, price: Column, p: MarginParams) -> Column:
    """USD requirement of one position before add-ons (mirrors rules.position_requirement)."""
    mv = F.abs(qty * price)
    shares = -qty
    short_high = F.greatest(
        _money(_lit(p.short_per_share) * shares), _money(_lit(p.short_rate) * mv)
    )
    short_low = F.greatest(
        _money(_lit(p.low_price_short_per_share) * shares),
        _money(_lit(p.low_price_short_rate) * mv),
    )
    return (
        F.when(qty > 0, _money(_lit(p.long_rate) * mv))
        .when((qty < 0) & (price >= _lit(p.low_price_threshold)), short_high)
        .when(qty < 0, short_low)
        .otherwise(_money(F.lit(0)))
    )


def _grid(p: MarginParams, stress: bool) -> List[Tuple[str, Decimal]]:
    """(suffix, move) of every evaluation: the mark ("m") first, then each scenario in order."""
    out: List[Tuple[str, Decimal]] = [("m", Decimal(0))]
    if stress:
        out.extend((f"s{i}", Decimal(s)) for i, s in enumerate(p.scenarios))
    return out


def _shocked(price: Column, beta: Column, move: Decimal, mark: bool) -> Column:
    """price * (1 + beta * move), floored at 0; the mark itself is not repriced."""
    if mark:
        return price
    return F.greatest(_lit(Decimal(0)), price * (_lit(Decimal(1)) + beta * _lit(move)))


def _position_terms(positions: DataFrame, p: MarginParams, stress: bool) -> DataFrame:
    """account_id plus, per evaluation e: mv_e (signed market value) and req_e (requirement
    before add-ons), all decimal(38, RESULT_SCALE)."""
    q = F.col("quantity").cast(QUANTITY_TYPE)
    price = F.col("price").cast(PRICE_TYPE)
    beta = F.coalesce(F.col("beta").cast(BETA_TYPE), _lit(Decimal(1)))
    cols: List[Column] = [F.col("account_id")]
    for suffix, move in _grid(p, stress):
        px = _shocked(price, beta, move, suffix == "m")
        cols.append(_money(q * px).alias(f"mv_{suffix}"))
        cols.append(position_requirement(q, px, p).alias(f"req_{suffix}"))
    return positions.where(F.col("quantity") != 0).select(*cols)


def _sums(terms: DataFrame, suffixes: Sequence[str]) -> DataFrame:
    zero = _money(F.lit(0))
    aggs: List[Column] = []
    for s in suffixes:
        mv = F.col(f"mv_{s}")
        aggs.append(F.sum(F.when(mv > 0, mv).otherwise(zero)).alias(f"lmv_{s}"))
        aggs.append(F.sum(F.when(mv < 0, -mv).otherwise(zero)).alias(f"smv_{s}"))
        aggs.append(F.sum(F.col(f"req_{s}")).alias(f"req_{s}"))
    return terms.groupBy("account_id").agg(*aggs)


def _with_addon(
    terms: DataFrame, sums: DataFrame, p: MarginParams, suffixes: Sequence[str]
) -> DataFrame:
    """The concentration add-on after netting: addon x |mv| of every position above
    threshold x the account's gross, evaluation by evaluation (a second aggregation)."""
    t, s = terms.alias("t"), sums.alias("s")
    joined = t.join(s, "account_id")
    zero = _money(F.lit(0))
    aggs: List[Column] = []
    for x in suffixes:
        v = F.abs(F.col(f"t.mv_{x}"))
        gross = F.col(f"s.lmv_{x}") + F.col(f"s.smv_{x}")
        add = F.when(
            v > _lit(p.concentration_threshold) * gross, _money(_lit(p.concentration_addon) * v)
        ).otherwise(zero)
        aggs.append(F.sum(add).alias(f"add_{x}"))
    addons = joined.groupBy("account_id").agg(*aggs)
    out = sums.join(addons, "account_id")
    return out.select(
        "account_id",
        *[c for x in suffixes for c in (f"lmv_{x}", f"smv_{x}")],
        *[_money(F.col(f"req_{x}") + F.col(f"add_{x}")).alias(f"req_{x}") for x in suffixes],
    )


def _figure_columns(cash: Column, suffix: str) -> List[Column]:
    """Equity, excess and deficiency of one evaluation (spec section 1), as named columns."""
    lmv, smv, req = F.col(f"lmv_{suffix}"), F.col(f"smv_{suffix}"), F.col(f"req_{suffix}")
    equity = _money(cash + lmv - smv)
    return [
        equity.alias(f"eq_{suffix}"),
        _money(equity - req).alias(f"ex_{suffix}"),
        F.greatest(_money(F.lit(0)), _money(req - equity)).alias(f"def_{suffix}"),
    ]


def _figures(suffix: str) -> Column:
    """The six money fields of one evaluation as a struct (after `_figure_columns`)."""
    return F.struct(
        F.col(f"lmv_{suffix}").alias("long_market_value"),
        F.col(f"smv_{suffix}").alias("short_market_value"),
        F.col(f"eq_{suffix}").alias("equity"),
        F.col(f"req_{suffix}").alias("maintenance_req"),
        F.col(f"ex_{suffix}").alias("excess"),
        F.col(f"def_{suffix}").alias("deficiency"),
    )


def account_margin(
    positions: DataFrame, cash: DataFrame, p: MarginParams, stress: bool = True
) -> DataFrame:
    """Per account (every account with a position or a cash row): ``account_id``, ``cash``,
    ``m`` (struct of the six money fields) and, with ``stress``, ``scenarios_full`` (the grid in
    order: scenario, stressed_equity, stressed_maintenance_req, stressed_deficiency,
    stressed_excess), ``worst_scenario`` and ``worst_deficiency``.

    positions: account_id, symbol, quantity (signed, netted by symbol), price, beta;
    cash: account_id, cash.
    """
    grid = _grid(p, stress)
    suffixes = [s for s, _ in grid]
    terms = _position_terms(positions, p, stress)
    sums = _sums(terms, suffixes)
    if p.concentration_addon > 0:
        sums = _with_addon(terms, sums, p, suffixes)
    zero = _money(F.lit(0))
    cash_df = cash.select("account_id", F.col("cash").cast(CASH_TYPE).alias("cash"))
    books = sums.join(cash_df, "account_id", "full_outer").select(
        "account_id",
        F.coalesce(F.col("cash"), F.lit(0).cast(CASH_TYPE)).alias("cash"),
        *[F.coalesce(F.col(f"{k}_{x}"), zero).alias(f"{k}_{x}") for x in suffixes
          for k in ("lmv", "smv", "req")],
    )  # fmt: skip
    cash_col = F.col("cash")
    books = books.select("*", *[c for x in suffixes for c in _figure_columns(cash_col, x)])
    base = [F.col("account_id"), cash_col, _figures("m").alias("m")]
    if not stress:
        return books.select(*base)
    rows = [
        F.struct(
            _lit(move).cast(MOVE_TYPE).alias("scenario"),
            F.col(f"eq_{x}").alias("stressed_equity"),
            F.col(f"req_{x}").alias("stressed_maintenance_req"),
            F.col(f"def_{x}").alias("stressed_deficiency"),
            F.col(f"ex_{x}").alias("stressed_excess"),
        )
        for x, move in grid[1:]
    ]
    # Worst: largest stressed deficiency, ties to the lowest stressed excess, then grid order;
    # struct ordering compares field by field, so the greatest key is the worst row.
    keys = [
        F.struct(
            F.col(f"def_{x}").alias("d"),
            (-F.col(f"ex_{x}")).alias("e"),
            F.lit(-i).alias("i"),
            _lit(move).cast(MOVE_TYPE).alias("scenario"),
        )
        for i, (x, move) in enumerate(grid[1:])
    ]
    worst = F.greatest(*keys) if len(keys) > 1 else keys[0]
    return books.select(
        *base,
        F.array(*rows).alias("scenarios_full"),
        worst["scenario"].alias("worst_scenario"),
        worst["d"].alias("worst_deficiency"),
    )


def compute_margin_df(positions_df: DataFrame, cash_df: DataFrame, p: MarginParams) -> DataFrame:
    """Per account: account_id, cash and the six money fields of spec section 1 (exact USD)."""
    acc = account_margin(positions_df, cash_df, p, stress=False)
    return acc.select("account_id", "cash", *[F.col("m")[c].alias(c) for c in MARGIN_COLUMNS])


def compute_stress_df(positions_df: DataFrame, cash_df: DataFrame, p: MarginParams) -> DataFrame:
    """Per account: scenarios [{scenario, stressed_equity, stressed_maintenance_req,
    stressed_deficiency}] in grid order, worst_scenario and worst_deficiency (spec section 2)."""
    acc = account_margin(positions_df, cash_df, p)
    return acc.select(
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


def account_margin(
    positions: DataFrame, cash: DataFrame, p: MarginParams, stress: bool = True
) -> DataFrame:
    """Per account (every account with a position or a cash row): ``account_id``, ``cash``,
    ``m`` (struct of the six money fields) and, with ``stress``, ``scenarios_full``,
    ``worst_scenario`` and ``worst_deficiency``.

    positions: account_id, symbol, quantity (signed, netted by symbol), price, beta;
    cash: account_id, cash."""
    return with_margin_and_stress(holdings_by_account(positions, cash), p, stress)


def kernel_aggregates(held: Column) -> List[Column]:
    """The per-account aggregate columns the kernel needs from rows of account_id, symbol,
    quantity, price and beta (``held``: the row is a position), for ``kernel_finish``: one
    aggregation that can carry the caller's own per-account columns too."""
    h = F.struct(
        F.col("symbol").cast("string").alias("symbol"),
        F.col("quantity").cast("double").alias("quantity"),
        F.col("price").cast("double").alias("price"),
        F.coalesce(F.col("beta").cast("double"), _lit(1.0)).alias("beta"),
    )
    return [F.array_sort(F.collect_list(F.when(held, h))).alias("holdings")]


def kernel_finish(accounts: DataFrame, p: MarginParams) -> DataFrame:
    """``account_margin``'s columns (m, scenarios_full, worst_scenario, worst_deficiency) added
    to per-account rows with ``cash`` and the ``kernel_aggregates``; other columns are kept."""
    books = accounts.withColumn("cash", F.col("cash").cast("double"))
    return with_margin_and_stress(books, p).drop("holdings")
