"""``python -m bench [--quick] [--out PATH] [--sections ...] [--no-spark]``: run, report, print."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Spark's console progress bars would interleave with the table (must be set before the JVM).
os.environ.setdefault(
    "PYSPARK_SUBMIT_ARGS", "--conf spark.ui.showConsoleProgress=false pyspark-shell"
)

from bench.sections import in_fresh_process, run_section
from margin_risk.tools.files import unwritable

SECTIONS = ("kernel", "spark", "enforcement", "e2e", "e2e_busy_core")


def settings(quick: bool, spark: bool) -> dict[str, Any]:
    from bench.e2e import E2ESettings
    from bench.enforcement import EnforcementSettings
    from bench.kernel import KernelSettings
    from bench.spark_batch import SparkBatchSettings

    if quick:
        return {
            "spark": SparkBatchSettings(
                large_accounts=50_000, large_symbols=2_500, warmup=8, runs=3
            ),
            "kernel": KernelSettings(
                accounts=20_000,
                positions_per_account=10,
                python_accounts=1_000,
                runs=5,
                warmup=2,
                spark_runs=1,
                spark=spark,
            ),
            "enforcement": EnforcementSettings(
                runs=3, batches_per_run={100: 5, 1000: 2}, warmup_batches=2
            ),
            "e2e": E2ESettings(duration_s=15.0, drain_timeout_s=180.0),
            "e2e_busy_core": E2ESettings(duration_s=15.0, drain_timeout_s=180.0, busy_cores=1),
        }
    return {
        "spark": SparkBatchSettings(),
        "kernel": KernelSettings(
            accounts=100_000,
            positions_per_account=10,
            python_accounts=10_000,
            runs=7,
            warmup=2,
            spark_runs=3,
            spark=spark,
        ),
        "enforcement": EnforcementSettings(
            runs=5, batches_per_run={100: 20, 1000: 4}, warmup_batches=3
        ),
        "e2e": E2ESettings(duration_s=60.0, steady_warmup_s=120.0, drain_timeout_s=300.0),
        "e2e_busy_core": E2ESettings(
            duration_s=60.0, steady_warmup_s=120.0, drain_timeout_s=300.0, busy_cores=1
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs")
    ap.add_argument("--out", default=".local/bench/report.json", help="JSON report path")
    ap.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma-separated subset of " + str(SECTIONS)
    )
    ap.add_argument("--no-spark", action="store_true", help="skip the Spark kernel measurement")
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s): {', '.join(unknown)}")
    if problem := unwritable(Path(args.out)):
        ap.error(f"--out {args.out}: {problem}")

    from bench import report

    cfg = settings(args.quick, not args.no_spark)
    out: dict[str, Any] = {
        "machine": report.machine(),
        "versions": report.versions(),
        "settings": {
            "mode": "quick" if args.quick else "full",
            "sections": chosen,
            **{k: _plain(asdict(v)) for k, v in cfg.items() if k in chosen},
        },
    }
    started = time.monotonic()
    for name in SECTIONS:
        if name in chosen:
            t0 = time.monotonic()
            if len(chosen) == 1:
                out[name] = run_section(name, cfg[name])
            else:
                out[name] = in_fresh_process(name, cfg[name])
            out[name]["section_wall_s"] = time.monotonic() - t0
    out["wall_s"] = time.monotonic() - started
    out["load_average_at_end"] = list(os.getloadavg())
    out["targets"] = report.targets(out)
    out["headline"] = {k: report.lookup(out, k) for k in report.HEADLINE}
    report.write(out, args.out)
    print(report.table(out))
    print(f"\nreport: {args.out}")
    return 0


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {str(k): (_plain(v) if isinstance(v, dict) else v) for k, v in d.items()}


if __name__ == "__main__":
    sys.exit(main())
