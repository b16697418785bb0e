"""Section 2: the real enforcement handler on MSK-shaped batches, with fakes and against moto.

Both modes call ``lambdas.enforcement.app.lambda_handler`` with the MSK event and a Lambda context,
so Powertools' Kafka parsing, idempotency, batch processor, Logger and EMF metrics are all in the
measured cost. (a) swaps the service's ports and the idempotency store of the cached runtime for
in-memory fakes; (b) is the runtime as deployed, its boto3 clients pointed at the embedded moto
server, with every API call counted by a botocore ``before-call`` hook.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from bench.fakes import MemoryPersistenceLayer, fake_ports
from bench.timing import median, percentile
from bench.workload import Workload
from lambdas.enforcement.local_invoke import FakeLambdaContext, build_msk_event, invoke
from margin_risk.config import EnforcementConfig
from margin_risk.tools.local.moto_server import patched_env
from margin_risk.usecase.service import EnforcementService

ACCOUNTS = 200


@dataclass(frozen=True)
class EnforcementSettings:
    sizes: tuple[int, ...] = (100, 1000)
    runs: int = 5
    batches_per_run: dict[int, int] | None = None  # default: enough for ~2,000+ records a run
    warmup_batches: int = 3
    accounts: int = ACCOUNTS
    moto: bool = True
    # A second moto run with this much sleep before every DynamoDB call (0: skip it): a model
    # of the network round trip that in-process moto does not have, so the figure shows what the
    # parallel state commits overlap. A model, not a measurement of AWS.
    modelled_rtt_ms: float = 5.0

    def batches(self, size: int) -> int:
        if self.batches_per_run and size in self.batches_per_run:
            return self.batches_per_run[size]
        return max(2, 2000 // size)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send the handler's JSON logs and EMF lines to a null sink (still formatted and written)."""
    import lambdas.enforcement.app  # noqa: F401 - its Logger must bind the real stdout first

    sink = _devnull()
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    loggers = [
        logging.getLogger(),
        *(logging.getLogger(n) for n in logging.root.manager.loggerDict),
    ]
    for lg in loggers:
        for h in getattr(lg, "handlers", []):
            if isinstance(h, logging.StreamHandler) and h.stream in (sys.stdout, sys.__stdout__):
                swapped.append((h, h.stream))
                h.setStream(sink)
    try:
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        for h, old in swapped:
            h.setStream(old)


_SINK: list[Any] = []


