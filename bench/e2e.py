"""Section 3: the local pipeline at a steady input rate, input-to-decision latency and keep-up.

Wiring (all in this process except the tansu broker): a producer thread paced to ``rate`` events/s
of prices, fills and cash into the broker; the Spark job's local runner
(``emr_jobs.local_runner.LocalMarginJob.run_until``) in local[2]; the local event source mapping
(``margin_risk.tools.local.esm``) driving the real enforcement handler against the embedded moto
server.

With ``busy_cores``, the run starts that many processes of its own that each keep one core busy
(a Python loop spinning from before the job starts until the run ends), as other work sharing
the machine would.

Latency of a result record = the wall time its handler invocation returned (the decision) minus its
``origin_ts`` header, which the Spark job sets to the Kafka timestamp of the newest input behind
that account's recalculation (the produce time). An older input in the same micro-batch waited up to
one micro-batch longer; the Spark batch durations are reported beside the latencies for that reason.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.enforcement import quiet_stdout
from bench.timing import median, percentile
from margin_risk import names


@dataclass(frozen=True)
class E2ESettings:
    rate: float = 1000.0
    duration_s: float = 60.0
    accounts: int = 200
    symbols: int = 50
    esm_batch_size: int = 1000
    esm_window_s: float = 0.5
    partitions: int = 2
    # Input at ``rate`` before the measured window: the Spark driver's JIT keeps compiling for the
    # first few dozen micro-batches, and the job runs for days in production.
    steady_warmup_s: float = 0.0
    warmup_timeout_s: float = 180.0
    drain_timeout_s: float = 60.0
    seed: int = 5
    busy_cores: int = 0  # spinning processes started for the whole run (other work's load)


def _iso(ts: float) -> str:
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class InputFeed:
    """Prices (70%), fills (25%) and deposits (5%) on a fixed book of accounts and symbols."""

    def __init__(self, accounts: int, symbols: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.accounts = [f"E2E{i:05d}" for i in range(accounts)]
        self.symbols = [f"SYM{i:03d}" for i in range(symbols)]
        self.price = {s: self.rng.uniform(3.0, 300.0) for s in self.symbols}
        self.beta = {s: round(self.rng.uniform(0.5, 2.0), 2) for s in self.symbols}
        self.n = 0

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:09d}"

    def opening(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Prices of every symbol, a deposit and five fills per account (longs and shorts)."""
        now = _iso(time.time())
        out = [self._tick(s, now) for s in self.symbols]
        for a in self.accounts:
            out.append(self._cash(a, now, self.rng.uniform(20_000, 200_000)))
            for s in self.rng.sample(self.symbols, 5):
                side = "SHORT" if self.rng.random() < 0.3 else "BUY"
                out.append(self._fill(a, s, side, now))
        return out

    def _tick(self, s: str, now: str) -> tuple[str, str, dict[str, Any]]:
        self.price[s] = max(0.5, self.price[s] * (1.0 + self.rng.gauss(0.0, 0.004)))
        return (
            names.TOPIC_PRICES,
            s,
            {"symbol": s, "price": round(self.price[s], 4), "timestamp": now, "beta": self.beta[s]},
        )

    def _fill(self, a: str, s: str, side: str, now: str) -> tuple[str, str, dict[str, Any]]:
        fid = self._id("F")
        return (
            names.TOPIC_FILLS,
            a,
            {
                "fill_id": fid,
                "account_id": a,
                "symbol": s,
                "side": side,
                "quantity": float(self.rng.randint(10, 400)),
                "price": round(self.price[s], 4),
                "timestamp": now,
                "correlation_id": f"c-{fid}",
            },
        )

    def _cash(self, a: str, now: str, amount: float) -> tuple[str, str, dict[str, Any]]:
        tid = self._id("T")
        return (
            names.TOPIC_CASH,
            a,
            {
                "txn_id": tid,
                "account_id": a,
                "amount": round(amount, 2),
                "timestamp": now,
                "correlation_id": f"c-{tid}",
            },
        )

    def next(self) -> tuple[str, str, dict[str, Any]]:
        now = _iso(time.time())
        r = self.rng.random()
        if r < 0.70:
            return self._tick(self.rng.choice(self.symbols), now)
        a = self.rng.choice(self.accounts)
        if r < 0.95:
            side = self.rng.choice(("BUY", "SELL", "SHORT", "COVER"))
            return self._fill(a, self.rng.choice(self.symbols), side, now)
        return self._cash(a, now, self.rng.uniform(-5_000, 10_000) or 1.0)


