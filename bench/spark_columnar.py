"""Diagnostic Spark formulation for the kernel section (not shipped): the job's columnar kernel
in binary doubles instead of exact decimals, to show what exactness costs in Spark.

The job (``emr_jobs.calc.account_margin``) computes every position's terms at every price row as
column expressions over ``decimal(38, 20)`` (no precision loss) and sums them per account in one
hash aggregate. Here the same rules run as the same kind of expressions over doubles (whole-stage
code generation on primitive arithmetic, where Spark's decimals are ``BigDecimal`` objects above
18 digits). The sums are added in whatever order the aggregate meets the rows, so totals agree
with the exact figures only up to float rounding. Margin and stressed figures only (no
worst-scenario pick).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from margin_risk.params import MarginParams


def columnar_transformation(positions: Any, cash: Any, p: MarginParams) -> Any:
    from pyspark.sql import functions as F

    from emr_jobs import calc

    if p.concentration_addon > 0:
        raise ValueError("the diagnostic variant covers the default rules (no add-on)")
    q = F.col("quantity")
    sums = []
    for j, s in enumerate([Decimal(0), *p.scenarios]):
        price = F.col("price")
        if j:
            price = F.greatest(F.lit(0.0), price * (F.lit(1.0) + F.col("beta") * F.lit(float(s))))
        mv = q * price
        sums += [
            F.sum(F.when(mv > 0, mv).otherwise(F.lit(0.0))).alias(f"lmv{j}"),
            F.sum(F.when(mv < 0, -mv).otherwise(F.lit(0.0))).alias(f"smv{j}"),
            F.sum(calc.position_requirement(q, price, p)).alias(f"req{j}"),
        ]
    per_account = positions.groupBy("account_id").agg(*sums).join(cash, "account_id")
    cols = [F.col("account_id")]
    for j in range(1 + len(p.scenarios)):
        eq = F.col("cash") + F.col(f"lmv{j}") - F.col(f"smv{j}")
        cols += [eq.alias(f"equity{j}"), F.col(f"req{j}").alias(f"maintenance_req{j}")]
    return per_account.select(*cols)
