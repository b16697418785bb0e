"""The report: machine, versions, settings, results, targets; JSON on disk and a table on stdout.

The JSON is nested by section (``report["kernel"]["numpy_pos_per_s"]``); ``report["headline"]``
repeats the headline figures under their dotted names (``"kernel.numpy_pos_per_s"``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

HEADLINE = (
    "kernel.python_pos_per_s",
    "kernel.spark_pos_per_s",
    "kernel.numpy_pos_per_s",
    "spark.small_batch_s",
    "spark.large_book_batch_s",
    "spark.jobs_per_batch",
    "spark.state_bytes_per_batch_small",
    "spark.state_bytes_per_batch_large",
    "enforcement.fake_records_per_s",
    "enforcement.records_per_s",
    "enforcement.ddb_calls_per_batch",
    "enforcement.s3_puts_per_batch",
    "e2e.latency_ms_p50",
    "e2e.latency_ms_p99",
    "e2e.kept_up",
    "e2e_busy_core.latency_ms_p99",
    "e2e_busy_core.kept_up",
)
PACKAGES = (
    "numpy",
    "pyspark",
    "aws-lambda-powertools",
    "pydantic",
    "boto3",
    "botocore",
    "moto",
    "confluent-kafka",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return math.nan


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(_mem_gb(), 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


def versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "missing"
    try:
        out["java"] = (
            subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=20)
            .stderr.splitlines()[0]
            .strip()
        )
    except (OSError, IndexError, subprocess.SubprocessError):
        out["java"] = "unknown"
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = "unknown"
    return out


def lookup(report: dict[str, Any], dotted: str) -> Any:
    node: Any = report
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _ge(v: Any, t: float) -> bool | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v >= t)


def _le(v: Any, t: float) -> bool | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v <= t)


def _at_most(v: Any, bound: float, scale: float = 1.0) -> dict[str, Any]:
    """A target ``v <= bound`` (``v / scale`` compared: milliseconds against seconds)."""
    return {"value": v, "met": _le(None if v is None else float(v) / scale, bound)}


def _at_least(v: Any, bound: float) -> dict[str, Any]:
    return {"value": v, "met": _ge(v, bound)}


def _holds(section: dict[str, Any], key: str) -> dict[str, Any]:
    """A yes/no target (None when the section did not run)."""
    return {"value": section.get(key), "met": section.get(key) if section else None}


def targets(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target: the measured value, the bound and whether it is met (None: not
    measured)."""
    k, e, x = r.get("kernel", {}), r.get("enforcement", {}), r.get("e2e", {})
    sp, xb = r.get("spark", {}), r.get("e2e_busy_core", {})
    small, large = sp.get("state_bytes_per_batch_small"), sp.get("state_bytes_per_batch_large")
    return {
        "spark small batch <= 1.0 s": _at_most(sp.get("small_batch_s"), 1.0),
        "spark 1M-position book batch <= 1.5 s": _at_most(sp.get("large_book_batch_s"), 1.5),
        "spark large / small batch <= 1.5": _at_most(sp.get("large_over_small"), 1.5),
        "spark jobs per batch <= 6": _at_most(sp.get("jobs_per_batch"), 6.0),
        "spark state bytes per batch, large within 2x of small": _at_most(
            (large / small) if small and large else None, 2.0
        ),
        "numpy >= 20M positions/s": _at_least(k.get("numpy_pos_per_s"), 20e6),
        "spark within 10x of numpy per core": _at_most(
            k.get("numpy_per_core_over_spark_per_core"), 10.0
        ),
        "fakes >= 5,000 records/s": _at_least(e.get("fake_records_per_s"), 5000.0),
        "moto >= 500 records/s (1,000-record batches)": _at_least(e.get("records_per_s"), 500.0),
        "state reads <= ceil(accounts/100)": _at_most(
            e.get("state_reads_per_batch"), float(e.get("state_reads_allowed", 0))
        ),
        "one conditional write per account touched": _at_most(
            e.get("state_writes_per_account_touched"), 1.0 + 1e-9
        ),
        "constant idempotency calls (2 per batch)": _at_most(
            e.get("idempotency_calls_per_batch"), 2.0
        ),
        "S3 creates <= 2 per account touched (its commit's object, the outbox it replaces)": (
            _at_most(e.get("s3_puts_per_account_touched"), 2.0)
        ),
        "e2e p99 <= 2.5 s at 1,000 events/s": _at_most(x.get("latency_ms_p99"), 2.5, 1000.0),
        "e2e p99 <= 2 s (stretch)": _at_most(x.get("latency_ms_p99"), 2.0, 1000.0),
        "e2e kept up": _holds(x, "kept_up"),
        "e2e p99 <= 5 s with one core kept busy by another process": _at_most(
            xb.get("latency_ms_p99"), 5.0, 1000.0
        ),
        "e2e kept up with one core kept busy": _holds(xb, "kept_up"),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        if isinstance(v, float) and math.isnan(v):
            return "n/a"
        a = abs(v)
        if a >= 1e6:
            return f"{v / 1e6:,.2f}M"
        if a >= 100:
            return f"{v:,.0f}"
        if a >= 1:
            return f"{v:,.2f}"
        return f"{v:.3g}"
    return str(v)


def table(r: dict[str, Any]) -> str:
    """The human-readable summary: headline figures, ratios, per-batch-size detail, targets."""
    k, e, x = r.get("kernel", {}), r.get("enforcement", {}), r.get("e2e", {})
    lines = [
        f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores,"
        f" load {', '.join(f'{v:.2f}' for v in r['machine']['load_average_at_start'])} at start,"
        f" {', '.join(f'{v:.2f}' for v in r.get('load_average_at_end', []))} at end;"
        f" mode {r['settings']['mode']}",
        "",
        "| figure | value | ratio to NumPy |",
        "|---|---:|---:|",
    ]
    np_rate = k.get("numpy_pos_per_s")

    def ratio(v: Any) -> str:
        return _fmt(v / np_rate) if v and np_rate else "-"

    if k:
        lines += [
            f"| kernel.python_pos_per_s (reference, 1 core) | {_fmt(k.get('python_pos_per_s'))}"
            f" | {ratio(k.get('python_pos_per_s'))} |",
            f"| kernel.spark_pos_per_s (job transformation, local[2]) |"
            f" {_fmt(k.get('spark_pos_per_s'))} | {ratio(k.get('spark_pos_per_s'))} |",
        ]
        if k.get("spark_columnar_pos_per_s"):
            lines.append(
                f"| kernel.spark_columnar_pos_per_s (diagnostic: the kernel in doubles, local[2]) |"
                f" {_fmt(k.get('spark_columnar_pos_per_s'))} |"
                f" {ratio(k.get('spark_columnar_pos_per_s'))} |"
            )
        lines += [
            f"| kernel.numpy_pos_per_s (1 thread) | {_fmt(np_rate)} | 1 |",
            f"| kernel.numpy_2threads_pos_per_s | {_fmt(k.get('numpy_2threads_pos_per_s'))} |"
            f" {ratio(k.get('numpy_2threads_pos_per_s'))} |",
        ]
    for key in HEADLINE[3:]:
        v = lookup(r, key)
        if v is not None:
            lines.append(f"| {key} | {_fmt(v)} | |")
    if x:
        lines.append(f"| e2e.latency_ms_p95 | {_fmt(x.get('latency_ms_p95'))} | |")
        if x.get("latency_ms_p99_while_input_flowed") is not None:
            lines.append(
                "| e2e.latency_ms_p99 without the batch read after the input stopped | "
                f"{_fmt(x['latency_ms_p99_while_input_flowed'])} | |"
            )
        if x.get("input_latency_ms_p50") is not None:
            lines.append(
                "| e2e per input (to the last decision of its micro-batch): p50/p99 ms | "
                f"{_fmt(x['input_latency_ms_p50'])}/{_fmt(x['input_latency_ms_p99'])} | |"
            )
        st = x.get("latency_stages") or {}
        for part in ("spark", "mapping", "handler"):
            if f"{part}_ms_p50" in st:
                lines.append(
                    f"| e2e latency part {part}: p50/p99 ms | {_fmt(st[f'{part}_ms_p50'])}/"
                    f"{_fmt(st[f'{part}_ms_p99'])} | |"
                )
    for mode in ("fakes", "moto", "moto_rtt"):
        label = mode
        if mode == "moto_rtt":
            label = f"moto + {_fmt(e.get('modelled_rtt_ms'))} ms per DynamoDB call (model)"
        for size, d in (e.get(mode) or {}).items():
            lines.append(
                f"| enforcement.{label} batch {size}: rec/s, p50/p99 ms | "
                f"{_fmt(d['records_per_s'])}, {_fmt(d['batch_ms_p50'])}/{_fmt(d['batch_ms_p99'])}"
                " | |"
            )
    lines += ["", "| target | value | met |", "|---|---:|---|"]
    for name, t in r.get("targets", {}).items():
        lines.append(f"| {name} | {_fmt(t['value'])} | {_fmt(t['met'])} |")
    return "\n".join(lines)


def write(r: dict[str, Any], path: str) -> None:
    d = os.path.dirname(path)
    if d:
        os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(r, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
