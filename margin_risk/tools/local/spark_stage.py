"""The Spark margin job as a stage of the local demo: settle after each step, crash on request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from margin_risk.settings import load_house_settings

if TYPE_CHECKING:
    from emr_jobs.local_runner import LocalMarginJob


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
        # The margin history the job writes (margin_risk.archive), as it does on AWS.
        self.history_dir = str(run_dir / "history")
        self.params = load_house_settings().margin.to_params()
        self.job = self._new_job()
        self.startup_seconds = time.monotonic() - started
        self.batches = 0
        self.margin_results = 0
        self.stress_results = 0
        self.rejected = 0
        self.input_records = 0
        self.restarts = 0
        self.settle_timeout_s = 120.0

    def _new_job(self, spark: Any = None) -> LocalMarginJob:
        return self._factory(
            self.bootstrap,
            self.state_dir,
            self.params,
            self.metrics_dir,
            spark=spark,
            history_dir=self.history_dir,
        )

    def warm_up(self, accounts: int = 40, symbols: int = 8, steps: int = 1) -> float:
        """Run a few throwaway micro-batches through ``process_batch`` before the session.

        A production streaming job is long-running and warm; a fresh local JVM spends its first
        batch in the JIT and in Janino compiles (28 s for the opening step instead of ~8 s,
        measured), which is start-up, not the pipeline's latency. The warm-up uses its own
        state directory, no metrics and a sink that only collects, so nothing of it reaches
        the broker, the demo's state or its numbers. Returns the seconds it took.
        """
        import tempfile
        from datetime import UTC, datetime

        from emr_jobs.batch import JobContext, process_batch
        from emr_jobs.frames import kafka_frame
        from emr_jobs.state import StateStore
        from margin_risk.tools.local.simulator import MarketSimulator

        started = time.monotonic()
        spark = self.job.spark
        sim = MarketSimulator(accounts, symbols, seed=0)
        offsets: dict[str, int] = {}
        with tempfile.TemporaryDirectory(prefix="margin-warmup-") as tmp:

            def collect_only(outputs: Any, _batch_id: int) -> None:
                outputs.collect()

            ctx = JobContext(self.params, StateStore(spark, tmp), collect_only)
            for batch_id, step in enumerate(sim.steps[:steps]):
                now_us = int(datetime.now(tz=UTC).timestamp() * 1_000_000)
                rows: list[tuple[Any, ...]] = []
                for r in step.records:
                    off = offsets.get(r.topic, 0)
                    offsets[r.topic] = off + 1
                    rows.append((r.key.encode(), r.value, r.topic, 0, off, now_us, 0, []))
                df = kafka_frame(spark, rows)
                process_batch(spark, df, batch_id, ctx, {"offsets": {}})
        return time.monotonic() - started

    def settle(self, crash: bool = False) -> None:
        """Run micro-batches until the inputs produced so far are consumed.

        With ``crash``, the first micro-batch dies after emitting half of its outputs (the plan
        is written, the commit is not), and a fresh job on the same state directory restarts.
        """
        if crash:
            self._crash_once()
        deadline = time.monotonic() + self.settle_timeout_s
        while self.job.pending() > 0:
            stats = self.job.run_once()
            if stats is None:  # on the broker but not fetched within the idle timeout: retry
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.job.pending()} input records still unread after"
                        f" {self.settle_timeout_s:.0f} s"
                    )
                continue
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
        self.job = self._new_job(spark)
        self.restarts += 1

    def stop(self) -> None:
        self.job.close()
        self.job.spark.stop()
