"""CloudWatch as a `margin_risk.tools.health.MetricSource` (boto3 stays out of the core)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import boto3

from dashboards import specs
from margin_risk import names

DEFAULT_RESOURCES: Mapping[str, str] = {
    "function_name": names.ENFORCEMENT_FUNCTION,
    "state_table_name": names.ACCOUNT_STATE_TABLE,
    "idempotency_table_name": names.IDEMPOTENCY_TABLE,
    "on_failure_queue_name": names.ON_FAILURE_QUEUE,
    "emr_application_id": "",
    "msk_cluster_name": names.MSK_CLUSTER,
    "audit_bucket_name": "",
    "spark_log_group_name": names.SPARK_LOG_GROUP,
}


def _combine(values: list[float], stat: str) -> float:
    """Merge per-period values into one for the window (percentiles: the worst period)."""
    s = stat.lower()
    if s in ("sum", "samplecount"):
        return float(sum(values))
    if s == "minimum":
        return float(min(values))
    if s == "average":
        return float(sum(values) / len(values))
    return float(max(values))


class CloudWatchSource:
    """Reads the specs' metrics with ``GetMetricData``."""

    def __init__(
        self, client: Any | None = None, resources: Mapping[str, str] | None = None
    ) -> None:
        self.client = client if client is not None else boto3.client("cloudwatch")
        self.resources = {**DEFAULT_RESOURCES, **(resources or {})}
        self.description = "CloudWatch"

    def _query(
        self, metric: specs.Metric, start: datetime, end: datetime, period: int, stat: str
    ) -> list[tuple[datetime, float]]:
        dims = specs.resolve_dimensions(metric, self.resources)
        query = {
            "Id": "m",
            "MetricStat": {
                "Metric": {
                    "Namespace": metric.namespace,
                    "MetricName": metric.name,
                    "Dimensions": [{"Name": k, "Value": v} for k, v in dims.items()],
                },
                "Period": period,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        out: list[tuple[datetime, float]] = []
        kwargs: dict[str, Any] = {
            "MetricDataQueries": [query],
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampDescending",
        }
        while True:
            resp = self.client.get_metric_data(**kwargs)
            for r in resp.get("MetricDataResults", []):
                out.extend(zip(r.get("Timestamps", []), r.get("Values", []), strict=False))
            token = resp.get("NextToken")
            if not token:
                return out
            kwargs["NextToken"] = token

    def window(self, metric: specs.Metric, start: datetime, end: datetime) -> float | None:
        period = max(60, math.ceil((end - start).total_seconds() / 60) * 60)
        values = [v for _, v in self._query(metric, start, end, period, metric.statistic)]
        return _combine(values, metric.statistic) if values else None

    def last_active(
        self, metric: specs.Metric, since: datetime, until: datetime
    ) -> datetime | None:
        points = self._query(metric, since, until, 60, "Sum")
        active = [t for t, v in points if v > 0]
        return max(active) if active else None
