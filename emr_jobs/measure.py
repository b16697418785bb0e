"""Measure the job's throughput in local[2] after start-up (not shipped to EMR).

Two numbers: (1) margin + stress of a whole book through the native expressions (accounts and
positions per second), timed over a warm run after one warm-up; (2) one streaming micro-batch of
fills for many accounts through ``process_batch`` (state write, dedupe, outputs), with a no-op sink.
Usage: python -m emr_jobs.measure [ACCOUNTS] [POSITIONS_PER_ACCOUNT]
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from datetime import datetime, timezone

from pyspark.sql import DataFrame

from emr_jobs.batch import JobContext, process_batch
from emr_jobs.calc import compute_margin_df, compute_stress_df
from emr_jobs.parse import KAFKA_BATCH_SCHEMA
from emr_jobs.session import build_local_session
from emr_jobs.state import StateStore
from margin_risk.params import MarginParams


def main(accounts: int = 20_000, per_account: int = 5) -> dict[str, float]:
    spark = build_local_session()
    rng = random.Random(7)
    pos = [
        (
            f"A{a:06d}",
            f"S{s:03d}",
            float(rng.choice([-1, 1]) * rng.randint(1, 1000)),
            round(rng.uniform(1, 300), 2),
            round(rng.uniform(0, 3), 2),
        )
        for a in range(accounts)
        for s in rng.sample(range(500), per_account)
    ]
    positions = spark.createDataFrame(
        pos, "account_id string, symbol string, quantity double, price double, beta double"
    ).cache()
    cash = spark.createDataFrame(
        [(f"A{a:06d}", 10_000.0) for a in range(accounts)], "account_id string, cash double"
    ).cache()
    positions.count(), cash.count()
    p = MarginParams()
    out: dict[str, float] = {}
    for label in ("warmup", "run"):
        t = time.perf_counter()
        n = (
            compute_margin_df(positions, cash, p).count()
            + compute_stress_df(positions, cash, p).count()
        )
        dt = time.perf_counter() - t
        assert n == 2 * accounts
        if label == "run":
            out["calc_seconds"] = dt
            out["calc_accounts_per_s"] = accounts / dt
            out["calc_positions_per_s"] = accounts * per_account / dt

    # One micro-batch of fills (one per position) through process_batch.
    now = datetime.now(timezone.utc)
    rows: list[tuple[object, ...]] = []
    for i, (acc, sym, qty, px, _) in enumerate(pos):
        v = {
            "fill_id": f"F{i}",
            "account_id": acc,
            "symbol": sym,
            "side": "BUY" if qty > 0 else "SHORT",
            "quantity": abs(qty),
            "price": px,
            "timestamp": "2026-02-16T14:30:00Z",
            "correlation_id": f"c{i}",
        }
        rows.append((acc.encode(), json.dumps(v).encode(), "fills.v1", i % 2, i // 2, now, 0, []))
    batch = spark.createDataFrame(rows, KAFKA_BATCH_SCHEMA).cache()
    batch.count()

    def sink(df: DataFrame, batch_id: int) -> None:
        df.write.format("noop").mode("overwrite").save()

    # Warm-up: a small batch through the same code on its own state, so the timed batch measures
    # the job after start-up (the first batch of a JVM spends ~20 s in the JIT and in codegen).
    small = spark.createDataFrame(rows[:2000], KAFKA_BATCH_SCHEMA)
    warm = StateStore(spark, tempfile.mkdtemp(prefix="measure-warmup-"))
    process_batch(spark, small, 0, JobContext(p, warm, sink))
    st = StateStore(spark, tempfile.mkdtemp(prefix="measure-state-"))
    t = time.perf_counter()
    stats = process_batch(spark, batch, 0, JobContext(p, st, sink))
    dt = time.perf_counter() - t
    out["batch_seconds"] = dt
    out["batch_records_per_s"] = len(rows) / dt
    out["batch_accounts_per_s"] = stats.accounts / dt
    out["batch_positions_per_s"] = stats.positions / dt
    return out


def _positive(text: str) -> int:
    import argparse

    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {n}")
    return n


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(prog="python -m emr_jobs.measure", description=__doc__)
    ap.add_argument("accounts", type=_positive, nargs="?", default=20_000)
    ap.add_argument("positions", type=_positive, nargs="?", default=5, help="positions per account")
    ns = ap.parse_args()
    print(json.dumps(main(ns.accounts, ns.positions), indent=2))
