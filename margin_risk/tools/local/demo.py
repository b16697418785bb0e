"""The main job: the whole pipeline on this machine (`python -m margin_risk demo`).

Embedded stand-ins replace the managed services, the code under test is the real thing:
moto server (DynamoDB, S3, SNS, SQS; or LocalStack / AWS when ``AWS_ENDPOINT_URL`` says so),
the tansu Kafka-protocol broker with the spec's topics, the Spark margin job in ``local[2]``, and
the real enforcement handler driven by a local event source mapping. A simulated session is
published step by step; after each step the pipeline settles (Spark processes what arrived, the
mapping delivers the results), so a run is reproducible for a given seed. Two steps are the risk
desk's: an operator extends one call and waives another, through the desk command's code path
(`margin_risk.tools.desk`, signed by the embedded endpoint's STS identity) to ``desk.actions.v1``.

The session opens with a house requirement per symbol (spec section 7): a 3x leveraged ETF at
75%, published on ``house.requirements.v1`` and applied by the Spark job. The job archives every
result it emits as the margin history (`margin_risk.archive`'s layout under ``<run>/history``);
at the end a stricter warning cushion is backtested over that archive, next to the decisions
actually taken.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from dashboards.local_metrics import percentile
from margin_risk import names
from margin_risk.models import iso
from margin_risk.tools.files import unwritable
from margin_risk.tools.local.simulator import DEMO_DEADLINE_SECONDS, MarketSimulator, Step

# The backtest's stricter policy: warn at 10% of gross instead of 5% (the session's deadline kept).
BACKTEST_WARNING_CUSHION = 0.10


@dataclass
class DemoOptions:
    accounts: int = 300
    symbols: int = 40
    seed: int = 7
    run_dir: Path = Path(".local/demo")
    summary_json: Path | None = None
    batch_size: int = 500  # the prod stage's event source mapping (cdk.json)
    window_seconds: float = 0.2
    partitions: int = 2
    deadline_seconds: int = DEMO_DEADLINE_SECONDS
    quiet: bool = False
    warm_up_spark: bool = True  # tests that do not read latencies skip it (~20 s)
    # test hook: kill the Spark job in the middle of this step's micro-batch, then restart it
    crash_spark_at_step: int | None = None


@dataclass
class Summary:
    """What the demo prints at the end; ``--summary-json`` writes the same keys."""

    events_in: int = 0
    margin_results: int = 0
    stress_results: int = 0
    margin_warnings: int = 0
    margin_calls_issued: int = 0
    margin_calls_met: int = 0
    accounts_restricted: int = 0
    liquidations: int = 0
    stress_breaches: int = 0
    calls_extended: int = 0
    calls_waived: int = 0
    desk_actions_rejected: int = 0
    rejected_records: int = 0
    rejected_by_spark: int = 0
    rejected_by_enforcement: int = 0
    duplicate_fills_sent: int = 0
    audit_objects: int = 0
    audit_events: int = 0
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    state_matches_audit_rebuild: bool = False
    spark_restarts: int = 0
    wall_seconds: float = 0.0
    accounts: int = 0
    symbols: int = 0
    seed: int = 0
    call_deadline_seconds: int = DEMO_DEADLINE_SECONDS
    dashboard: str = ""
    health: str = ""
    named_queries: dict[str, Any] = field(default_factory=dict)
    # The desk's actions as published (the record) and the decision each got.
    desk_actions: list[dict[str, Any]] = field(default_factory=list)
    operator: str = ""
    history: dict[str, Any] = field(default_factory=dict)
    # The house requirements per symbol the session published, and how many books hold each.
    house: list[dict[str, Any]] = field(default_factory=list)
    backtest: dict[str, Any] = field(default_factory=dict)


@contextmanager
def captured_stdout(path: Path) -> Iterator[TextIO]:
    """Send the handler's JSON logs (Powertools writes to stdout) to a file, not the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8", buffering=1) as f:
        old = sys.stdout
        sys.stdout = f
        try:
            yield old
        finally:
            sys.stdout = old