@dataclass
class Decisions:
    """(decided wall time, latency seconds) of every result record the handler processed, and
    where each latency went: input to result produced by the Spark job (the result record's
    Kafka timestamp), result produced to handler invoked (the mapping's read and window), and
    the invocation itself."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: list[tuple[float, float]] = field(default_factory=list)
    stages: list[tuple[float, float, float, float]] = field(default_factory=list)
    newest_origin: float = 0.0
    records: int = 0

    def add(self, event: dict[str, Any], decided: float, invoked: float | None = None) -> None:
        out = []
        parts = []
        newest = 0.0
        for recs in (event.get("records") or {}).values():
            for r in recs:
                for h in r.get("headers") or []:
                    raw = h.get(names.HEADER_ORIGIN_TS)
                    if raw is None:
                        continue
                    text = bytes(raw).decode().replace("Z", "+00:00")
                    origin = datetime.fromisoformat(text).timestamp()
                    newest = max(newest, origin)
                    out.append((decided, decided - origin))
                    if invoked is not None and r.get("timestamp") is not None:
                        produced = float(r["timestamp"]) / 1000.0
                        parts.append(
                            (origin, produced - origin, invoked - produced, decided - invoked)
                        )
        with self.lock:
            self.samples.extend(out)
            self.stages.extend(parts)
            self.records += len(out)
            self.newest_origin = max(self.newest_origin, newest)


def _batch_of(read_ends: list[float], stage: tuple[float, float, float, float]) -> int:
    """Index (in sorted ``read_ends``) of the micro-batch a result came from: the last read that
    ended before the result was produced (origin + Spark part); -1 if none did."""
    return bisect.bisect_right(read_ends, stage[0] + stage[1]) - 1


def while_input_flowed(
    stages: list[tuple[float, float, float, float]], read_ends: list[float], stopped: float
) -> list[float]:
    """Latencies (s) of the results whose micro-batch read ended before the producer stopped.

    A result belongs to the last read that ended before it was produced. The batch that reads
    after the stop holds inputs that queued while the batch before it ran, with no newer input
    behind them: its latency includes that wait, which in steady state newer inputs hide."""
    ends = sorted(read_ends)
    out = []
    for stage in stages:
        read = _batch_of(ends, stage)
        if read >= 0 and ends[read] < stopped:
            out.append(stage[1] + stage[2] + stage[3])
    return out


def per_input_latencies(
    stages: list[tuple[float, float, float, float]],
    reads: list[tuple[float, list[float]]],
    window: tuple[float, float],
) -> list[float]:
    """Seconds from each input (its Kafka timestamp, within ``window``) to the last decision on
    the results of the micro-batch that read it: when every decision the input feeds was made.

    ``reads``: per micro-batch, when its read ended and its inputs' timestamps. Unlike a result's
    latency (from its newest input), this counts an input that arrived while the batch before ran,
    which waits for that batch and its own."""
    ends = sorted(end for end, _ in reads)
    decided: dict[int, float] = {}
    for stage in stages:
        b = _batch_of(ends, stage)
        if b >= 0:
            decided[b] = max(decided.get(b, 0.0), sum(stage))  # origin + its parts: decided at
    out: list[float] = []
    for end, stamps in reads:
        b = ends.index(end)
        if b in decided:
            out.extend(decided[b] - t for t in stamps if window[0] <= t <= window[1])
    return out


def latency_stages(stages: list[tuple[float, float, float, float]]) -> dict[str, Any]:
    """p50/p99 (ms) of each part of the latency, and the parts of the slowest results."""
    if not stages:
        return {}
    out: dict[str, Any] = {}
    for i, name in enumerate(("spark", "mapping", "handler"), start=1):
        ms = [x[i] * 1000.0 for x in stages]
        out[f"{name}_ms_p50"] = percentile(ms, 50)
        out[f"{name}_ms_p99"] = percentile(ms, 99)
    worst = sorted(stages, key=lambda x: x[1] + x[2] + x[3])[-3:]
    out["slowest_ms"] = [
        {"spark": round(x[1] * 1000), "mapping": round(x[2] * 1000), "handler": round(x[3] * 1000)}
        for x in reversed(worst)
    ]
    return out


def _producer_loop(
    producer: Any, feed: InputFeed, rate: float, duration: float, sent: list[float]
) -> None:
    """Produce ``rate`` events/s for ``duration`` s in 10 ms ticks; appends each tick's time."""
    tick = 0.01
    per_tick = rate * tick
    t0 = time.monotonic()
    owed = 0.0
    i = 0
    while True:
        target = t0 + i * tick
        if target - t0 >= duration:
            break
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        owed += per_tick
        while owed >= 1.0:
            topic, key, value = feed.next()
            producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
            owed -= 1.0
            sent.append(time.time())
        producer.poll(0)
        i += 1
    producer.flush(30)


