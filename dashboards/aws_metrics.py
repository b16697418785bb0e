"""The metric shapes AWS (and our own code) publish: namespace, metric name, exact dimension set,
and for MSK the monitoring level from which on it exists, each cited to where it is documented.

Why a table: CloudWatch returns no data, and raises no error, for a query whose dimension set
differs from a published one by a single name, so an alarm can be silently unable to fire. Every
metric a dashboard widget or an alarm reads must match one row here at the environment's MSK
monitoring level (`tests/observability/test_metric_shapes.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from margin_risk import names

MSK_LEVELS = ("DEFAULT", "PER_BROKER", "PER_TOPIC_PER_BROKER", "PER_TOPIC_PER_PARTITION")

MSK_DOC = "https://docs.aws.amazon.com/msk/latest/developerguide/metrics-details.html"
LAMBDA_DOC = "https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html"
LAMBDA_MSK_DOC = "https://docs.aws.amazon.com/lambda/latest/dg/with-msk.html#services-msk-metrics"
DDB_DOC = "https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/metrics-dimensions.html"
SQS_DOC = "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html"
EMR_DOC = "https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/app-job-metrics.html"
EMF_ENFORCEMENT = (
    "margin_risk/adapters/powertools_ports.py (Powertools EMF, default dimension service)"
)
EMF_SPARK = "emr_jobs/metrics.py (EMF lines in the driver log, dimension service)"


@dataclass(frozen=True)
class Published:
    namespace: str
    metric: str
    dimensions: frozenset[str]
    source: str
    # AWS/Kafka only: the lowest monitoring level that publishes this shape.
    msk_level: str | None = None


def _rows(
    namespace: str,
    metrics: tuple[str, ...],
    dims: tuple[str, ...],
    source: str,
    level: str | None = None,
) -> list[Published]:
    return [Published(namespace, m, frozenset(dims), source, level) for m in metrics]


_ENFORCEMENT_METRICS = (
    *names.DECISION_METRIC.values(),
    names.METRIC_STALE_EVENTS,
    names.METRIC_DUPLICATE_EVENTS,
    names.METRIC_E2E_LATENCY,
    names.METRIC_BATCH_SIZE,
    names.METRIC_RECORDS_PROCESSED,
    names.METRIC_RECORDS_FAILED,
    names.METRIC_AUDIT_OBJECTS,
    names.METRIC_TOTAL_DEFICIENCY,
    names.METRIC_STATE_CONFLICTS,
)
_SPARK_METRICS = (
    names.METRIC_INPUT_RECORDS,
    names.METRIC_MARGIN_RESULTS,
    names.METRIC_STRESS_RESULTS,
    names.METRIC_SPARK_BATCH_DURATION,
)
_EMR_WORKER = ("ApplicationId", "ApplicationName", "WorkerType", "CapacityAllocationType")

PUBLISHED: tuple[Published, ...] = tuple(
    [
        # --- Our EMF namespace: what the code emits (names.DIM_SERVICE on everything) ---
        *_rows(
            names.METRICS_NAMESPACE, _ENFORCEMENT_METRICS, (names.DIM_SERVICE,), EMF_ENFORCEMENT
        ),
        *_rows(names.METRICS_NAMESPACE, _SPARK_METRICS, (names.DIM_SERVICE,), EMF_SPARK),
        *_rows(
            names.METRICS_NAMESPACE,
            (names.METRIC_RECORDS_REJECTED,),
            (names.DIM_SERVICE, names.DIM_REASON),
            f"{EMF_ENFORCEMENT}; {EMF_SPARK}",
        ),
        # --- AWS/Lambda: per-function metrics (FunctionName; Resource and ExecutedVersion are
        # further dimension sets of the same metrics) ---
        *_rows(
            "AWS/Lambda",
            ("Invocations", "Errors", "Throttles", "Duration", "ConcurrentExecutions"),
            ("FunctionName",),
            LAMBDA_DOC,
        ),
        # OffsetLag: emitted for Kafka event sources while the function processes records.
        *_rows("AWS/Lambda", ("OffsetLag",), ("FunctionName",), f"{LAMBDA_DOC}; {LAMBDA_MSK_DOC}"),
        # --- AWS/DynamoDB ---
        *_rows(
            "AWS/DynamoDB",
            (
                "ReadThrottleEvents",
                "WriteThrottleEvents",
                "ConsumedReadCapacityUnits",
                "ConsumedWriteCapacityUnits",
            ),
            ("TableName",),
            DDB_DOC,
        ),
        *_rows("AWS/DynamoDB", ("SuccessfulRequestLatency",), ("TableName", "Operation"), DDB_DOC),
        # --- AWS/SQS ---
        *_rows(
            "AWS/SQS",
            ("ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"),
            ("QueueName",),
            SQS_DOC,
        ),
        # --- AWS/EMRServerless (release 7.10 and later: ApplicationName beside ApplicationId) ---
        *_rows(
            "AWS/EMRServerless",
            (
                "SubmittedJobs",
                "PendingJobs",
                "ScheduledJobs",
                "RunningJobs",
                "SuccessJobs",
                "FailedJobs",
                "CancellingJobs",
                "CancelledJobs",
                "MaxCPUAllowed",
                "MaxMemoryAllowed",
            ),
            ("ApplicationId", "ApplicationName"),
            EMR_DOC,
        ),
        *_rows(
            "AWS/EMRServerless",
            ("CPUAllocated", "MemoryAllocated", "RunningWorkerCount", "IdleWorkerCount"),
            _EMR_WORKER,
            EMR_DOC,
        ),
        # --- AWS/Kafka, provisioned (standard brokers), by monitoring level ---
        *_rows(
            "AWS/Kafka",
            ("MessagesInPerSec", "CpuUser", "KafkaDataLogsDiskUsed", "UnderReplicatedPartitions"),
            ("Cluster Name", "Broker ID"),
            MSK_DOC,
            "DEFAULT",
        ),
        *_rows(
            "AWS/Kafka",
            ("BytesInPerSec", "BytesOutPerSec"),
            ("Cluster Name", "Broker ID", "Topic"),
            MSK_DOC,
            "DEFAULT",
        ),
        *_rows(
            "AWS/Kafka",
            ("MaxOffsetLag", "SumOffsetLag", "EstimatedMaxTimeLag"),
            ("Cluster Name", "Consumer Group", "Topic"),
            MSK_DOC,
            "DEFAULT",
        ),
        *_rows(
            "AWS/Kafka",
            ("NetworkProcessorAvgIdlePercent", "RequestHandlerAvgIdlePercent"),
            ("Cluster Name", "Broker ID"),
            MSK_DOC,
            "PER_BROKER",
        ),
        *_rows(
            "AWS/Kafka",
            (
                "MessagesInPerSec",
                "FetchMessageConversionsPerSec",
                "ProduceMessageConversionsPerSec",
            ),
            ("Cluster Name", "Broker ID", "Topic"),
            MSK_DOC,
            "PER_TOPIC_PER_BROKER",
        ),
        *_rows(
            "AWS/Kafka",
            ("OffsetLag", "EstimatedTimeLag"),
            ("Cluster Name", "Consumer Group", "Topic", "Partition"),
            MSK_DOC,
            "PER_TOPIC_PER_PARTITION",
        ),
    ]
)


def at_level(level: str, minimum: str | None) -> bool:
    return minimum is None or MSK_LEVELS.index(level) >= MSK_LEVELS.index(minimum)


def published(
    namespace: str, metric: str, dimensions: frozenset[str], msk_level: str
) -> Published | None:
    """The documented row for exactly this shape at this monitoring level, if there is one."""
    if msk_level not in MSK_LEVELS:
        raise ValueError(f"unknown MSK monitoring level {msk_level!r}")
    for row in PUBLISHED:
        shape = (row.namespace, row.metric, row.dimensions)
        if shape == (namespace, metric, dimensions) and at_level(msk_level, row.msk_level):
            return row
    return None