def _produce(producer: Any, step: Step) -> int:
    """Publish a step's records with the correlation id and origin time in headers."""
    now = datetime.now(tz=UTC).isoformat().replace("+00:00", "Z")
    for r in step.records:
        headers = {names.HEADER_ORIGIN_TS: now}
        try:
            corr = json.loads(r.value).get("correlation_id")
        except ValueError:
            corr = None
        if isinstance(corr, str):
            headers[names.HEADER_CORRELATION_ID] = corr
        producer.produce(r.topic, key=r.key, value=r.value, headers=headers)
    producer.flush(30)
    return len(step.records)


class Demo:
    def __init__(self, opts: DemoOptions, out: TextIO) -> None:
        self.opts = opts
        self.out = out
        self.summary = Summary(
            accounts=opts.accounts, symbols=opts.symbols, seed=opts.seed,
            call_deadline_seconds=opts.deadline_seconds,
        )  # fmt: skip

    def say(self, text: str) -> None:
        if not self.opts.quiet:
            self.out.write(text + "\n")
            self.out.flush()

    def run(self) -> Summary:
        from confluent_kafka import Producer

        from margin_risk.config import EnforcementConfig
        from margin_risk.tools import desk
        from margin_risk.tools.local.esm import LocalEventSourceMapping
        from margin_risk.tools.local.kafka_broker import start_broker
        from margin_risk.tools.local.moto_server import client_env, provision, start_moto
        from margin_risk.tools.local.spark_stage import SparkStage

        o = self.opts
        started = time.monotonic()
        run_dir = o.run_dir.resolve()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        (run_dir / "metrics").mkdir(parents=True)
        sim = MarketSimulator(o.accounts, o.symbols, o.seed)
        self.say(
            f"demo: {o.accounts} accounts, {o.symbols} symbols, seed {o.seed};"
            f" call deadline shortened to {o.deadline_seconds}s (house default 172800s)"
        )
        with ExitStack() as stack:
            saved_env = dict(os.environ)
            stack.callback(_restore_env, saved_env)
            endpoint = os.environ.get("AWS_ENDPOINT_URL")
            if not endpoint:
                moto = start_moto()
                stack.callback(moto.stop)
                endpoint = moto.endpoint
                os.environ.update(client_env(endpoint))
                self.say(f"aws: embedded moto server at {endpoint}")
            else:
                self.say(f"aws: endpoint {endpoint} (AWS_ENDPOINT_URL)")
            broker = start_broker(partitions=o.partitions, log_dir=run_dir / "logs")
            stack.callback(broker.stop)
            self.say(f"kafka: tansu broker at {broker.bootstrap}, {len(names.ALL_TOPICS)} topics")
            cfg = EnforcementConfig.local(kafka_bootstrap=broker.bootstrap, kafka_auth="none")
            prov = provision(endpoint, cfg)
            os.environ.update(prov.config.to_environment())
            os.environ.update(
                {
                    "MR_POLICY__CALL_DEADLINE_SECONDS": str(o.deadline_seconds),
                    "MR_METRICS_DIR": str(run_dir / "metrics"),
                    "POWERTOOLS_TRACE_DISABLED": "true",
                    "POWERTOOLS_SERVICE_NAME": names.SERVICE_ENFORCEMENT,
                    "POWERTOOLS_METRICS_NAMESPACE": names.METRICS_NAMESPACE,
                }
            )
            terminal = stack.enter_context(captured_stdout(run_dir / "logs" / "enforcement.jsonl"))
            self.out = terminal if self.out is sys.stdout else self.out
            from lambdas.enforcement import runtime
            from lambdas.enforcement.local_invoke import invoke

            runtime.reset_runtime()
            stack.callback(runtime.reset_runtime)  # later users rebuild from their own env
            spark = SparkStage(broker.bootstrap, run_dir, o)
            stack.callback(spark.stop)
            self.say(f"spark: margin job in local[2] ({spark.startup_seconds:.1f}s to start)")
            self._house(sim)
            if o.warm_up_spark:
                self.say(f"spark: warmed up on a throwaway session in {spark.warm_up():.1f}s")
            esm = LocalEventSourceMapping(
                broker.bootstrap,
                invoke,
                topics=names.ENFORCEMENT_INPUT_TOPICS,
                batch_size=o.batch_size,
                window_seconds=o.window_seconds,
                on_failure=_SqsOnFailure(prov.on_failure_queue_url),
            )
            stack.callback(esm.close)
            producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
            # The operator is whoever the AWS credentials say (here the embedded endpoint's STS).
            self.summary.operator = desk.operator_identity()
            desk_out = desk.DeskPublisher(broker.bootstrap, auth="none")
            # Sequential on purpose: the mapping on its own thread made each Spark batch twice
            # as slow (the handler and moto hold the GIL the py4j calls wait for).
            for n, step in enumerate(sim.steps, start=1):
                self.summary.events_in += _produce(producer, step)
                for plan in step.desk:
                    action = plan.action_at(step.at, self.summary.operator)
                    desk_out.publish(action)
                    self.summary.desk_actions.append(json.loads(action.to_json()))
                    until = f" until {iso(action.until)}" if action.until else ""
                    self.say(
                        f"        desk: {action.action} {action.account_id}{until}"
                        f" ({action.reason}) by {action.operator}"
                    )
                t0 = time.monotonic()
                spark.settle(crash=o.crash_spark_at_step == n)
                t1 = time.monotonic()
                esm.drain()
                self.say(
                    f"[{n:2d}/{len(sim.steps)}] {step.name:<32} events in"
                    f" {self.summary.events_in:5d}  margin results {spark.margin_results:5d}"
                    f"  delivered to enforcement {esm.stats.records_delivered:5d}"
                    f"  (spark {t1 - t0:4.1f}s, enforcement {time.monotonic() - t1:4.1f}s)"
                )
            producer.flush(30)
            del producer  # its librdkafka threads go now, before the broker stops
            self.summary.duplicate_fills_sent = sim.duplicates_sent
            self.summary.margin_results = spark.margin_results
            self.summary.stress_results = spark.stress_results
            self.summary.rejected_by_spark = spark.rejected
            self.summary.spark_restarts = spark.restarts
            self._collect(run_dir, prov)
            self._history(run_dir, broker.bootstrap)
        self.summary.wall_seconds = round(time.monotonic() - started, 1)
        return self.summary

    def _collect(self, run_dir: Path, prov: Any) -> None:
        """Read back the audit trail, state and metrics; run the named queries; render reports."""
        import boto3

        from margin_risk.audit import comparable, read_audit_dir, rebuild_state, view_of
        from margin_risk.enforcement import AccountState
        from margin_risk.models import DESK_DECISIONS
        from margin_risk.tools.local.athena_local import LocalAthena
        from stacks.athena_queries import NAMED_QUERIES

        s3 = boto3.client("s3")
        bucket = prov.config.audit_bucket
        audit_root = run_dir / "s3"
        paginator = s3.get_paginator("list_objects_v2")
        rejected = 0
        for page in paginator.paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                dest = audit_root / key
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(body)
                if key.startswith(names.AUDIT_PREFIX):
                    self.summary.audit_objects += 1
                elif key.startswith(names.REJECTED_PREFIX):
                    rejected += sum(1 for line in body.splitlines() if line.strip())
        self.summary.rejected_by_enforcement = rejected
        self.summary.rejected_records = self.summary.rejected_by_spark + rejected
        trail = read_audit_dir(audit_root / names.AUDIT_PREFIX) if (
            audit_root / names.AUDIT_PREFIX
        ).exists() else []  # fmt: skip
        self.summary.audit_events = len(trail)
        counts = {t: 0 for t in names.DECISION_METRIC}
        for e in trail:
            counts[e.event_type] += 1
        s = self.summary
        s.margin_warnings = counts[names.EVENT_MARGIN_WARNING]
        s.margin_calls_issued = counts[names.EVENT_MARGIN_CALL_ISSUED]
        s.margin_calls_met = counts[names.EVENT_MARGIN_CALL_MET]
        s.accounts_restricted = counts[names.EVENT_ACCOUNT_RESTRICTED]
        s.liquidations = counts[names.EVENT_LIQUIDATION_TRIGGERED]
        s.stress_breaches = counts[names.EVENT_STRESS_BREACH]
        s.calls_extended = counts[names.EVENT_MARGIN_CALL_EXTENDED]
        s.calls_waived = counts[names.EVENT_MARGIN_CALL_WAIVED]
        s.desk_actions_rejected = counts[names.EVENT_DESK_ACTION_REJECTED]
        decided = {
            getattr(e.details, "action_id", None): e.event_type
            for e in trail
            if e.event_type in DESK_DECISIONS
        }
        for a in s.desk_actions:
            a["decision"] = decided.get(a["action_id"], "none")

        # DynamoDB state vs the state rebuilt from the audit trail alone
        ddb = boto3.client("dynamodb")
        live = {}
        for page in ddb.get_paginator("scan").paginate(TableName=prov.config.state_table_name):
            for item in page["Items"]:
                if item[names.SK_ITEM]["S"] != names.SK_HEAD:
                    continue
                st = AccountState.model_validate_json(item["state"]["S"])
                live[st.account_id] = comparable(view_of(st))
        rebuilt = {a: comparable(v) for a, v in rebuild_state(trail).items()}
        touched = {a for a, v in rebuilt.items()} | {a for a, v in live.items() if v[1]}
        s.state_matches_audit_rebuild = all(rebuilt.get(a) == live.get(a) for a in touched)

        # The runbook's Athena queries, same text, on DuckDB over the same partitions
        athena = LocalAthena(audit_root / names.AUDIT_PREFIX)
        day = (2026, 2, 16)
        by_type = athena.query(NAMED_QUERIES["events_by_type_for_day"].sql, day)
        liq = athena.query(NAMED_QUERIES["accounts_with_liquidations_in_month"].sql, day[:2])
        first_call = next(
            (e for e in trail if e.event_type == names.EVENT_MARGIN_CALL_ISSUED), None
        )
        s.named_queries = {
            "events_by_type_for_day": {r["event_type"]: r["events"] for r in by_type},
            "accounts_with_liquidations_in_month": len(liq),
        }
        if first_call is not None:
            calls = athena.query(
                NAMED_QUERIES["margin_calls_for_account"].sql, [first_call.account_id]
            )
            trace = athena.query(
                NAMED_QUERIES["trace_by_correlation_id"].sql, [first_call.correlation_id]
            )
            s.named_queries["margin_calls_for_account"] = {
                "account_id": first_call.account_id, "calls": len(calls),
            }  # fmt: skip
            s.named_queries["trace_by_correlation_id"] = {
                "correlation_id": first_call.correlation_id,
                "decisions": [r["event_type"] for r in trace],
            }

        from dashboards.local_metrics import load_metrics_dir

        latencies = [
            p.value
            for p in load_metrics_dir(run_dir / "metrics").points
            if p.name == names.METRIC_E2E_LATENCY and p.namespace == names.METRICS_NAMESPACE
        ]
        s.latency_ms_p50 = _round(percentile(latencies, 50))
        s.latency_ms_p95 = _round(percentile(latencies, 95))
        s.latency_ms_p99 = _round(percentile(latencies, 99))

        try:
            from dashboards.html_render import write_dashboard
            from margin_risk.tools.health import local_report

            page = write_dashboard(run_dir / "dashboard", run_dir / "metrics")
            s.dashboard = str(page)
            report = local_report(run_dir / "metrics")
            s.health = report.verdict
        except ImportError as e:  # observability not installed in this checkout
            s.health = f"unavailable ({e})"

    def _house(self, sim: MarketSimulator) -> None:
        """The session's house entries (published with its opening step) and their holders."""
        for _, r in sim.iter_records():
            if r.topic == names.TOPIC_HOUSE_REQUIREMENTS:
                entry = json.loads(r.value)
                held = sum(1 for a in sim.accounts if a.positions.get(entry["symbol"]))
                self.summary.house.append({**entry, "holders": held})
                self.say(
                    f"house: {entry['symbol']} long_rate {entry['long_rate']}"
                    f" (non_marginable {str(entry['non_marginable']).lower()}) from"
                    f" {entry['as_of']}, {held} books hold it"
                )

    def _history(self, run_dir: Path, bootstrap: str) -> None:
        """The margin history the Spark job wrote: query it, backtest a stricter cushion."""
        from margin_risk.tools.local.athena_local import LocalAthena
        from margin_risk.tools.local.demo_history import history_stats, run_backtest
        from stacks.athena_queries import NAMED_QUERIES

        s = self.summary
        history_root = run_dir / "history"
        audit_root = run_dir / "s3" / names.AUDIT_PREFIX
        stats = history_stats(history_root)
        s.history = {
            "root": str(history_root),
            "written_by": "the Spark margin job (--history-dir)",
            "rows": stats.rows,
            "results": stats.results,
            "files": stats.files,
        }
        if stats.results == 0 or not audit_root.exists():
            s.backtest = {"error": "no history or no audit trail to backtest"}
            return
        policy = {
            "warning_cushion": BACKTEST_WARNING_CUSHION,
            "call_deadline_seconds": self.opts.deadline_seconds,
        }
        s.backtest = run_backtest(history_root, audit_root, policy, run_dir)
        if "error" not in s.backtest:
            from margin_risk.settings import load_house_settings

            cushion = load_house_settings().policy.warning_cushion
            s.backtest["session_warning_cushion"] = float(cushion)

        # The desk's history queries, same text as Athena's, on DuckDB over the archive
        athena = LocalAthena(audit_root, history_root=history_root)
        day = "2026-02-16"
        nearest = athena.query(NAMED_QUERIES["accounts_nearest_call_now"].sql, [day])
        s.named_queries["accounts_nearest_call_now"] = [
            {"account_id": r["account_id"], "cushion": round(r["cushion"], 4)} for r in nearest[:3]
        ]
        called = s.named_queries.get("margin_calls_for_account", {}).get("account_id")
        if called:
            rows = athena.query(NAMED_QUERIES["account_margin_over_day"].sql, [called, day])
            s.named_queries["account_margin_over_day"] = {
                "account_id": called,
                "results": len(rows),
                "lowest_excess": None if not rows else float(min(r["excess"] for r in rows)),
            }