SPIN = "while True:\n    pass\n"


@contextlib.contextmanager
def busy_cores(n: int) -> Iterator[list[int]]:
    """``n`` processes that each keep one core busy until the block ends (their pids)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL) for _ in range(n)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=30)


@dataclass
class _Window:
    """When the measured window began and ended, what was sent, and the staleness samples."""

    warm: bool
    warm_batches: int
    batches_before: int
    t_start: float
    t_end: float
    sent: list[float]
    staleness: list[tuple[float, float]]


class _Pipeline:
    """The pipeline under load: the stand-ins, the Spark job's local runner and the mapping to
    the real handler, each on its own thread, and what they record per micro-batch."""

    def __init__(self, s: E2ESettings, log: Any) -> None:
        self.s = s
        self.log = log
        self.decisions = Decisions()
        self.stop_esm = threading.Event()
        self.stop_spark = threading.Event()
        self.threads: list[threading.Thread] = []
        self.spark_stats: list[Any] = []
        self.spark_jobs: list[int] = []  # Spark jobs (actions) each micro-batch ran
        self.spark_reads: list[dict[str, float]] = []  # LocalMarginJob.last_read per batch
        self.spark_read_stamps: list[list[float]] = []  # the Kafka timestamps of its inputs
        # Last time each stage found nothing to do (Spark: no new input; mapping: no new results).
        self.idle = {"spark": 0.0, "esm": 0.0}

    def start(self, stack: contextlib.ExitStack, work: str) -> None:
        """Moto, the broker, the handler's tables and bucket, the job and the mapping."""
        from emr_jobs.local_runner import LocalMarginJob
        from lambdas.enforcement import runtime
        from margin_risk.config import EnforcementConfig
        from margin_risk.tools.local.kafka_broker import start_broker
        from margin_risk.tools.local.moto_server import (
            client_env,
            patched_env,
            provision,
            start_moto,
        )

        moto = start_moto()
        stack.callback(moto.stop)
        stack.enter_context(patched_env(client_env(moto.endpoint)))
        broker = start_broker(partitions=self.s.partitions, log_dir=None)
        stack.callback(broker.stop)
        self.bootstrap = broker.bootstrap
        n = uuid.uuid4().hex[:8]
        cfg = EnforcementConfig.local(
            state_table_name=f"e2e-state-{n}",
            idempotency_table_name=f"e2e-idem-{n}",
            audit_bucket=f"e2e-audit-{n}",
            kafka_bootstrap=broker.bootstrap,
            kafka_auth="none",
        )
        cfg = provision(moto.endpoint, cfg).config
        stack.enter_context(
            patched_env({**cfg.to_environment(), "POWERTOOLS_TRACE_DISABLED": "true"})
        )
        runtime.reset_runtime()
        stack.callback(runtime.reset_runtime)
        stack.enter_context(quiet_stdout())

        t_spark = time.monotonic()
        self.job = LocalMarginJob(broker.bootstrap, os.path.join(work, "state"))
        stack.callback(self.job.close)
        self.spark_start_s = time.monotonic() - t_spark
        self.log(f"e2e: spark local runner up in {self.spark_start_s:.1f}s")
        self.esm = self._mapping(stack)
        self.threads = [
            threading.Thread(target=self._spark_loop, name="bench-spark", daemon=True),
            threading.Thread(target=self._esm_loop, name="bench-esm", daemon=True),
        ]
        for t in self.threads:
            t.start()
        stack.callback(self._stop_threads)

    def _mapping(self, stack: contextlib.ExitStack) -> Any:
        from lambdas.enforcement.local_invoke import invoke
        from margin_risk.tools.local.esm import LocalEventSourceMapping

        def handler(event: dict[str, Any], context: Any) -> Any:
            invoked = time.time()
            resp = invoke(event, context)
            self.decisions.add(event, time.time(), invoked)
            return resp

        esm = LocalEventSourceMapping(
            self.bootstrap,
            handler,
            batch_size=self.s.esm_batch_size,
            window_seconds=self.s.esm_window_s,
        )
        stack.callback(esm.close)
        return esm

    def _esm_loop(self) -> None:
        while not self.stop_esm.is_set():
            started = time.time()
            if self.esm.poll_once() == 0:
                self.idle["esm"] = started

    def _spark_loop(self) -> None:
        """run_until's loop, keeping each batch's stats as it completes."""
        job = self.job
        tracker = job.spark.sparkContext.statusTracker()
        while not self.stop_spark.is_set():
            jobs_before = len(tracker.getJobIdsForGroup())
            st = job.run_once()
            if st is None:
                self.idle["spark"] = time.time()
                self.stop_spark.wait(0.05)
                continue
            self.spark_stats.append(st)
            self.spark_reads.append(dict(job.last_read))
            self.spark_read_stamps.append(job.last_read_stamps)
            self.spark_jobs.append(len(tracker.getJobIdsForGroup()) - jobs_before)
            self.log(
                f"e2e: spark batch {st.batch_id}: {st.input_records} inputs,"
                f" {st.margin_results} margin results, {st.duration_s:.1f}s,"
                f" {self.spark_jobs[-1]} Spark jobs; read {job.last_read.get('read_s', 0):.2f}s,"
                f" newest input {job.last_read.get('newest_age_s', 0):.2f}s old at its end"
            )

    def _stop_threads(self) -> None:
        self.stop_spark.set()
        self.stop_esm.set()
        for t in self.threads:
            t.join(timeout=120)

    def open_book(self, producer: Any, feed: InputFeed) -> bool:
        """The opening book, until its results have been decided (Spark's first batches include
        JIT and code generation; they are not part of the steady state)."""
        opening = feed.opening()
        t_open = time.time()
        for topic, key, value in opening:
            producer.produce(topic, key=key.encode(), value=json.dumps(value).encode())
        producer.flush(30)
        deadline = time.monotonic() + self.s.warmup_timeout_s
        while self.decisions.newest_origin < t_open - 0.01 and time.monotonic() < deadline:
            time.sleep(0.2)
        warm = self.decisions.newest_origin >= t_open - 0.01
        self.log(f"e2e: opening book of {len(opening)} events decided: {warm}")
        time.sleep(2.0)
        with self.decisions.lock:
            self.decisions.samples.clear()
        return warm

    def steady_input(self, producer: Any, feed: InputFeed, warm: bool) -> _Window:
        """Input at the rate: the warm-up, then the measured window, sampling staleness."""
        s = self.s
        self.log(
            f"e2e: {s.rate:.0f} events/s, {s.steady_warmup_s:.0f}s warm-up then"
            f" {s.duration_s:.0f}s measured"
        )
        sent: list[float] = []
        t_warm = time.time()
        prod = threading.Thread(
            target=_producer_loop,
            args=(producer, feed, s.rate, s.steady_warmup_s + s.duration_s, sent),
            daemon=True,
        )
        prod.start()
        warm_batches = len(self.spark_stats)
        time.sleep(max(0.0, t_warm + s.steady_warmup_s - time.time()))
        t_start = time.time()
        batches_before = len(self.spark_stats)
        staleness: list[tuple[float, float]] = []
        while prod.is_alive():
            time.sleep(0.5)
            now = time.time()
            newest = max(self.decisions.newest_origin, t_start)
            staleness.append((now - t_start, now - newest))
        return _Window(warm, warm_batches, batches_before, t_start, time.time(), sent, staleness)

    def drain(self, t_end: float) -> tuple[bool, float]:
        """Drained: Spark found no new input after the last event was sent, and after that the
        mapping found no new result (so every result of every input has been decided)."""
        deadline = time.monotonic() + self.s.drain_timeout_s
        esm_idle = 0.0
        while time.monotonic() < deadline:
            spark_idle = self.idle["spark"]
            if spark_idle > t_end and self.idle["esm"] > spark_idle:
                esm_idle = self.idle["esm"]
                break
            time.sleep(0.1)
        drained = esm_idle > 0.0
        return drained, (esm_idle if drained else time.time()) - t_end


