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
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

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
RATE_TYPE = "decimal(6,4)"  # a house rate (margin_risk.params.RATE_PLACES, below MAX_ABS_RATE)
# The house requirement in force for a position's symbol (spec section 7), as optional columns of
# the position rows: null (no entry) is rates 0 and marginable, which changes nothing.
HOUSE_LONG, HOUSE_SHORT, HOUSE_NON_MARGINABLE = (
    "house_long_rate",
    "house_short_rate",
    "house_non_marginable",
)
HOUSE_COLUMNS = (HOUSE_LONG, HOUSE_SHORT, HOUSE_NON_MARGINABLE)
# A symbol's house entries, oldest as_of first (as_of in epoch microseconds).
HOUSE_ENTRY_TYPE = (
    f"struct<as_of:bigint,long_rate:{RATE_TYPE},short_rate:{RATE_TYPE},non_marginable:boolean>"
)
HOUSE_ENTRIES_TYPE = f"array<{HOUSE_ENTRY_TYPE}>"
HouseRateColumns = Tuple[Column, Column, Column]


def _lit(x: Decimal) -> Column:
    """An exact decimal literal (its own precision and scale, never a double)."""
    return F.lit(Decimal(x))


def _money(c: Column) -> Column:
    return c.cast(MONEY_TYPE)


def position_requirement(
    qty: Column, price: Column, p: MarginParams, house: Optional[HouseRateColumns] = None
) -> Column:
    """USD requirement of one position before add-ons (mirrors rules.position_requirement).

    ``house``: the symbol's rates in force (long rate, short rate, non-marginable; never null),
    which only raise the result: long ``effective rate x mv`` with the effective rate 100% for a
    non-marginable symbol (``params.HouseRates.effective_long_rate``), short the greater of the
    section 1 rule and ``short rate x |mv|``."""
    mv = F.abs(qty * price)
    shares = -qty
    short_high = F.greatest(
        _money(_lit(p.short_per_share) * shares), _money(_lit(p.short_rate) * mv)
    )
    short_low = F.greatest(
        _money(_lit(p.low_price_short_per_share) * shares),
        _money(_lit(p.low_price_short_rate) * mv),
    )
    long_req = _money(_lit(p.long_rate) * mv)
    if house is not None:
        h_long, h_short, h_nm = house
        rate = F.when(h_nm, F.greatest(_lit(Decimal(1)), _lit(p.long_rate), h_long)).otherwise(
            F.greatest(_lit(p.long_rate), h_long)
        )
        long_req = _money(rate * mv)
        h_short_req = _money(h_short * mv)
        short_high = F.greatest(short_high, h_short_req)
        short_low = F.greatest(short_low, h_short_req)
    return (
        F.when(qty > 0, long_req)
        .when((qty < 0) & (price >= _lit(p.low_price_threshold)), short_high)
        .when(qty < 0, short_low)
        .otherwise(_money(F.lit(0)))
    )


def house_in_force(entries: Column, at: Column) -> Column:
    """The entry of ``entries`` (a symbol's, oldest ``as_of`` first) with the latest ``as_of``
    not after ``at`` (epoch microseconds): a struct, null when none is in force yet."""
    return F.element_at(F.filter(entries, lambda e: e["as_of"] <= at), -1)


def has_house(columns: Sequence[str]) -> bool:
    """Whether position rows with these columns carry the ``HOUSE_COLUMNS``."""
    return set(HOUSE_COLUMNS) <= set(columns)


