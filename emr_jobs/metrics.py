"""Per-micro-batch metrics in CloudWatch Embedded Metric Format (EMF).

Why EMF and not PutMetricData: on EMR Serverless the driver's stdout goes to CloudWatch Logs when
the job's monitoring configuration enables it, and CloudWatch extracts EMF lines into metrics with
no API call, no extra IAM permission and no extra dependency. Locally the same JSON objects are
appended, one per line, to ``<metrics_dir>/spark.jsonl`` so the demo and tests can read them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Dict, List, Optional

from margin_risk import names

METRICS_FILE = "spark.jsonl"


def emf_object(
    values: Dict[str, float],
    units: Dict[str, str],
    dimensions: Optional[Dict[str, str]] = None,
    timestamp_ms: Optional[int] = None,
) -> Dict[str, object]:
    """One EMF document: namespace names.METRICS_NAMESPACE, dimension ``service`` (+ extras)."""
    dims = {names.DIM_SERVICE: names.SERVICE_SPARK, **(dimensions or {})}
    doc: Dict[str, object] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": names.METRICS_NAMESPACE,
                    "Dimensions": [sorted(dims)],
                    "Metrics": [{"Name": k, "Unit": units.get(k, "Count")} for k in values],
                }
            ],
        },
        **dims,
    }
    doc.update(values)
    return doc


def batch_metrics(
    input_records: int,
    margin_results: int,
    stress_results: int,
    rejected_by_reason: Dict[str, int],
    duration_ms: float,
    batch_id: int,
) -> List[Dict[str, object]]:
    """The EMF documents one micro-batch emits (rejections: one document per reason)."""
    docs = [
        emf_object(
            {
                names.METRIC_INPUT_RECORDS: float(input_records),
                names.METRIC_MARGIN_RESULTS: float(margin_results),
                names.METRIC_STRESS_RESULTS: float(stress_results),
                names.METRIC_SPARK_BATCH_DURATION: float(duration_ms),
            },
            {names.METRIC_SPARK_BATCH_DURATION: "Milliseconds"},
        )
    ]
    for reason, count in sorted(rejected_by_reason.items()):
        docs.append(
            emf_object(
                {names.METRIC_RECORDS_REJECTED: float(count)}, {}, {names.DIM_REASON: reason}
            )
        )
    for d in docs:
        d["batch_id"] = batch_id  # a property, not a dimension: searchable in Logs Insights
    return docs


class MetricsWriter:
    """Appends EMF lines to ``<metrics_dir>/spark.jsonl``, or prints them to stdout when no
    directory is configured (the EMR Serverless driver log, shipped to CloudWatch Logs)."""

    def __init__(self, metrics_dir: Optional[str] = None) -> None:
        self.path = os.path.join(metrics_dir, METRICS_FILE) if metrics_dir else None
        if metrics_dir:
            os.makedirs(metrics_dir, exist_ok=True)

    def write(self, docs: List[Dict[str, object]]) -> None:
        lines = "".join(json.dumps(d, sort_keys=True) + "\n" for d in docs)
        if self.path is None:
            sys.stdout.write(lines)
            sys.stdout.flush()
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(lines)


LOG_FILE = "spark-job.log"
# Up to this many correlation ids are listed in a log line; beyond it, a sample and the count.
LOG_MAX_IDS = 1000


class JobLog:
    """Structured JSON log lines of the job (one per emitted result batch), for the runbook's
    trace: an operator searches a correlation id and finds the micro-batch that used the input.

    To stdout on EMR Serverless (the driver log, shipped to CloudWatch Logs, where the trace
    query matches ``correlation_id`` or the text of the line); locally to
    ``<log_dir>/spark-job.log``."""

    def __init__(self, log_dir: Optional[str] = None, max_ids: int = LOG_MAX_IDS) -> None:
        self.path = os.path.join(log_dir, LOG_FILE) if log_dir else None
        self.max_ids = max_ids
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)

    def write(self, doc: Dict[str, object]) -> None:
        line = json.dumps(doc, sort_keys=True) + "\n"
        if self.path is None:
            sys.stdout.write(line)
            sys.stdout.flush()
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)

    def results_emitted(
        self, batch_id: int, accounts: int, correlation_ids: List[str], price_inputs: List[str]
    ) -> None:
        """One line per emitted result batch: the correlation ids of its fill and cash inputs
        (all of them, or the first ``max_ids`` and the count), and the derived ids of the price
        and beta changes that re-margined holders (``prices.v1:<SYMBOL>:<event time>``)."""
        ids = sorted(set(correlation_ids))
        derived = sorted(set(price_inputs))
        doc: Dict[str, object] = {
            "level": "INFO",
            "service": names.SERVICE_SPARK,
            "message": "margin results emitted",
            "batch_id": batch_id,
            "margin_results": accounts,
            "stress_results": accounts,
            "correlation_id_count": len(ids),
            "correlation_ids": ids[: self.max_ids],
            "symbol_input_count": len(derived),
            "symbol_inputs": derived[: self.max_ids],
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if len(ids) > self.max_ids or len(derived) > self.max_ids:
            doc["truncated"] = True
        if len(ids) == 1:
            doc["correlation_id"] = ids[0]  # the trace query's field match, for one input
        self.write(doc)