def run(s: E2ESettings, log: Any = print) -> dict[str, Any]:
    from confluent_kafka import Producer

    work = tempfile.mkdtemp(prefix="bench-e2e-")
    p = _Pipeline(s, log)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        if s.busy_cores:
            pids = stack.enter_context(busy_cores(s.busy_cores))
            log(f"e2e: {s.busy_cores} spinning process(es) keep a core busy: pids {pids}")
        p.start(stack, work)
        producer = Producer({"bootstrap.servers": p.bootstrap, "linger.ms": 5})
        feed = InputFeed(s.accounts, s.symbols, s.seed)
        window = p.steady_input(producer, feed, p.open_book(producer, feed))
        drained, drain_s = p.drain(window.t_end)
        producer.flush(10)
        del producer  # its librdkafka threads go now, before the broker stops
        with p.decisions.lock:
            samples = [x for x in p.decisions.samples if x[0] - x[1] >= window.t_start]
            stages = [x for x in p.decisions.stages if x[0] >= window.t_start]
        esm_invocations = p.esm.stats.invocations
    latency = _latency_figures(p, window, samples, stages)
    return {
        **_settings_figures(s, p, window),
        **latency,
        **_keep_up_figures(s, p, window, samples, drained, drain_s, latency["latency_ms_p99"]),
        "esm_invocations": esm_invocations,
        "load_average_at_end": list(os.getloadavg()),
    }


