"""CloudWatch Logs Insights query definitions (saved queries) over the Lambda's and Spark's logs.

The Lambda logs Powertools JSON (``level``, ``service``, ``message``, ``correlation_id``,
``xray_trace_id``) plus its EMF lines; the Spark job logs JSON lines with ``correlation_id`` and
its per-micro-batch EMF. Saved queries take no parameters: the trace query carries a placeholder
the operator replaces in the console.
"""

from __future__ import annotations

from dataclasses import dataclass

from margin_risk import names

CORRELATION_PLACEHOLDER = "REPLACE_WITH_CORRELATION_ID"


@dataclass(frozen=True)
class LogQuery:
    id: str
    description: str
    query: str
    sources: tuple[str, ...]  # "lambda", "spark"

    def name(self, prefix: str = names.PROJECT) -> str:
        """Saved-query name; the slash files it in a folder of the console's query list."""
        return f"{prefix}/{self.id}"


QUERIES: tuple[LogQuery, ...] = (
    LogQuery(
        "trace-margin-call",
        "Every log line of one margin call, from the Spark job to the Lambda's decision.",
        "fields @timestamp, service, level, message, event_id, account_id, event_type,"
        " xray_trace_id, @log\n"
        # The Lambda logs each decision (and each record not applied) under the record's own
        # correlation_id, its other lines under the batch id; rejects carry the id in the
        # message, so match the id anywhere in the line as well.
        f'| filter correlation_id = "{CORRELATION_PLACEHOLDER}"'
        f' or @message like "{CORRELATION_PLACEHOLDER}"\n'
        "| sort @timestamp asc\n"
        "| limit 500",
        ("lambda", "spark"),
    ),
    LogQuery(
        "errors-by-component",
        "Errors per component (service) and 5-minute bin.",
        "fields @timestamp, service, level, message\n"
        '| filter level = "ERROR" or level = "CRITICAL"'
        " or @message like /Traceback|Task timed out/\n"
        "| stats count(*) as errors by service, bin(5m)\n"
        "| sort errors desc",
        ("lambda", "spark"),
    ),
    LogQuery(
        "rejected-records-by-reason",
        "Rejected records per reason, read from the EMF lines both components log.",
        f"filter ispresent({names.METRIC_RECORDS_REJECTED})\n"
        f"| stats sum({names.METRIC_RECORDS_REJECTED}) as rejected"
        f" by {names.DIM_REASON}, {names.DIM_SERVICE}\n"
        "| sort rejected desc",
        ("lambda", "spark"),
    ),
    LogQuery(
        "slowest-batches",
        "The slowest Lambda invocations and Spark micro-batches, slowest first.",
        "fields @timestamp, @log, coalesce(@duration, "
        f"{names.METRIC_SPARK_BATCH_DURATION}) as duration_ms,"
        f" {names.METRIC_BATCH_SIZE}, {names.METRIC_INPUT_RECORDS}, @requestId\n"
        f'| filter @type = "REPORT" or ispresent({names.METRIC_SPARK_BATCH_DURATION})\n'
        "| sort duration_ms desc\n"
        "| limit 25",
        ("lambda", "spark"),
    ),
)


def log_group_names(query: LogQuery, function_name: str, spark_log_group: str) -> list[str]:
    groups = {"lambda": f"/aws/lambda/{function_name}", "spark": spark_log_group}
    return [groups[s] for s in query.sources]
