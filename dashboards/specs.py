"""Dashboards and alarms as data: metric specs, alarm specs and dashboard layouts.

Nothing here imports the CDK. `dashboards.cdk_render` turns these specs into CloudWatch dashboards
and alarms, `dashboards.html_render` draws the same widgets from a local run's EMF files, and
`margin_risk.tools.health` reuses the KPI thresholds, so a threshold lives in one place.

Dimension sets queried (Powertools adds ``service`` as a default dimension to every metric):

* enforcement Lambda metrics: ``{service: "enforcement"}``;
  ``RecordsRejected``: ``{service, reason}`` (queried per reason with SEARCH);
* Spark job metrics: ``{service: "margin-job"}``; ``RecordsRejected``: ``{service, reason}``.

Dimension values written as ``{field}`` are placeholders for a field of
`dashboards.cdk_render.ObservedResources` (the deployed resource names), see `resolve_dimensions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from margin_risk import names

Level = Literal["warning", "critical"]
MissingData = Literal["notBreaching", "breaching", "ignore", "missing"]
LocalFn = Callable[[Mapping[str, float]], float]

# --- KPI thresholds (the seed's KPIs; issue #6) ------------------------------------------------
LAMBDA_ERRORS_WARNING = 0.0  # any error in 5 minutes
LAMBDA_ERRORS_CRITICAL = 5.0  # more than 5 errors in 5 minutes
OFFSET_LAG_WARNING = 100.0  # messages
OFFSET_LAG_CRITICAL = 1000.0  # messages
E2E_LATENCY_WARNING_MS = 10_000.0  # 10 s
E2E_LATENCY_CRITICAL_MS = 30_000.0  # 30 s
ERROR_RATE_WARNING_PCT = 0.5
ERROR_RATE_CRITICAL_PCT = 1.0
STALL_MINUTES = 10  # N: a stage producing nothing for N minutes while its inputs arrive
DDB_THROTTLES_WARNING = 0.0
DDB_THROTTLES_CRITICAL = 50.0
ON_FAILURE_CRITICAL = 0.0  # any record in the on-failure destination
EMR_FAILED_JOBS_CRITICAL = 0.0  # any failed job run
LAMBDA_DURATION_P99_CRITICAL_MS = 5_000.0  # the Lambda duration KPI: p99 within 5 s
BACKLOG_MINUTES = 15  # sustained: three 5-minute periods in a row
BACKLOG_WARNING_PCT = 10.0  # of the period's Spark results left unprocessed by enforcement
BACKLOG_CRITICAL_PCT = 25.0
# Brokers the input-stall alarm sums over (metric math takes at most 10 metrics per alarm);
# the observability stack refuses a cluster with more.
MAX_MSK_BROKERS = 6

ENF = {names.DIM_SERVICE: names.SERVICE_ENFORCEMENT}
SPARK = {names.DIM_SERVICE: names.SERVICE_SPARK}
NS = names.METRICS_NAMESPACE


@dataclass(frozen=True)
class Metric:
    """One CloudWatch metric query: namespace, name, exact dimension set, statistic and period.

    ``group_by`` names one more dimension whose every value is drawn as its own line (a SEARCH
    expression in CloudWatch, a group-by locally); such a metric can be graphed, not alarmed on.
    """

    namespace: str
    name: str
    dimensions: Mapping[str, str] = field(default_factory=dict)
    statistic: str = "Sum"
    period_s: int = 60
    label: str = ""
    group_by: str | None = None

    @property
    def title(self) -> str:
        return self.label or f"{self.name} ({self.statistic})"


@dataclass(frozen=True)
class Expr:
    """CloudWatch metric math over named metrics, with the same formula in Python for local runs.

    ``local`` receives each metric's value per period (0 when the period has no data, as
    ``FILL(m, 0)`` does) and returns the expression's value.
    """

    id: str
    expression: str
    using: Mapping[str, Metric]
    label: str
    period_s: int
    local: LocalFn

    @property
    def title(self) -> str:
        return self.label


Series = Metric | Expr


@dataclass(frozen=True)
class AlarmSpec:
    """An alarm with up to two levels; each level becomes one CloudWatch alarm (``> threshold``)."""

    id: str
    title: str
    series: Series
    warning: float | None
    critical: float | None
    evaluation_periods: int = 1
    datapoints_to_alarm: int = 1
    missing: MissingData = "notBreaching"
    meaning: str = ""
    action: str = ""

    def levels(self) -> list[tuple[Level, float]]:
        out: list[tuple[Level, float]] = []
        if self.warning is not None:
            out.append(("warning", self.warning))
        if self.critical is not None:
            out.append(("critical", self.critical))
        return out

    def alarm_name(self, level: Level, prefix: str = names.PROJECT) -> str:
        return f"{prefix}-{self.id}-{level}"


@dataclass(frozen=True)
class Widget:
    """A graph (``line``/``stacked``) or a single number, annotated with an alarm's levels."""

    title: str
    series: tuple[Series, ...]
    kind: Literal["line", "stacked", "number"] = "line"
    alarm: str | None = None
    unit: str = ""
    width: int = 8
    height: int = 6