def _restore_env(saved: dict[str, str]) -> None:
    """The demo points boto3 and the handler at its own stand-ins; put the caller's env back."""
    for k in set(os.environ) - set(saved):
        del os.environ[k]
    os.environ.update(saved)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


class _SqsOnFailure:
    """The on-failure destination of the local mapping: the same SQS queue as in AWS."""

    def __init__(self, queue_url: str) -> None:
        import boto3

        self.sqs = boto3.client("sqs")
        self.queue_url = queue_url

    def send(self, records: Sequence[Any], reason: str) -> None:
        for r in records:
            self.sqs.send_message(
                QueueUrl=self.queue_url, MessageBody=json.dumps({"reason": reason, "record": r})
            )


def print_summary(s: Summary, out: TextIO) -> None:
    rows = [
        ("events in", s.events_in),
        ("margin results", s.margin_results),
        ("stress results", s.stress_results),
        ("margin warnings", s.margin_warnings),
        ("margin calls issued", s.margin_calls_issued),
        ("margin calls met", s.margin_calls_met),
        ("accounts restricted", s.accounts_restricted),
        ("liquidations", s.liquidations),
        ("stress breaches", s.stress_breaches),
        ("desk: extended / waived / rejected",
         f"{s.calls_extended} / {s.calls_waived} / {s.desk_actions_rejected}"),
        ("rejected records", f"{s.rejected_records} (spark {s.rejected_by_spark},"
                             f" enforcement {s.rejected_by_enforcement})"),
        ("duplicate fills sent", s.duplicate_fills_sent),
        ("audit objects / events", f"{s.audit_objects} / {s.audit_events}"),
        ("end-to-end latency ms p50/p95/p99",
         f"{s.latency_ms_p50} / {s.latency_ms_p95} / {s.latency_ms_p99}"),
        ("state == rebuild from audit", s.state_matches_audit_rebuild),
        ("pipeline health", s.health),
        ("dashboard", s.dashboard),
        ("wall time", f"{s.wall_seconds}s"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    out.write("\n== summary\n")
    for k, v in rows:
        out.write(f"  {k:<{width}}  {v}\n")
    q = s.named_queries
    if q:
        out.write("== named queries (Athena SQL on DuckDB over the audit and history partitions)\n")
        for k, v in q.items():
            out.write(f"  {k}: {json.dumps(v)}\n")
    if s.house:
        out.write("== house requirements (house.requirements.v1, applied by the Spark job)\n")
        for h in s.house:
            out.write(
                f"  {h['symbol']}: long_rate {h['long_rate']}, short_rate {h['short_rate']},"
                f" non_marginable {str(h['non_marginable']).lower()} from {h['as_of']}"
                f" ({h['holders']} books hold it)\n"
            )
    if s.desk_actions:
        out.write(f"== desk actions (operator {s.operator}, via desk.actions.v1)\n")
        for a in s.desk_actions:
            until = f" until {a['until']}" if a.get("until") else ""
            out.write(
                f"  {a['timestamp']} {a['action']} {a['account_id']}{until}"
                f" ({a['reason']}): {a.get('decision')}\n"
            )
    print_backtest(s, out)
    out.flush()


def print_backtest(s: Summary, out: TextIO) -> None:
    """The backtest beside the decisions actually taken, and where its history came from."""
    h, b = s.history, s.backtest
    if h:
        out.write(
            f"== margin history: {h['results']} results in {h['files']} Parquet files under"
            f" {h['root']}\n  (written by {h['written_by']})\n"
        )
    if not b:
        return
    if "error" in b:
        out.write(f"== backtest: not run ({b['error']})\n")
        return
    cushion, session = b["policy"]["warning_cushion"], b.get("session_warning_cushion")
    out.write(
        f"== backtest: warning cushion {cushion:g} x gross (the session ran with {session:g})"
        " over the session's own history, the desk's actions applied again\n"
    )
    types = sorted(set(b["decisions"]) | set(b["actual_decisions"]))
    width = max(len(t) for t in types) if types else 0
    out.write(f"  {'decision':<{width}}  {'taken':>6}  {'backtest':>8}\n")
    for t in types:
        taken, would = b["actual_decisions"].get(t, 0), b["decisions"].get(t, 0)
        out.write(f"  {t:<{width}}  {taken:>6}  {would:>8}\n")
    d = b["diff"]
    out.write(
        f"  per account: {d['added']} added, {d['removed']} removed, {d['earlier']} earlier,"
        f" {d['later']} later, {d['same']} the same; {d['accounts_differing']} accounts differ\n"
    )


def run_demo(args: argparse.Namespace) -> int:
    opts = DemoOptions(
        accounts=args.accounts, symbols=args.symbols, seed=args.seed,
        summary_json=Path(args.summary_json) if args.summary_json else None,
    )  # fmt: skip
    if opts.accounts < 1 or opts.symbols < 2:
        print("error: --accounts must be >= 1 and --symbols >= 2", file=sys.stderr)
        return 1
    if opts.summary_json is not None and (problem := unwritable(opts.summary_json)):
        # Checked before the run: a two-minute session must not end in a path error.
        print(f"error: --summary-json {opts.summary_json}: {problem}", file=sys.stderr)
        return 1
    summary = Demo(opts, sys.stdout).run()
    print_summary(summary, sys.stdout)
    if opts.summary_json is not None:
        try:
            write_summary_json(summary, opts.summary_json)
        except OSError as e:
            print(f"error: --summary-json {opts.summary_json}: {e.strerror or e}", file=sys.stderr)
            return 1
        print(f"summary written to {opts.summary_json}")
    return 0


def write_summary_json(summary: Summary, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(summary), indent=2), encoding="utf-8")
