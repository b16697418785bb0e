"""Wiring of the enforcement function: config from the environment -> adapters -> service.

Built once per execution environment (cold start) and reused. Tests and the local demo reach the
boto3 clients through `Runtime` to inject faults with botocore event hooks, never by mocking.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import boto3
from aws_lambda_powertools import Tracer
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
)
from botocore.config import Config

from margin_risk import names
from margin_risk.adapters.dynamodb_state import MAX_CONCURRENT_COMMITS, DynamoStateRepository
from margin_risk.adapters.kafka_publisher import KafkaDecisionPublisher
from margin_risk.adapters.powertools_ports import EmfMetrics, XRayTracing
from margin_risk.adapters.s3_audit import S3AuditSink, S3RejectedSink
from margin_risk.adapters.sns_notifier import SnsNotifier
from margin_risk.config import EnforcementConfig
from margin_risk.settings import load_house_settings
from margin_risk.usecase.ports import DecisionPublisher, NullPublisher
from margin_risk.usecase.records import Topics
from margin_risk.usecase.service import EnforcementService

# Local runs: EMF objects are also appended to this file (<run_dir>/metrics/enforcement.jsonl).
METRICS_DIR_ENV = "MR_METRICS_DIR"
BOTO_CONFIG = Config(
    retries={"max_attempts": 3, "mode": "standard"},
    connect_timeout=5,
    max_pool_connections=MAX_CONCURRENT_COMMITS,  # the state commits run in parallel
)

tracer = Tracer(service=names.SERVICE_ENFORCEMENT)


@dataclass
class Runtime:
    config: EnforcementConfig
    service: EnforcementService
    metrics: EmfMetrics
    idempotency_config: IdempotencyConfig
    persistence: DynamoDBPersistenceLayer
    dynamodb: Any
    s3: Any
    sns: Any
    # The handler's idempotent batch function, bound to this runtime (built on first use).
    idempotent_process: Any = None


def build_runtime(config: EnforcementConfig | None = None) -> Runtime:
    cfg = config or EnforcementConfig()
    session = boto3.session.Session()
    ddb = session.client("dynamodb", config=BOTO_CONFIG)
    s3 = session.client("s3", config=BOTO_CONFIG)
    sns = session.client("sns", config=BOTO_CONFIG)
    metrics_dir = os.environ.get(METRICS_DIR_ENV)
    metrics = EmfMetrics(
        jsonl=Path(metrics_dir) / "enforcement.jsonl" if metrics_dir else None,
    )
    publisher: DecisionPublisher = (
        KafkaDecisionPublisher(cfg.kafka_bootstrap, cfg.kafka_auth)
        if cfg.kafka_bootstrap
        else NullPublisher()
    )
    service = EnforcementService(
        repo=DynamoStateRepository(ddb, cfg.state_table_name),
        audit_sink=S3AuditSink(s3, cfg.audit_bucket),
        rejected_sink=S3RejectedSink(s3, cfg.audit_bucket),
        publisher=publisher,
        notifier=SnsNotifier(sns, cfg.operator_topic_arn),
        metrics=metrics,
        tracing=XRayTracing(tracer),
        policy=load_house_settings().policy.to_params(),
        audit_prefix=cfg.audit_prefix,
        topics=Topics(cfg.decisions_topic, cfg.restrictions_topic, cfg.liquidations_topic),
        history_enabled=cfg.history_enabled,
    )
    idem = IdempotencyConfig(expires_after_seconds=cfg.idempotency_ttl_seconds)
    persistence = DynamoDBPersistenceLayer(table_name=cfg.idempotency_table_name, boto3_client=ddb)
    return Runtime(cfg, service, metrics, idem, persistence, ddb, s3, sns)


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    """The execution environment's runtime, built on first use (after the env is set)."""
    runtime = build_runtime()
    freeze_startup_objects()
    return runtime


def freeze_startup_objects() -> None:
    """Move everything alive after the first runtime build (modules, botocore's service models,
    Powertools, pydantic schemas: ~136k objects) out of the cyclic collector's reach, once per
    process. Every full collection used to walk them: 80-120 ms pauses every few batches.
    Measured on 1,000-record batches with in-memory ports, 60 batches a run, two runs each:
    batch p99 216-220 -> 143-145 ms, median records/s 16.2k -> 19.6k. Objects still die by
    reference counting; only cycles among the frozen ones would never be collected."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


def reset_runtime() -> None:
    """Forget the cached runtime (tests that change the environment, the demo's restart)."""
    if get_runtime.cache_info().currsize:
        publisher = get_runtime().service.publisher
        close = getattr(publisher, "close", None)
        if close is not None:
            close()
    get_runtime.cache_clear()