@dataclass(frozen=True)
class Section:
    title: str
    widgets: tuple[Widget, ...]


@dataclass(frozen=True)
class DashboardSpec:
    name: str
    title: str
    sections: tuple[Section, ...]

    def widgets(self) -> list[Widget]:
        return [w for s in self.sections for w in s.widgets]


# --- Metric helpers ----------------------------------------------------------------------------
def enf(name: str, stat: str = "Sum", period: int = 60, label: str = "") -> Metric:
    return Metric(NS, name, ENF, stat, period, label)


def spark(name: str, stat: str = "Sum", period: int = 60, label: str = "") -> Metric:
    return Metric(NS, name, SPARK, stat, period, label)


def lam(name: str, stat: str = "Sum", period: int = 60, label: str = "") -> Metric:
    return Metric("AWS/Lambda", name, {"FunctionName": "{function_name}"}, stat, period, label)


def ddb(name: str, table_field: str, stat: str = "Sum", period: int = 300) -> Metric:
    return Metric("AWS/DynamoDB", name, {"TableName": "{" + table_field + "}"}, stat, period)


_EMR_APP = {"ApplicationId": "{emr_application_id}", "ApplicationName": names.EMR_APPLICATION}


def emr(name: str, stat: str = "Sum", period: int = 300, label: str = "") -> Metric:
    # EMR 7.10+ publishes job-state metrics with ApplicationId and ApplicationName.
    return Metric("AWS/EMRServerless", name, _EMR_APP, stat, period, label)


def emr_workers(name: str, worker_type: str, label: str) -> Metric:
    """Capacity metrics carry the worker type and capacity allocation type as well (the
    application has no pre-initialized capacity, so all of it is on demand)."""
    dims = {**_EMR_APP, "WorkerType": worker_type, "CapacityAllocationType": "OnDemandCapacity"}
    return Metric("AWS/EMRServerless", name, dims, "Average", 60, label)


def msk_broker(broker_id: int, period: int) -> Metric:
    """Messages into one broker, every topic: published from the DEFAULT monitoring level on (a
    per-topic count needs PER_TOPIC_PER_BROKER, which dev does not pay for)."""
    dims = {"Cluster Name": "{msk_cluster_name}", "Broker ID": str(broker_id)}
    return Metric("AWS/Kafka", "MessagesInPerSec", dims, "Sum", period, f"broker {broker_id} in")


def _f(v: Mapping[str, float], k: str) -> float:
    return v.get(k, 0.0)


def resolve_dimensions(m: Metric, resources: Mapping[str, str]) -> dict[str, str]:
    """Fill ``{field}`` placeholders in dimension values from the deployed resource names."""
    return {k: v.format_map(resources) for k, v in m.dimensions.items()}


