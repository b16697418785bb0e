"""Section 1: margin plus the stress grid, by the reference, by Spark and by NumPy.

One "position" is one holding of one account evaluated at its price and at every scenario's
shocked price (margin + S stressed margins), so positions/s = accounts x positions per account /
wall seconds of the whole computation, per-account worst scenario included.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from bench.books import SCENARIOS, Books, account_name, generate_books, symbol_name
from bench.kernel_numpy import KernelResult, NumpyKernel
from bench.spark_columnar import columnar_transformation
from bench.timing import cpu_runs, median, timed_runs
from margin_risk.money import to_decimal
from margin_risk.params import MarginParams
from margin_risk.rules import Holding, MarginResult, compute_margin
from margin_risk.stress import ScenarioResult, stress_table, worst_scenario


@dataclass(frozen=True)
class KernelSettings:
    accounts: int
    positions_per_account: int
    python_accounts: int  # the reference runs on the first N accounts (its rate is per position)
    runs: int
    warmup: int
    spark_runs: int
    numpy_threads: int = 1
    chunk_positions: int = 16384
    spark: bool = True
    seed: int = 8


POSITIONS_SCHEMA = "account_id string, symbol string, quantity double, price double, beta double"


def params() -> MarginParams:
    return MarginParams(scenarios=tuple(Decimal(repr(s)) for s in SCENARIOS))


# --- (a) the reference --------------------------------------------------------------------------
RefRow = tuple[MarginResult, list[ScenarioResult], ScenarioResult]


def reference_run(
    cash: Sequence[float], books: Sequence[list[Holding]], p: MarginParams
) -> list[RefRow]:
    out = []
    for c, h in zip(cash, books, strict=True):
        rows = stress_table(c, h, p)
        out.append((compute_margin(c, h, p), rows, worst_scenario(rows)))
    return out


def _close(x: float, y: Decimal) -> bool:
    """Equal up to binary-float rounding (the NumPy kernel is the float hardware limit, not an
    exact engine: it may differ from the exact figures in the last bits, and so in a half cent)."""
    return abs(float(x) - float(y)) <= 1e-9 * max(1.0, abs(float(y)))


def mismatches(r: KernelResult, ref: Sequence[RefRow]) -> int:
    """Accounts whose margin or stress figures differ from the exact reference's by more than
    float rounding, or whose worst scenario differs."""
    bad = 0
    for a, (m, rows, worst) in enumerate(ref):
        got = [r.long_market_value[0, a], r.short_market_value[0, a], r.equity[0, a]]
        got += [r.maintenance_req[0, a], r.excess[0, a], r.deficiency[0, a]]
        exp = [m.long_market_value, m.short_market_value, m.equity]
        exp += [m.maintenance_req, m.excess, m.deficiency]
        for j, row in enumerate(rows, start=1):
            got += [r.equity[j, a], r.maintenance_req[j, a], r.deficiency[j, a]]
            exp += [row.result.equity, row.result.maintenance_req, row.result.deficiency]
        got.append(r.worst_deficiency[a])
        exp.append(worst.result.deficiency)
        same = all(_close(x, y) for x, y in zip(got, exp, strict=True))
        worst_move = to_decimal(float(r.scenarios[int(r.worst_index[a])]))
        if not same or worst_move != worst.scenario:
            bad += 1
    return bad


# --- (b) Spark ----------------------------------------------------------------------------------
def write_csv(books: Books, directory: str) -> tuple[str, str]:
    """positions.csv (account_id, symbol, quantity, price, beta) and cash.csv; repr-exact floats."""
    pos_path = os.path.join(directory, "positions.csv")
    cash_path = os.path.join(directory, "cash.csv")
    acct = books.account_of
    with open(pos_path, "w") as f:
        f.writelines(
            f"{account_name(int(a))},{symbol_name(int(s))},{q!r},{pr!r},{b!r}\n"
            for a, s, q, pr, b in zip(
                acct.tolist(),
                books.symbol.tolist(),
                books.quantity.tolist(),
                books.price.tolist(),
                books.beta.tolist(),
                strict=True,
            )
        )
    with open(cash_path, "w") as f:
        f.writelines(f"{account_name(a)},{c!r}\n" for a, c in enumerate(books.cash.tolist()))
    return pos_path, cash_path


def spark_transformation(positions: Any, cash: Any, p: MarginParams) -> Any:
    """What the job's micro-batch computes per affected account (``emr_jobs.batch``):
    ``account_margin``, with the result columns it emits."""
    from pyspark.sql import functions as F

    from emr_jobs import calc

    return calc.account_margin(positions, cash, p).select(
        "account_id",
        *[F.col("m")[c].alias(c) for c in calc.MARGIN_COLUMNS],
        calc.public_scenarios(F.col("scenarios_full")).alias("scenarios"),
        "worst_scenario",
        "worst_deficiency",
    )


def spark_section(books: Books, s: KernelSettings, check: KernelResult) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    from emr_jobs.session import build_local_session

    p = params()
    existing = SparkSession.getActiveSession()  # e.g. a test session: reuse it, never stop it
    spark = existing or build_local_session(shuffle_partitions=2, app_name="margin-bench")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
            pos_path, cash_path = write_csv(books, tmp)
            positions = spark.read.csv(
                pos_path,
                schema=POSITIONS_SCHEMA,
            ).cache()
            cash = spark.read.csv(cash_path, schema="account_id string, cash double").cache()
            n_pos, n_cash = positions.count(), cash.count()
            assert n_pos == books.positions and n_cash == books.accounts
            out = spark_transformation(positions, cash, p)
            times = _time_noop(out, s.spark_runs)
            rows, bad = _parity(out, books, check)
            columnar = columnar_transformation(positions, cash, p)
            col_times = _time_noop(columnar, s.spark_runs)
            col_rows, col_bad = _parity_columnar(columnar, books, check)
            positions.unpersist()
            cash.unpersist()
    finally:
        if existing is None:
            spark.stop()
    return {
        "seconds": times,
        "pos_per_s": books.positions / median(times),
        "cores": 2,
        "parity_accounts": rows,
        "parity_mismatches": bad,
        "columnar_seconds": col_times,
        "columnar_pos_per_s": books.positions / median(col_times),
        "columnar_parity_mismatches": col_bad,
        "columnar_parity_accounts": col_rows,
    }


def _time_noop(df: Any, runs: int) -> list[float]:
    """Seconds of a full evaluation into Spark's no-op sink (plan, execute, discard)."""

    def action() -> None:
        df.write.format("noop").mode("overwrite").save()

    return timed_runs(action, runs, warmup=1)


