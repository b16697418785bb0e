"""Diagnostic: the job's margin/stress math with every fold computed once (not shipped).

``emr_jobs.calc`` builds the result fields by referencing struct-valued *expressions*
(``m["equity"]``, ``grid[0]``, ...), and Spark copies an expression into each place that
references it: for the default 8-scenario grid the ``worst_deficiency`` expression alone holds
~480 ``aggregate`` folds instead of 9. This variant uses the same per-position rules
(``calc.position_requirement``, ``calc._shock``, the same fold step in symbol order, so the same
numbers bit for bit) but puts each fold in its own column first and derives fields from column
references in a later projection; Spark's CollapseProject does not inline a non-trivial
expression referenced more than once, so each fold is evaluated once per account.
"""

from __future__ import annotations

from typing import Any

from margin_risk.params import MarginParams


def staged_transformation(positions: Any, cash: Any, p: MarginParams) -> Any:
    from pyspark.sql import Column
    from pyspark.sql import functions as F

    from emr_jobs import calc

    if p.concentration_addon > 0:
        raise ValueError("the diagnostic variant covers the default rules (no add-on)")

    def lit(x: float) -> Column:
        return F.lit(float(x))

    zero = F.struct(lit(0.0).alias("lmv"), lit(0.0).alias("smv"), lit(0.0).alias("req"))

    def step(acc: Column, h: Column) -> Column:
        mv = h["quantity"] * h["price"]
        return F.struct(
            F.when(mv > 0, acc["lmv"] + mv).otherwise(acc["lmv"]).alias("lmv"),
            F.when(mv < 0, acc["smv"] + (-mv)).otherwise(acc["smv"]).alias("smv"),
            (acc["req"] + calc.position_requirement(h["quantity"], h["price"], p)).alias("req"),
        )

    acc = calc.holdings_by_account(positions, cash)
    grid = list(p.scenarios)
    folds = [F.aggregate(F.col("holdings"), zero, step).alias("b0")]
    folds += [
        F.aggregate(calc._shock(F.col("holdings"), s), zero, step).alias(f"b{j}")
        for j, s in enumerate(grid, start=1)
    ]
    stage1 = acc.select("account_id", "cash", *folds)

    def equity(j: int) -> Column:
        return F.col("cash") + F.col(f"b{j}.lmv") - F.col(f"b{j}.smv")

    rows = [
        F.struct(
            lit(s).alias("scenario"),
            equity(j).alias("stressed_equity"),
            F.col(f"b{j}.req").alias("stressed_maintenance_req"),
            F.greatest(lit(0.0), F.col(f"b{j}.req") - equity(j)).alias("stressed_deficiency"),
            (equity(j) - F.col(f"b{j}.req")).alias("stressed_excess"),
        )
        for j, s in enumerate(grid, start=1)
    ]
    stage2 = stage1.select(
        "account_id",
        F.col("b0.lmv").alias("long_market_value"),
        F.col("b0.smv").alias("short_market_value"),
        equity(0).alias("equity"),
        F.col("b0.req").alias("maintenance_req"),
        F.array(*rows).alias("grid"),
    )

    def pick(best: Column, r: Column) -> Column:
        d, bd = r["stressed_deficiency"], best["stressed_deficiency"]
        better = (d > bd) | ((d == bd) & (r["stressed_excess"] < best["stressed_excess"]))
        return F.when(better, r).otherwise(best)

    g = F.col("grid")
    worst = F.aggregate(F.slice(g, 2, max(len(grid) - 1, 1)), g[0], pick) if len(grid) > 1 else g[0]
    stage3 = stage2.select(
        "account_id",
        "long_market_value",
        "short_market_value",
        "equity",
        "maintenance_req",
        (F.col("equity") - F.col("maintenance_req")).alias("excess"),
        F.greatest(lit(0.0), F.col("maintenance_req") - F.col("equity")).alias("deficiency"),
        calc.public_scenarios(g).alias("scenarios"),
        worst.alias("worst"),
    )
    return stage3.select(
        "account_id",
        "long_market_value",
        "short_market_value",
        "equity",
        "maintenance_req",
        "excess",
        "deficiency",
        "scenarios",
        F.col("worst.scenario").alias("worst_scenario"),
        F.col("worst.stressed_deficiency").alias("worst_deficiency"),
    )