# --- Series shared by alarms and widgets -------------------------------------------------------
_STALL_S = STALL_MINUTES * 60

ERROR_RATE = Expr(
    id="errorRate",
    expression="IF((FILL(ok,0)+FILL(failed,0)) > 0,"
    " 100*FILL(failed,0)/(FILL(ok,0)+FILL(failed,0)), 0)",
    using={
        "ok": enf(names.METRIC_RECORDS_PROCESSED, period=300),
        "failed": enf(names.METRIC_RECORDS_FAILED, period=300),
    },
    label="Enforcement error rate (%)",
    period_s=300,
    local=lambda v: (
        100.0 * _f(v, "failed") / (_f(v, "ok") + _f(v, "failed"))
        if _f(v, "ok") + _f(v, "failed") > 0
        else 0.0
    ),
)

MARGIN_RESULTS_STALLED = Expr(
    id="marginStall",
    expression="IF(FILL(inputs,0) > 0 AND FILL(results,0) == 0, 1, 0)",
    using={
        "inputs": spark(names.METRIC_INPUT_RECORDS, period=_STALL_S),
        "results": spark(names.METRIC_MARGIN_RESULTS, period=_STALL_S),
    },
    label=f"Spark: inputs but no margin results for {STALL_MINUTES} min",
    period_s=_STALL_S,
    local=lambda v: 1.0 if _f(v, "inputs") > 0 and _f(v, "results") == 0 else 0.0,
)

_BROKERS = {f"b{i}": msk_broker(i, _STALL_S) for i in range(1, MAX_MSK_BROKERS + 1)}
SPARK_INPUT_STALLED = Expr(
    id="sparkStall",
    expression="IF(("
    + "+".join(f"FILL({k},0)" for k in _BROKERS)
    + ") > 0 AND FILL(consumed,0) == 0, 1, 0)",
    using={**_BROKERS, "consumed": spark(names.METRIC_INPUT_RECORDS, period=_STALL_S)},
    label=f"Messages reach the brokers but Spark consumed nothing for {STALL_MINUTES} min",
    period_s=_STALL_S,
    local=lambda v: 1.0 if sum(_f(v, k) for k in _BROKERS) > 0 and _f(v, "consumed") == 0 else 0.0,
)

# Enforcement falling behind: the share of the period's Spark results (its input) that the
# function did not process, sustained over BACKLOG_MINUTES (not only a full stall).
ENFORCEMENT_BACKLOG = Expr(
    id="enforceBacklog",
    expression="IF((FILL(margin,0)+FILL(stress,0)) > 0,"
    " 100*(FILL(margin,0)+FILL(stress,0)-FILL(done,0))/(FILL(margin,0)+FILL(stress,0)), 0)",
    using={
        "margin": spark(names.METRIC_MARGIN_RESULTS, period=300),
        "stress": spark(names.METRIC_STRESS_RESULTS, period=300),
        "done": enf(names.METRIC_RECORDS_PROCESSED, period=300),
    },
    label="Spark results not yet enforced (% of the period's results)",
    period_s=300,
    local=lambda v: (
        100.0
        * (_f(v, "margin") + _f(v, "stress") - _f(v, "done"))
        / (_f(v, "margin") + _f(v, "stress"))
        if _f(v, "margin") + _f(v, "stress") > 0
        else 0.0
    ),
)

_DECISION_METRICS = {
    f"d{i}": enf(m, period=_STALL_S) for i, m in enumerate(sorted(names.DECISION_METRIC.values()))
}
AUDIT_STALLED = Expr(
    id="auditStall",
    expression="IF(("
    + "+".join(f"FILL({k},0)" for k in _DECISION_METRICS)
    + ") > 0 AND FILL(audit,0) == 0, 1, 0)",
    using={**_DECISION_METRICS, "audit": enf(names.METRIC_AUDIT_OBJECTS, period=_STALL_S)},
    label=f"Decisions taken but no audit object written for {STALL_MINUTES} min",
    period_s=_STALL_S,
    local=lambda v: (
        1.0 if sum(_f(v, k) for k in _DECISION_METRICS) > 0 and _f(v, "audit") == 0 else 0.0
    ),
)


