"""The enforcement Lambda: a thin Powertools handler around `margin_risk.usecase.service`.

MSK invokes it with batches of ``margin.calc.v1`` / ``stress.beta_spy.v1`` records. Powertools
does the plumbing: Logger (JSON, Lambda context, a correlation id on every line), Tracer (X-Ray),
Metrics (EMF), the Kafka record parser model, idempotency of the whole batch on DynamoDB (keyed on
its topic-partition offset ranges), and the partial batch response (topic-partition, offset).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.kafka_event import KafkaEventRecord
from aws_lambda_powertools.utilities.idempotency import idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.enforcement.runtime import Runtime, get_runtime, tracer
from margin_risk import audit, names
from margin_risk.adapters.msk_event import inbound_records
from margin_risk.usecase.records import Coordinate, InboundRecord

logger = Logger(service=names.SERVICE_ENFORCEMENT)
copy_config_to_registered_loggers(source_logger=logger, include={"margin_risk"})


class PartialBatchFailure(Exception):
    """Raised inside the idempotent section so a batch with failures is not stored as done."""

    def __init__(self, failed: list[Coordinate], summary: dict[str, Any]) -> None:
        super().__init__(f"{len(failed)} record(s) failed")
        self.failed = failed
        self.summary = summary


class RecordFailed(Exception):
    """Marks one record as a batch item failure for Powertools' BatchProcessor."""


def batch_key(records: Sequence[InboundRecord]) -> dict[str, list[int]]:
    """Idempotency key data: ``{"topic-partition": [first offset, last offset, count]}``."""
    ranges: dict[str, list[int]] = {}
    for r in records:
        c = r.coordinate
        k = f"{c.topic}-{c.partition}"
        lo, hi, n = ranges.get(k, [c.offset, c.offset, 0])
        ranges[k] = [min(lo, c.offset), max(hi, c.offset), n + 1]
    return dict(sorted(ranges.items()))


def _process(
    rt: Runtime, batch: dict[str, list[int]], records: Sequence[InboundRecord]
) -> dict[str, Any]:
    result = rt.service.process(records)
    summary = {
        "batch_id": result.batch_id,
        "records": result.records,
        "decisions": len(result.decisions),
        "rejected": len(result.rejected),
        "accounts_committed": result.accounts_committed,
        "audit_keys": result.audit_keys,
    }
    if result.failed:
        raise PartialBatchFailure(result.failed, summary)
    return summary


def _idempotent(rt: Runtime) -> Any:
    """`_process` wrapped by Powertools idempotency, built once per runtime and kept on it."""
    if rt.idempotent_process is None:

        def run(*, batch: dict[str, list[int]], records: Sequence[InboundRecord]) -> dict[str, Any]:
            return _process(rt, batch, records)

        rt.idempotent_process = idempotent_function(
            run,
            data_keyword_argument="batch",
            persistence_store=rt.persistence,
            config=rt.idempotency_config,
        )
    return rt.idempotent_process


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    rt = get_runtime()
    rt.idempotency_config.register_lambda_context(context)
    records = inbound_records(event)
    key = batch_key(records)
    logger.set_correlation_id("batch-" + audit.batch_id([r.coordinate.key for r in records]))
    failed: set[Coordinate] = set()
    try:
        summary = _idempotent(rt)(batch=key, records=records)
        logger.info("batch committed", extra={"summary": summary, "ranges": key})
    except PartialBatchFailure as e:
        failed = set(e.failed)
        logger.warning(
            "batch partly failed: reporting item failures",
            extra={"summary": e.summary, "failed": [c.key for c in e.failed]},
        )
    finally:
        rt.metrics.flush()

    def record_handler(record: KafkaEventRecord) -> None:
        c = Coordinate(record.topic, record.partition, record.offset)
        if c in failed:
            raise RecordFailed(c.key)

    processor = BatchProcessor(event_type=EventType.Kafka)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