def _devnull() -> Any:
    """One process-wide null stream, never closed (a handler created meanwhile may keep it)."""
    if not _SINK:
        _SINK.append(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the process
    return _SINK[0]


def _batches_stats(
    send: Callable[[dict[str, Any]], Any],
    calls: Counter[str],
    workload: Workload,
    size: int,
    s: EnforcementSettings,
) -> dict[str, Any]:
    """Warm-up, then ``runs`` runs of ``batches(size)`` batches: records/s per run (median),
    per-batch durations (p50/p99 over every measured batch), API calls per batch (mean)."""
    import time

    for _ in range(s.warmup_batches):
        send(build_msk_event(workload.batch(size)))
    rates: list[float] = []
    durations: list[float] = []
    before = Counter(calls)
    n_batches = 0
    touched = 0
    failures = 0
    for _ in range(s.runs):
        events = []
        for _ in range(s.batches(size)):
            recs = workload.batch(size)
            touched += len({r.key_ for r in recs})
            events.append(build_msk_event(recs))
        t_run = 0.0
        for ev in events:
            t0 = time.perf_counter()
            resp = send(ev)
            dt = time.perf_counter() - t0
            failures += len((resp or {}).get("batchItemFailures") or [])
            durations.append(dt)
            t_run += dt
        rates.append(size * len(events) / t_run)
        n_batches += len(events)
    delta = Counter(calls)
    delta.subtract(before)
    per_batch = {k: v / n_batches for k, v in sorted(delta.items()) if v}
    return {
        "batch_size": size,
        "records_per_s": median(rates),
        "records_per_s_runs": rates,
        "batch_ms_p50": 1000 * percentile(durations, 50),
        "batch_ms_p99": 1000 * percentile(durations, 99),
        "batches": n_batches,
        "accounts_touched_per_batch": touched / n_batches,
        "item_failures": failures,
        "calls_per_batch": per_batch,
    }


# --- (a) fakes ----------------------------------------------------------------------------------
def run_fakes(s: EnforcementSettings) -> dict[str, dict[str, Any]]:
    from lambdas.enforcement.runtime import get_runtime, reset_runtime

    env = {
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        # the runtime's ports are replaced by fakes below; the names only have to be complete
        **EnforcementConfig.local().to_environment(),
    }
    keep: list[Any] = []
    out = {}
    with patched_env(env):
        for size in s.sizes:
            calls: Counter[str] = Counter()
            reset_runtime()
            rt = get_runtime()
            keep.append(rt)  # the handler caches its idempotent wrapper by id(runtime)
            rt.service = EnforcementService(
                **fake_ports(calls), metrics=rt.metrics, tracing=rt.service.tracing
            )
            rt.persistence = cast(Any, MemoryPersistenceLayer(calls))
            with quiet_stdout():
                out[str(size)] = _batches_stats(
                    lambda ev: invoke(ev, FakeLambdaContext()), calls, Workload(s.accounts), size, s
                )
        reset_runtime()
    return out


# --- (b) moto -----------------------------------------------------------------------------------
def _count_hook(calls: Counter[str], service: str) -> Callable[..., None]:
    def hook(model: Any, params: dict[str, Any], **_: Any) -> None:
        table = params.get("TableName") if isinstance(params, dict) else None
        if service == "dynamodb" and model.name in (
            "PutItem",
            "UpdateItem",
            "GetItem",
            "DeleteItem",
        ):
            kind = "idempotency" if "idem" in str(table) else "state"
            calls[f"dynamodb.{model.name}({kind})"] += 1
        else:
            calls[f"{service}.{model.name}"] += 1

    return hook


def run_moto(s: EnforcementSettings, rtt_ms: float = 0.0) -> dict[str, dict[str, Any]]:
    from lambdas.enforcement.runtime import get_runtime, reset_runtime
    from margin_risk.tools.local.moto_server import client_env, provision, start_moto

    server = start_moto()
    keep: list[Any] = []
    out = {}
    try:
        with patched_env(client_env(server.endpoint)):
            for size in s.sizes:
                n = uuid.uuid4().hex[:8]
                cfg = EnforcementConfig.local(
                    state_table_name=f"bench-state-{n}",
                    idempotency_table_name=f"bench-idem-{n}",
                    audit_bucket=f"bench-audit-{n}",
                )
                cfg = provision(server.endpoint, cfg).config
                with patched_env(cfg.to_environment()):
                    reset_runtime()
                    rt = get_runtime()
                    keep.append(rt)
                    calls: Counter[str] = Counter()
                    if rtt_ms > 0:
                        rt.dynamodb.meta.events.register(
                            "before-send.dynamodb.*", _sleep_hook(rtt_ms / 1000.0)
                        )
                    for svc, client in (("dynamodb", rt.dynamodb), ("s3", rt.s3), ("sns", rt.sns)):
                        client.meta.events.register(
                            "before-parameter-build.*.*", _count_hook(calls, svc)
                        )
                    with quiet_stdout():
                        out[str(size)] = _batches_stats(
                            lambda ev: invoke(ev, FakeLambdaContext()),
                            calls,
                            Workload(s.accounts),
                            size,
                            s,
                        )
                    reset_runtime()
    finally:
        server.stop()
    return out


def _sleep_hook(seconds: float) -> Callable[..., None]:
    def hook(**_: Any) -> None:
        time.sleep(seconds)

    return hook


def ddb_calls(calls: dict[str, float]) -> float:
    return sum(v for k, v in calls.items() if k.startswith("dynamodb."))


def run(s: EnforcementSettings, log: Any = print) -> dict[str, Any]:
    log("enforcement: handler with in-memory fakes")
    fakes = run_fakes(s)
    out: dict[str, Any] = {"accounts": s.accounts, "fakes": fakes}
    head = str(max(s.sizes))
    out["fake_records_per_s"] = fakes[head]["records_per_s"]
    if s.moto:
        log("enforcement: handler against the embedded moto endpoint")
        moto = run_moto(s)
        out["moto"] = moto
        calls = moto[head]["calls_per_batch"]
        out["records_per_s"] = moto[head]["records_per_s"]
        out["batch_ms_p50"] = moto[head]["batch_ms_p50"]
        out["batch_ms_p99"] = moto[head]["batch_ms_p99"]
        out["ddb_calls_per_batch"] = ddb_calls(calls)
        out["s3_puts_per_batch"] = calls.get("s3.PutObject", 0.0)
        # Audit objects are per committed account version: at most its own and the outbox it
        # replaces (created once each; a second attempt is refused by S3, not rewritten).
        out["s3_puts_per_account_touched"] = out["s3_puts_per_batch"] / max(
            1.0, moto[head]["accounts_touched_per_batch"]
        )
        out["idempotency_calls_per_batch"] = sum(
            v for k, v in calls.items() if k.endswith("(idempotency)")
        )
        out["state_reads_per_batch"] = calls.get("dynamodb.BatchGetItem", 0.0)
        out["state_reads_allowed"] = math.ceil(s.accounts / 100)
        out["state_writes_per_account_touched"] = calls.get("dynamodb.PutItem(state)", 0.0) / max(
            1.0, moto[head]["accounts_touched_per_batch"]
        )
        if s.modelled_rtt_ms > 0:
            log(f"enforcement: moto again, {s.modelled_rtt_ms:g} ms before each DynamoDB call")
            out["moto_rtt"] = run_moto(s, s.modelled_rtt_ms)
            out["modelled_rtt_ms"] = s.modelled_rtt_ms
    return out