def _ddb_throttles(table_field: str, key: str, label: str) -> Expr:
    r, w = f"{key}Read", f"{key}Write"
    return Expr(
        id=f"{key}Throttles",
        expression=f"FILL({r},0)+FILL({w},0)",
        using={
            r: ddb("ReadThrottleEvents", table_field),
            w: ddb("WriteThrottleEvents", table_field),
        },
        label=label,
        period_s=300,
        local=lambda v: _f(v, r) + _f(v, w),
    )


STATE_THROTTLES = _ddb_throttles("state_table_name", "state", "State table throttled requests")
IDEMPOTENCY_THROTTLES = _ddb_throttles("idempotency_table_name", "idem", "Idempotency throttles")

E2E_P99 = enf(names.METRIC_E2E_LATENCY, "p99", 60, "End-to-end latency p99 (ms)")
LAMBDA_DURATION_P99 = lam("Duration", "p99", 60, "Lambda duration p99 (ms)")
OFFSET_LAG = lam("OffsetLag", "Maximum", 60, "Kafka OffsetLag (max)")
ON_FAILURE_DEPTH = Metric(
    "AWS/SQS",
    "ApproximateNumberOfMessagesVisible",
    {"QueueName": "{on_failure_queue_name}"},
    "Maximum",
    60,
    "On-failure queue depth",
)