def _settings_figures(s: E2ESettings, p: _Pipeline, w: _Window) -> dict[str, Any]:
    sent = w.sent
    return {
        "busy_cores": s.busy_cores,
        "rate_target": s.rate,
        "rate_achieved": len(sent) / max(1e-9, (sent[-1] - sent[0]) if len(sent) > 1 else 1.0),
        "duration_s": s.duration_s,
        "steady_warmup_s": s.steady_warmup_s,
        "warmup_spark_batch_s": [
            round(b.duration_s, 1) for b in p.spark_stats[w.warm_batches : w.batches_before]
        ],
        "events_sent": sum(1 for t in sent if t >= w.t_start),
        "accounts": s.accounts,
        "symbols": s.symbols,
        "esm_batch_size": s.esm_batch_size,
        "esm_window_s": s.esm_window_s,
        "spark_start_s": p.spark_start_s,
        "warm": w.warm,
    }


def _latency_figures(
    p: _Pipeline,
    w: _Window,
    samples: list[tuple[float, float]],
    stages: list[tuple[float, float, float, float]],
) -> dict[str, Any]:
    lat = [x[1] * 1000.0 for x in samples]
    reads = [
        (r["ended_at"], stamps)
        for r, stamps in zip(p.spark_reads, p.spark_read_stamps, strict=True)
        if "ended_at" in r
    ]
    flowing = [x * 1000.0 for x in while_input_flowed(stages, [e for e, _ in reads], w.t_end)]
    per_input = [x * 1000.0 for x in per_input_latencies(stages, reads, (w.t_start, w.t_end))]
    return {
        "results_decided": len(samples),
        "latency_ms_p50": percentile(lat, 50),
        "latency_ms_p95": percentile(lat, 95),
        "latency_ms_p99": percentile(lat, 99),
        "latency_ms_max": max(lat) if lat else float("nan"),
        "latency_stages": latency_stages(stages),
        # Without the batch that read after the producer stopped (see while_input_flowed).
        "latency_ms_p99_while_input_flowed": percentile(flowing, 99) if flowing else None,
        "results_while_input_flowed": len(flowing),
        # Per input rather than per result (see per_input_latencies).
        "input_latency_ms_p50": percentile(per_input, 50) if per_input else None,
        "input_latency_ms_p99": percentile(per_input, 99) if per_input else None,
        "inputs_decided": len(per_input),
        "staleness_s_samples": [[round(a, 1), round(b, 2)] for a, b in w.staleness],
    }


