"""The Spark margin job as a stage of the local demo: settle after each step, crash on request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from margin_risk.settings import load_house_settings


class SimulatedCrash(RuntimeError):
    """Raised inside the job's sink after part of a micro-batch's outputs went out."""


class SparkStage:
    """Wraps `emr_jobs.local_runner.LocalMarginJob` with counters the demo reports."""

    def __init__(self, bootstrap: str, run_dir: Path, opts: Any) -> None:
        from emr_jobs.local_runner import LocalMarginJob

        started = time.monotonic()
        self._factory = LocalMarginJob
        self.bootstrap = bootstrap
        self.state_dir = str(run_dir / "spark-state")
        self.metrics_dir = str(run_dir / "metrics")
        self.params = load_house_settings().margin.to_params()
        self.job = LocalMarginJob(bootstrap, self.state_dir, self.params, self.metrics_dir)
        self.startup_seconds = time.monotonic() - started
        self.batches = 0
        self.margin_results = 0
        self.stress_results = 0
        self.rejected = 0
        self.input_records = 0
        self.restarts = 0

    def settle(self, crash: bool = False) -> None:
        """Run micro-batches until the inputs produced so far are consumed.

        With ``crash``, the first micro-batch dies after emitting half of its outputs (the plan
        is written, the commit is not), and a fresh job on the same state directory restarts.
        """
        if crash:
            self._crash_once()
        while True:
            stats = self.job.run_once()
            if stats is None:
                return
            self.batches += 1
            self.margin_results += stats.margin_results
            self.stress_results += stats.stress_results
            self.rejected += sum(stats.rejected.values())
            self.input_records += stats.input_records

    def _crash_once(self) -> None:
        job = self.job
        real_sink = job._sink

        def dying_sink(outputs: Any, batch_id: int) -> None:
            real_sink(outputs.limit(max(1, outputs.count() // 2)), batch_id)
            raise SimulatedCrash(f"micro-batch {batch_id} killed after partial output")

        job._sink = dying_sink  # type: ignore[method-assign]
        try:
            job.run_once()
        except SimulatedCrash:
            pass
        else:  # nothing to process: no crash to simulate
            job._sink = real_sink  # type: ignore[method-assign]
            return
        spark = job.spark
        job.close()
        self.job = self._factory(
            self.bootstrap, self.state_dir, self.params, self.metrics_dir, spark=spark
        )
        self.restarts += 1

    def stop(self) -> None:
        self.job.close()
        self.job.spark.stop()