# --- Alarms ------------------------------------------------------------------------------------
ALARMS: tuple[AlarmSpec, ...] = (
    AlarmSpec(
        "lambda-errors",
        "Enforcement Lambda errors (5 min)",
        lam("Errors", "Sum", 300, "Lambda errors"),
        warning=LAMBDA_ERRORS_WARNING,
        critical=LAMBDA_ERRORS_CRITICAL,
        meaning="The enforcement function raised: whole batches are being retried.",
        action="Logs Insights 'errors-by-component'; check the last deploy and the state table.",
    ),
    AlarmSpec(
        "error-rate",
        "Enforcement record error rate (%)",
        ERROR_RATE,
        warning=ERROR_RATE_WARNING_PCT,
        critical=ERROR_RATE_CRITICAL_PCT,
        meaning="More than the KPI share of records fail and go back as batch item failures.",
        action="Find the failing records' reason in the logs; they end in the on-failure queue.",
    ),
    AlarmSpec(
        "kafka-offset-lag",
        "Kafka OffsetLag of the enforcement consumer",
        OFFSET_LAG,
        warning=OFFSET_LAG_WARNING,
        critical=OFFSET_LAG_CRITICAL,
        evaluation_periods=3,
        datapoints_to_alarm=3,
        meaning="Margin results wait in Kafka: calls reach accounts late.",
        action="Check Lambda throttles, duration and errors; raise concurrency if saturated.",
    ),
    AlarmSpec(
        "e2e-latency",
        "End-to-end latency p99 (fill to decision)",
        E2E_P99,
        warning=E2E_LATENCY_WARNING_MS,
        critical=E2E_LATENCY_CRITICAL_MS,
        evaluation_periods=3,
        datapoints_to_alarm=3,
        meaning="Decisions are taken more than 10 s (30 s) after the triggering input.",
        action="Compare Spark micro-batch duration and OffsetLag to find the slow stage.",
    ),
    AlarmSpec(
        "lambda-duration",
        "Enforcement Lambda duration p99 above the 5 s KPI",
        LAMBDA_DURATION_P99,
        warning=None,
        critical=LAMBDA_DURATION_P99_CRITICAL_MS,
        evaluation_periods=5,
        datapoints_to_alarm=5,
        meaning="A batch takes more than 5 s at the 99th percentile for 5 minutes: decisions "
        "wait behind slow batches and OffsetLag will follow.",
        action="Compare DynamoDB latency and throttles, S3 and SNS errors; check batch size.",
    ),
    AlarmSpec(
        "enforcement-falling-behind",
        f"Spark results arrive faster than enforcement processes them ({BACKLOG_MINUTES} min)",
        ENFORCEMENT_BACKLOG,
        warning=BACKLOG_WARNING_PCT,
        critical=BACKLOG_CRITICAL_PCT,
        evaluation_periods=BACKLOG_MINUTES // 5,
        datapoints_to_alarm=BACKLOG_MINUTES // 5,
        meaning="The input rate of the enforcement stage stays above its processing rate: the "
        "backlog grows even though nothing has stopped.",
        action="Check Lambda concurrency (reserved, pollers), duration and throttles.",
    ),
    AlarmSpec(
        "emr-job-failed",
        "EMR Serverless job run failed",
        emr("FailedJobs", "Sum", 300, "Failed jobs"),
        warning=None,
        critical=EMR_FAILED_JOBS_CRITICAL,
        meaning="The Spark streaming job stopped: no margin results are computed.",
        action="Read the job run's driver log; restart it (it resumes from its checkpoint).",
    ),
    AlarmSpec(
        "margin-results-stalled",
        f"No margin results for {STALL_MINUTES} min while inputs arrive",
        MARGIN_RESULTS_STALLED,
        warning=None,
        critical=0.0,
        meaning="Spark consumes inputs but produces no margin results.",
        action="Check the rejected-records reasons and the job's micro-batch log.",
    ),
    AlarmSpec(
        "spark-input-stalled",
        f"Messages reach Kafka but Spark consumed nothing for {STALL_MINUTES} min",
        SPARK_INPUT_STALLED,
        warning=None,
        critical=0.0,
        meaning="Producers write to the cluster (with Spark stalled nothing else does) but the "
        "Spark job reads nothing.",
        action="Check the job run state and its Kafka (IAM) connectivity.",
    ),
    AlarmSpec(
        "audit-stalled",
        f"Decisions without audit objects for {STALL_MINUTES} min",
        AUDIT_STALLED,
        warning=None,
        critical=0.0,
        meaning="Enforcement decides but writes no audit objects: the record-keeping duty fails.",
        action="Check S3 permissions, Object Lock settings and the Lambda's S3 errors.",
    ),
    AlarmSpec(
        "state-table-throttles",
        "DynamoDB throttling on the account-state table (5 min)",
        STATE_THROTTLES,
        warning=DDB_THROTTLES_WARNING,
        critical=DDB_THROTTLES_CRITICAL,
        meaning="State reads/writes are throttled: batches slow down and retry.",
        action="Look for a hot account partition; check on-demand limits or provisioned capacity.",
    ),
    AlarmSpec(
        "idempotency-table-throttles",
        "DynamoDB throttling on the idempotency table (5 min)",
        IDEMPOTENCY_THROTTLES,
        warning=DDB_THROTTLES_WARNING,
        critical=DDB_THROTTLES_CRITICAL,
        meaning="Idempotency records cannot be written: batches fail and retry.",
        action="Check the table's capacity mode and the TTL backlog.",
    ),
    AlarmSpec(
        "on-failure-records",
        "Records in the on-failure destination",
        ON_FAILURE_DEPTH,
        warning=None,
        critical=ON_FAILURE_CRITICAL,
        meaning="Kafka records exhausted their retries: their decisions were never taken.",
        action="Inspect the messages, fix the cause, then replay the offsets they point to.",
    ),
)
ALARMS_BY_ID = {a.id: a for a in ALARMS}
COMPOSITE_ALARM_ID = "pipeline-unhealthy"


def composite_alarm_name(prefix: str = names.PROJECT) -> str:
    return f"{prefix}-{COMPOSITE_ALARM_ID}"


