"""Timing helpers: warm-up, repeated runs, medians and percentiles (no third-party code)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from dashboards.local_metrics import percentile as nearest_rank


def timed_runs(fn: Callable[[], Any], runs: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cpu_runs(fn: Callable[[], Any], runs: int) -> list[float]:
    """CPU seconds of the calling thread per call (after the caller's warm-up): the time one
    core would take if nothing else ran on it, which wall time under load is not."""
    out = []
    for _ in range(runs):
        t0 = time.thread_time()
        fn()
        out.append(time.thread_time() - t0)
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else math.nan


def percentile(xs: Sequence[float], q: float) -> float:
    """`dashboards.local_metrics.percentile` (nearest rank), NaN when empty (for JSON reports)."""
    p = nearest_rank(xs, q)
    return math.nan if p is None else p


def summary(xs: Sequence[float]) -> dict[str, float]:
    """min / median / max of a sample (seconds or whatever unit it is in)."""
    return {"min": min(xs), "median": median(xs), "max": max(xs), "n": float(len(xs))}