def _house_rates() -> HouseRateColumns:
    """The position rows' house rates (missing entry: 0, 0, marginable)."""
    zero = _lit(Decimal(0)).cast(RATE_TYPE)
    return (
        F.coalesce(F.col(HOUSE_LONG).cast(RATE_TYPE), zero),
        F.coalesce(F.col(HOUSE_SHORT).cast(RATE_TYPE), zero),
        F.coalesce(F.col(HOUSE_NON_MARGINABLE), F.lit(False)),
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


# Column expressions are immutable and unresolved (columns by name), so one built expression
# serves every DataFrame: building the kernel's ~1,000-node expression tree costs a Py4J round
# trip per node, which a micro-batch would otherwise pay again each time. The key is hashable:
# ``house`` says whether the rows carry the house columns (their names are fixed).
@lru_cache(maxsize=16)
def _term_columns(p: MarginParams, stress: bool, house: bool = False) -> List[Column]:
    """Per evaluation e, from a position row (quantity, price, beta): mv_e (signed market value)
    and req_e (requirement before add-ons, with the house rates of the ``HOUSE_COLUMNS`` at every
    shocked price when ``house``), all decimal(38, RESULT_SCALE)."""
    rates = _house_rates() if house else None
    q = F.col("quantity").cast(QUANTITY_TYPE)
    price = F.col("price").cast(PRICE_TYPE)
    beta = F.coalesce(F.col("beta").cast(BETA_TYPE), _lit(Decimal(1)))
    cols: List[Column] = []
    for suffix, move in _grid(p, stress):
        px = _shocked(price, beta, move, suffix == "m")
        cols.append(_money(q * px).alias(f"mv_{suffix}"))
        cols.append(position_requirement(q, px, p, rates).alias(f"req_{suffix}"))
    return cols


def _position_terms(positions: DataFrame, p: MarginParams, stress: bool) -> DataFrame:
    """account_id plus each evaluation's mv_e and req_e (see ``_term_columns``)."""
    return positions.where(F.col("quantity") != 0).select(
        F.col("account_id"), *_term_columns(p, stress, has_house(positions.columns))
    )


def _sum_columns(suffixes: Sequence[str], held: Optional[Column] = None) -> List[Column]:
    """Per evaluation: lmv, smv and req summed over the rows (only ``held`` rows, if given)."""
    zero = _money(F.lit(0))
    aggs: List[Column] = []
    for s in suffixes:
        mv, req = F.col(f"mv_{s}"), F.col(f"req_{s}")
        if held is not None:
            mv, req = F.when(held, mv).otherwise(zero), F.when(held, req).otherwise(zero)
        aggs.append(F.sum(F.when(mv > 0, mv).otherwise(zero)).alias(f"lmv_{s}"))
        aggs.append(F.sum(F.when(mv < 0, -mv).otherwise(zero)).alias(f"smv_{s}"))
        aggs.append(F.sum(req).alias(f"req_{s}"))
    return aggs


def _sums(terms: DataFrame, suffixes: Sequence[str]) -> DataFrame:
    return terms.groupBy("account_id").agg(*_sum_columns(suffixes))


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

    positions: account_id, symbol, quantity (signed, netted by symbol), price, beta and
    optionally the ``HOUSE_COLUMNS`` in force for the calculation; cash: account_id, cash.
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
    return _finish(books, p, stress)


def _finish(books: DataFrame, p: MarginParams, stress: bool, keep: Sequence[str] = ()) -> DataFrame:
    """From per-account ``cash`` and each evaluation's lmv/smv/req sums: ``m``, and with
    ``stress`` the grid, the worst scenario and its deficiency (``keep``: columns carried)."""
    figures, result = _finish_columns(p, stress, tuple(keep))
    return books.select("*", *figures).select(*result)


@lru_cache(maxsize=16)
def _finish_columns(
    p: MarginParams, stress: bool, keep: Tuple[str, ...]
) -> Tuple[List[Column], List[Column]]:
    """``_finish``'s two projections: each evaluation's figures, then the result columns."""
    grid = _grid(p, stress)
    suffixes = [s for s, _ in grid]
    cash_col = F.col("cash")
    figures = [c for x in suffixes for c in _figure_columns(cash_col, x)]
    base = [F.col("account_id"), cash_col, *[F.col(k) for k in keep], _figures("m").alias("m")]
    if not stress:
        return figures, base
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
    return figures, [
        *base,
        F.array(*rows).alias("scenarios_full"),
        worst["scenario"].alias("worst_scenario"),
        worst["d"].alias("worst_deficiency"),
    ]


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


def kernel_rows(rows: DataFrame, p: MarginParams) -> DataFrame:
    """``rows`` (with quantity, price, beta and optionally the ``HOUSE_COLUMNS``) plus every
    evaluation's position terms."""
    return rows.select("*", *kernel_row_columns(p, has_house(rows.columns)))


def kernel_row_columns(p: MarginParams, house: bool = False) -> List[Column]:
    """The columns ``kernel_rows`` adds, with the house rates when the rows carry the
    ``HOUSE_COLUMNS`` (built once per parameters)."""
    return _term_columns(p, True, house)


def kernel_aggregates(held: Column, p: MarginParams) -> List[Column]:
    """Per-account sums of the terms of ``kernel_rows`` over the ``held`` rows, to aggregate
    in one pass with the caller's own per-account columns (then ``kernel_finish``)."""
    return _sum_columns([s for s, _ in _grid(p, True)], held)


def kernel_finish(
    accounts: DataFrame, p: MarginParams, positions: Optional[DataFrame] = None
) -> DataFrame:
    """``account_margin``'s columns for per-account rows of ``cash`` and the
    ``kernel_aggregates`` (their other columns are kept). With a concentration add-on, which
    compares each position with its account's gross, ``positions`` (the held ``kernel_rows``)
    are joined back for a second aggregation."""
    suffixes = [s for s, _ in _grid(p, True)]
    sums = [c for x in suffixes for c in (f"lmv_{x}", f"smv_{x}", f"req_{x}")]
    keep = [c for c in accounts.columns if c not in ("account_id", "cash", *sums)]
    books = accounts.withColumn("cash", F.col("cash").cast(CASH_TYPE))
    if p.concentration_addon > 0:
        assert positions is not None, "the concentration add-on needs the positions"
        terms = positions.select(
            "account_id", *[f"{k}_{x}" for x in suffixes for k in ("mv", "req")]
        )
        added = _with_addon(terms, books.select("account_id", *sums), p, suffixes)
        books = books.drop(*sums).join(added, "account_id")
    return _finish(books, p, True, keep)
