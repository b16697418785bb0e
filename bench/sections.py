"""Running one benchmark section, in this process or in a fresh interpreter.

Kept out of ``bench.__main__``: a spawned worker imports the function it runs by module name,
and under ``python -m bench`` that module would be ``__main__``, which the worker cannot import.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_section(name: str, section_settings: Any) -> dict[str, Any]:
    from bench import e2e, enforcement, kernel, spark_batch

    runs: dict[str, Callable[..., dict[str, Any]]] = {
        "kernel": kernel.run,
        "spark": spark_batch.run,
        "enforcement": enforcement.run,
        "e2e": e2e.run,
        "e2e_busy_core": e2e.run,
    }
    result = runs[name](section_settings, log=_log)
    result["pid"] = os.getpid()
    return result


def in_fresh_process(name: str, section_settings: Any) -> dict[str, Any]:
    """Run one section in a new interpreter. PySpark keeps one JVM per Python process even after
    ``spark.stop()``, so in a single process the e2e section's Spark job ran in the JVM the kernel
    section had just filled with 1M positions and trained its JIT on (e2e batch p50 4.0 s in a
    full run against 3.5-3.7 s alone, same commit); each section now starts as it would alone."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result: dict[str, Any] = pool.submit(run_section, name, section_settings).result()
    return result
