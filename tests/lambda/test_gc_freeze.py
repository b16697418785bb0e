"""The Lambda's start-up objects are frozen once per execution environment (see runtime.py)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from .harness import Deployment

ROOT = Path(__file__).resolve().parents[2]


def test_start_up_objects_are_frozen_once_per_process() -> None:
    # A fresh interpreter: this test process may have built a runtime (and frozen) already.
    code = (
        "import gc\n"
        "from lambdas.enforcement.runtime import freeze_startup_objects\n"
        "before = gc.get_freeze_count()\n"
        "freeze_startup_objects()\n"
        "first = gc.get_freeze_count()\n"
        "keep = [object() for _ in range(1000)]\n"
        "freeze_startup_objects()\n"
        "print(before, first, gc.get_freeze_count())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, first, second = (int(x) for x in out.stdout.split())
    assert before == 0
    assert first > 10_000  # the imported modules, classes and boto3/Powertools objects
    assert second == first  # later objects (and later runtimes, in tests) are not frozen


def test_the_runtime_is_built_with_the_start_up_objects_frozen(deployment: Deployment) -> None:
    deployment.runtime  # noqa: B018 - builds the runtime
    assert gc.get_freeze_count() > 0