def _parity_columnar(out: Any, books: Books, check: KernelResult) -> tuple[int, int]:
    sample = [account_name(a) for a in range(min(300, books.accounts))]
    rows = out.where(out.account_id.isin(sample)).collect()
    bad = 0
    for row in rows:
        a = int(row["account_id"][1:])
        g = check.equity.shape[0]
        got = [row[f"equity{j}"] for j in range(g)] + [row[f"maintenance_req{j}"] for j in range(g)]
        exp = [check.equity[j, a] for j in range(g)] + [
            check.maintenance_req[j, a] for j in range(g)
        ]
        if not all(_close(float(y), to_decimal(x)) for x, y in zip(got, exp, strict=True)):
            bad += 1
    return len(rows), bad


def _parity(out: Any, books: Books, check: KernelResult) -> tuple[int, int]:
    """(accounts compared, accounts differing in cents from NumPy) on the first 300 accounts."""
    sample = [account_name(a) for a in range(min(300, books.accounts))]
    rows = out.where(out.account_id.isin(sample)).collect()
    bad = 0
    for row in rows:
        a = int(row["account_id"][1:])
        got = [row["equity"], row["maintenance_req"], row["worst_deficiency"]]
        exp = [check.equity[0, a], check.maintenance_req[0, a], check.worst_deficiency[a]]
        for j, sc in enumerate(row["scenarios"], start=1):
            got += [sc["stressed_equity"], sc["stressed_maintenance_req"]]
            exp += [check.equity[j, a], check.maintenance_req[j, a]]
        if not all(_close(float(y), to_decimal(x)) for x, y in zip(got, exp, strict=True)):
            bad += 1
    return len(rows), bad