def _keep_up_figures(
    s: E2ESettings,
    p: _Pipeline,
    w: _Window,
    samples: list[tuple[float, float]],
    drained: bool,
    drain_s: float,
    p99_ms: float,
) -> dict[str, Any]:
    """Keeping up = bounded lag: the job's micro-batches consume input at least as fast as it
    arrives (a batch reads everything that queued while the previous one ran), the latency does
    not trend up, and after the producer stops the backlog is decided within max(5 s, 2 x p99)."""
    q = len(samples) // 4
    in_time = sorted(samples)
    early = [x[1] for x in in_time[q : 2 * q]]
    late = [x[1] for x in in_time[3 * q :]]
    growing = bool(early and late and median(late) > 2 * median(early) + 0.5)
    steady_batches = p.spark_stats[w.batches_before :]
    steady_reads = p.spark_reads[w.batches_before :]
    spark_durations = [b.duration_s for b in steady_batches if not b.skipped]
    spark_in = sum(b.input_records for b in steady_batches)
    spark_rate = spark_in / sum(spark_durations) if spark_durations else 0.0
    kept_up = (
        drained
        and not growing
        and spark_rate >= 0.95 * s.rate
        and drain_s <= max(5.0, 2 * p99_ms / 1000.0)
    )
    return {
        "latency_growing": growing,
        "drained": drained,
        "drain_s": drain_s,
        "kept_up": bool(kept_up),
        "spark_batches": len(steady_batches),
        "spark_batch_s_p50": percentile(spark_durations, 50),
        "spark_batch_s_max": max(spark_durations) if spark_durations else float("nan"),
        "spark_jobs_per_batch": p.spark_jobs,
        "spark_events_per_s_while_busy": spark_rate,
        "spark_batch_s": [round(d, 1) for d in spark_durations],
        # Per micro-batch: seconds its read took and the age of its newest input when the read
        # ended (what a result waits before its batch starts, beyond the batch itself).
        "spark_read_s": [round(r.get("read_s", 0.0), 2) for r in steady_reads],
        "spark_read_newest_age_s": [round(r.get("newest_age_s", 0.0), 2) for r in steady_reads],
        "spark_input_per_batch_p50": percentile(
            [float(b.input_records) for b in steady_batches], 50
        ),
    }
