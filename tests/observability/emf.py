"""Realistic EMF lines for tests: the Lambda's (serialized by Powertools itself) and the Spark
job's (hand-written, the same EMF shape), as a local run writes them to ``metrics/*.jsonl``."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from margin_risk import names

T0_MS = 1_771_252_200_000  # 2026-02-16T14:30:00Z


def powertools_emf(
    ts_ms: int,
    metrics: Mapping[str, tuple[MetricUnit, list[float]]],
    dimensions: Mapping[str, str] | None = None,
    service: str = names.SERVICE_ENFORCEMENT,
) -> dict[str, Any]:
    """One EMF object exactly as Powertools serializes it, stamped at ``ts_ms``."""
    m = EphemeralMetrics(namespace=names.METRICS_NAMESPACE, service=service)
    for k, v in (dimensions or {}).items():
        m.add_dimension(name=k, value=v)
    for name, (unit, values) in metrics.items():
        for v in values:
            m.add_metric(name=name, unit=unit, value=v)
    blob: dict[str, Any] = m.serialize_metric_set()
    blob["_aws"]["Timestamp"] = ts_ms
    return blob


def hand_emf(
    ts_ms: int,
    values: Mapping[str, float],
    dimensions: Mapping[str, str] | None = None,
    service: str | None = names.SERVICE_SPARK,
    unit: str = "Count",
) -> dict[str, Any]:
    """A hand-written EMF object (the Spark job's per-micro-batch shape)."""
    dims = dict(dimensions or {})
    if service is not None:
        dims = {names.DIM_SERVICE: service, **dims}
    return {
        "_aws": {
            "Timestamp": ts_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": names.METRICS_NAMESPACE,
                    "Dimensions": [sorted(dims)],
                    "Metrics": [{"Name": k, "Unit": unit} for k in values],
                }
            ],
        },
        **dims,
        **values,
    }


def simulated_run(
    minutes: int = 20,
    seed: int = 7,
    stall_results_after_min: int | None = None,
    latency_ms: tuple[float, float] = (800.0, 4000.0),
    failed_every: int = 0,
) -> list[dict[str, Any]]:
    """A local run: a Spark micro-batch and a Lambda invocation every 30 s.

    ``stall_results_after_min`` makes Spark keep consuming inputs but stop producing margin
    results (and so the Lambda stops receiving them) from that minute on.
    """
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(minutes * 2):
        ts = T0_MS + i * 30_000
        stalled = stall_results_after_min is not None and i >= stall_results_after_min * 2
        inputs = rnd.randint(300, 600)
        results = 0 if stalled else rnd.randint(40, 120)
        out.append(
            hand_emf(
                ts,
                {
                    names.METRIC_INPUT_RECORDS: inputs,
                    names.METRIC_MARGIN_RESULTS: results,
                    names.METRIC_STRESS_RESULTS: results,
                },
            )
        )
        out.append(
            hand_emf(
                ts + 100,
                {names.METRIC_SPARK_BATCH_DURATION: rnd.uniform(900, 2500)},
                unit="Milliseconds",
            )
        )
        if i % 5 == 0:
            reason = rnd.choice(["missing_field", "negative_price", "non_finite"])
            out.append(
                hand_emf(
                    ts + 200,
                    {names.METRIC_RECORDS_REJECTED: rnd.randint(1, 6)},
                    {names.DIM_REASON: reason},
                )
            )
        if stalled:
            continue
        batch = 2 * results
        failed = 1 if failed_every and i % failed_every == 0 else 0
        calls = rnd.randint(0, 4)
        met = rnd.randint(0, calls)
        liq = 1 if rnd.random() < 0.15 else 0
        lat = [rnd.uniform(*latency_ms) for _ in range(12)]
        out.append(
            powertools_emf(
                ts + 5_000,
                {
                    names.METRIC_BATCH_SIZE: (MetricUnit.Count, [float(batch)]),
                    names.METRIC_RECORDS_PROCESSED: (MetricUnit.Count, [float(batch - failed)]),
                    names.METRIC_RECORDS_FAILED: (MetricUnit.Count, [float(failed)]),
                    names.METRIC_MARGIN_CALLS_ISSUED: (MetricUnit.Count, [float(calls)]),
                    names.METRIC_MARGIN_CALLS_MET: (MetricUnit.Count, [float(met)]),
                    names.METRIC_LIQUIDATIONS: (MetricUnit.Count, [float(liq)]),
                    names.METRIC_MARGIN_WARNINGS: (MetricUnit.Count, [float(rnd.randint(0, 5))]),
                    names.METRIC_STRESS_BREACHES: (MetricUnit.Count, [float(rnd.randint(0, 3))]),
                    names.METRIC_ACCOUNTS_RESTRICTED: (
                        MetricUnit.Count,
                        [float(rnd.randint(0, 1))],
                    ),
                    names.METRIC_TOTAL_DEFICIENCY: (
                        MetricUnit.Count,
                        [round(calls * rnd.uniform(5e3, 4e4), 2)],
                    ),
                    names.METRIC_AUDIT_OBJECTS: (MetricUnit.Count, [1.0]),
                    names.METRIC_E2E_LATENCY: (MetricUnit.Milliseconds, lat),
                    names.METRIC_DUPLICATE_EVENTS: (MetricUnit.Count, [float(rnd.randint(0, 2))]),
                },
            )
        )
        if i % 4 == 1:
            out.append(
                powertools_emf(
                    ts + 5_001,
                    {names.METRIC_RECORDS_REJECTED: (MetricUnit.Count, [1.0])},
                    {names.DIM_REASON: "bad_schema"},
                )
            )
    return out


def write_run(
    run_dir: Path, objs: Iterable[dict[str, Any]], extra_lines: Iterable[str] = ()
) -> Path:
    """Write ``objs`` split by component into ``run_dir/metrics/*.jsonl``; returns ``run_dir``."""
    md = run_dir / "metrics"
    md.mkdir(parents=True, exist_ok=True)
    spark = md / "spark.jsonl"
    lam = md / "enforcement.jsonl"
    with spark.open("a", encoding="utf-8") as fs, lam.open("a", encoding="utf-8") as fl:
        for o in objs:
            f = fs if o.get(names.DIM_SERVICE) == names.SERVICE_SPARK else fl
            f.write(json.dumps(o) + "\n")
        for line in extra_lines:
            fl.write(line + "\n")
    return run_dir