# --- Dashboards --------------------------------------------------------------------------------
OPERATIONS = DashboardSpec(
    names.OPS_DASHBOARD,
    "Margin risk monitor: operations",
    (
        Section(
            "Pipeline flow: inputs -> Spark margin results -> enforcement decisions -> audit",
            (
                Widget(
                    "Stage throughput (records per period)",
                    (
                        spark(names.METRIC_INPUT_RECORDS, label="1 inputs (Spark)"),
                        spark(names.METRIC_MARGIN_RESULTS, label="2 margin results"),
                        spark(names.METRIC_STRESS_RESULTS, label="2 stress results"),
                        enf(names.METRIC_RECORDS_PROCESSED, label="3 records enforced"),
                        enf(names.METRIC_AUDIT_OBJECTS, label="4 audit objects"),
                    ),
                    width=12,
                ),
                Widget(
                    "Errors and rejects",
                    (
                        enf(names.METRIC_RECORDS_FAILED, label="enforcement failed"),
                        enf(names.METRIC_STALE_EVENTS, label="stale events"),
                        enf(names.METRIC_DUPLICATE_EVENTS, label="duplicate events"),
                        enf(names.METRIC_STATE_CONFLICTS, label="state write conflicts"),
                    ),
                    width=12,
                ),
                Widget("Enforcement error rate", (ERROR_RATE,), alarm="error-rate", unit="%"),
                Widget(
                    "Freshness: end-to-end latency",
                    (
                        enf(names.METRIC_E2E_LATENCY, "p50", label="p50"),
                        E2E_P99,
                    ),
                    alarm="e2e-latency",
                    unit="ms",
                ),
                Widget("Kafka OffsetLag", (OFFSET_LAG,), alarm="kafka-offset-lag"),
                Widget(
                    "Enforcement backlog (% of Spark results not processed)",
                    (ENFORCEMENT_BACKLOG,),
                    alarm="enforcement-falling-behind",
                    unit="%",
                ),
                Widget(
                    "Stage stalls (1 = stalled)",
                    (SPARK_INPUT_STALLED, MARGIN_RESULTS_STALLED, AUDIT_STALLED),
                    alarm="margin-results-stalled",
                    width=24,
                    height=5,
                ),
            ),
        ),
        Section(
            "Enforcement Lambda",
            (
                Widget(
                    "Invocations and errors",
                    (lam("Invocations", label="invocations"), lam("Errors", label="errors")),
                    alarm=None,
                    width=6,
                ),
                Widget(
                    "Duration p50 / p99",
                    (lam("Duration", "p50", label="p50"), LAMBDA_DURATION_P99),
                    alarm="lambda-duration",
                    unit="ms",
                    width=6,
                ),
                Widget(
                    "Throttles and concurrency",
                    (
                        lam("Throttles", label="throttles"),
                        lam("ConcurrentExecutions", "Maximum", label="concurrency"),
                    ),
                    width=6,
                ),
                Widget(
                    "Batch size",
                    (
                        enf(names.METRIC_BATCH_SIZE, "Average", label="avg"),
                        enf(names.METRIC_BATCH_SIZE, "Maximum", label="max"),
                    ),
                    width=6,
                ),
            ),
        ),
        Section(
            "Spark on EMR Serverless",
            (
                Widget(
                    "Micro-batch duration",
                    (
                        spark(names.METRIC_SPARK_BATCH_DURATION, "Average", label="avg"),
                        spark(names.METRIC_SPARK_BATCH_DURATION, "Maximum", label="max"),
                    ),
                    unit="ms",
                ),
                Widget(
                    "Job runs",
                    (
                        emr("RunningJobs", "Maximum", 60, "running"),
                        emr("FailedJobs", "Sum", 60, "failed"),
                    ),
                    alarm="emr-job-failed",
                ),
                Widget(
                    "Resources allocated",
                    (
                        emr_workers("CPUAllocated", "SPARK_DRIVER", "driver vCPU"),
                        emr_workers("CPUAllocated", "SPARK_EXECUTORS", "executors vCPU"),
                        emr_workers("MemoryAllocated", "SPARK_DRIVER", "driver memory GB"),
                        emr_workers("MemoryAllocated", "SPARK_EXECUTORS", "executors memory GB"),
                    ),
                ),
            ),
        ),
        Section(
            "State, audit and failures",
            (
                Widget(
                    "DynamoDB throttles",
                    (STATE_THROTTLES, IDEMPOTENCY_THROTTLES),
                    alarm="state-table-throttles",
                    width=6,
                ),
                Widget(
                    "DynamoDB latency by operation",
                    (
                        Metric(
                            "AWS/DynamoDB",
                            "SuccessfulRequestLatency",
                            {"TableName": "{state_table_name}"},
                            "Average",
                            60,
                            "state table",
                            group_by="Operation",
                        ),
                    ),
                    unit="ms",
                    width=6,
                ),
                Widget(
                    "On-failure destination",
                    (ON_FAILURE_DEPTH,),
                    alarm="on-failure-records",
                    width=6,
                ),
                Widget(
                    "Audit objects written",
                    (enf(names.METRIC_AUDIT_OBJECTS, label="audit objects"),),
                    kind="number",
                    width=6,
                ),
            ),
        ),
    ),
)