# --- the section --------------------------------------------------------------------------------
def run(s: KernelSettings, log: Any = print) -> dict[str, Any]:
    p = params()
    books = generate_books(s.accounts, s.positions_per_account, seed=s.seed)
    n = books.positions

    log(f"kernel: {s.accounts} accounts x {s.positions_per_account} positions, numpy")
    kernel = NumpyKernel(p, SCENARIOS, s.chunk_positions, s.numpy_threads)
    np_times = timed_runs(lambda: kernel.run(books), s.runs, s.warmup)
    result = kernel.run(books)
    np_rate = n / median(np_times)
    np_cpu = cpu_runs(lambda: kernel.run(books), s.runs)
    two = NumpyKernel(p, SCENARIOS, s.chunk_positions, 2)
    np2_times = timed_runs(lambda: two.run(books), s.runs, s.warmup)

    log(f"kernel: reference on {s.python_accounts} accounts")
    sub = books.head(s.python_accounts)
    cash = [float(c) for c in sub.cash]
    holdings = [sub.holdings(a) for a in range(sub.accounts)]
    py_runs = max(1, min(3, s.runs))
    py_times = timed_runs(lambda: reference_run(cash, holdings, p), py_runs, warmup=0)
    ref = reference_run(cash, holdings, p)
    py_rate = sub.positions / median(py_times)
    py_cpu = cpu_runs(lambda: reference_run(cash, holdings, p), 1)
    bad = mismatches(kernel.run(sub), ref)

    out: dict[str, Any] = {
        "scenarios": list(SCENARIOS),
        "accounts": s.accounts,
        "positions": n,
        "breached_accounts": int(np.count_nonzero(result.worst_deficiency > 0)),
        "python_pos_per_s": py_rate,
        "python_accounts": s.python_accounts,
        "python_seconds": py_times,
        "python_cpu_pos_per_s": sub.positions / median(py_cpu),
        "numpy_pos_per_s": np_rate,
        "numpy_seconds": np_times,
        "numpy_threads": s.numpy_threads,
        # CPU seconds of the calling thread: what one unloaded core would take (load-independent)
        "numpy_cpu_pos_per_s": n / median(np_cpu),
        "numpy_2threads_pos_per_s": n / median(np2_times),
        "numpy_vs_reference_mismatched_accounts": bad,
        "python_ratio_to_numpy": py_rate / np_rate,
    }
    if s.spark:
        log("kernel: spark local[2]")
        sp = spark_section(books, s, result)
        out.update(
            {
                "spark_pos_per_s": sp["pos_per_s"],
                "spark_seconds": sp["seconds"],
                "spark_cores": sp["cores"],
                "spark_vs_numpy_mismatched_accounts": sp["parity_mismatches"],
                "spark_parity_accounts": sp["parity_accounts"],
                "spark_ratio_to_numpy": sp["pos_per_s"] / np_rate,
                "spark_columnar_pos_per_s": sp["columnar_pos_per_s"],
                "spark_columnar_seconds": sp["columnar_seconds"],
                "spark_columnar_vs_numpy_mismatched_accounts": sp["columnar_parity_mismatches"],
                "numpy_per_core_over_spark_columnar_per_core": (np_rate / s.numpy_threads)
                / (sp["columnar_pos_per_s"] / sp["cores"]),
                # Per core: Spark's rate over its 2 cores against NumPy's over its threads.
                "numpy_per_core_over_spark_per_core": (np_rate / s.numpy_threads)
                / (sp["pos_per_s"] / sp["cores"]),
            }
        )
    return out