RISK = DashboardSpec(
    names.RISK_DASHBOARD,
    "Margin risk monitor: risk",
    (
        Section(
            "Enforcement decisions",
            (
                Widget(
                    "Margin calls issued and met",
                    (
                        enf(names.METRIC_MARGIN_CALLS_ISSUED, label="issued"),
                        enf(names.METRIC_MARGIN_CALLS_MET, label="met"),
                    ),
                ),
                Widget(
                    "Liquidations and restrictions",
                    (
                        enf(names.METRIC_LIQUIDATIONS, label="liquidations"),
                        enf(names.METRIC_ACCOUNTS_RESTRICTED, label="restricted"),
                    ),
                ),
                Widget(
                    "Warnings and stress breaches",
                    (
                        enf(names.METRIC_MARGIN_WARNINGS, label="warnings"),
                        enf(names.METRIC_STRESS_BREACHES, label="stress breaches"),
                    ),
                ),
                Widget(
                    "Total deficiency of new calls",
                    (enf(names.METRIC_TOTAL_DEFICIENCY, label="deficiency"),),
                    kind="stacked",
                    unit="$",
                    width=12,
                ),
                Widget(
                    "Calls issued (whole range)",
                    (enf(names.METRIC_MARGIN_CALLS_ISSUED, label="calls issued"),),
                    kind="number",
                    width=6,
                ),
                Widget(
                    "Liquidations (whole range)",
                    (enf(names.METRIC_LIQUIDATIONS, label="liquidations"),),
                    kind="number",
                    width=6,
                ),
            ),
        ),
        Section(
            "Data quality and latency",
            (
                Widget(
                    "Rejected records by reason",
                    (
                        Metric(
                            NS,
                            names.METRIC_RECORDS_REJECTED,
                            SPARK,
                            "Sum",
                            60,
                            "spark",
                            group_by=names.DIM_REASON,
                        ),
                        Metric(
                            NS,
                            names.METRIC_RECORDS_REJECTED,
                            ENF,
                            "Sum",
                            60,
                            "enforcement",
                            group_by=names.DIM_REASON,
                        ),
                    ),
                    kind="stacked",
                    width=12,
                ),
                Widget(
                    "End-to-end latency p50 / p95 / p99",
                    (
                        enf(names.METRIC_E2E_LATENCY, "p50", label="p50"),
                        enf(names.METRIC_E2E_LATENCY, "p95", label="p95"),
                        E2E_P99,
                    ),
                    alarm="e2e-latency",
                    unit="ms",
                    width=12,
                ),
            ),
        ),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (OPERATIONS, RISK)


def metrics_of(series: Series) -> list[Metric]:
    """The plain metrics a series reads (an expression's inputs, or the metric itself)."""
    return list(series.using.values()) if isinstance(series, Expr) else [series]
