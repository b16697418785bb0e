"""A per-test enforcement deployment on the embedded AWS endpoint, driven through the real handler.

Each `Deployment` gets its own table, idempotency table, bucket and SNS topic (with an SQS queue
subscribed to read notifications), so tests never see each other's state.
"""

from __future__ import annotations

import json
import os
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from lambdas.enforcement.local_invoke import LocalRecord, build_msk_event, invoke
from lambdas.enforcement.runtime import Runtime, get_runtime
from margin_risk import names
from margin_risk.adapters.audit_reader import read_audit_s3
from margin_risk.adapters.dynamodb_state import DynamoStateRepository
from margin_risk.config import EnforcementConfig
from margin_risk.enforcement import AccountState
from margin_risk.models import AuditEvent, DeskAction, MarginCalc, StressResult
from margin_risk.rules import Holding
from margin_risk.tools.local.moto_server import Provisioned, provision
from tests.factories import margin_calc, stress_result

Input = MarginCalc | StressResult | DeskAction

PARTITIONS = 3


def book(
    price: float, qty: float = 1000.0, symbol: str = "AAPL", beta: float = 1.2
) -> list[Holding]:
    return [Holding(symbol, qty, price, beta)]


def calc(
    account: str, seconds: float, cash: float, holdings: list[Holding], eid: str, **extra: Any
) -> MarginCalc:
    """A margin.calc.v1 record computed with the reference rules from a real book."""
    return margin_calc(
        account, seconds, cash, holdings, event_id=eid, correlation_id=f"corr-{eid}", **extra
    )


def stress(
    account: str, seconds: float, cash: float, holdings: list[Holding], eid: str
) -> StressResult:
    return stress_result(
        account, seconds, cash, holdings, event_id=eid, correlation_id=f"corr-{eid}"
    )


def partition_of(account: str) -> int:
    return zlib.crc32(account.encode()) % PARTITIONS


@dataclass
class Feed:
    """Assigns Kafka coordinates the way the Spark job's keyed producer would (account -> partition)."""

    next_offset: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))

    def record(
        self,
        event: Input | None = None,
        *,
        raw: bytes | None = None,
        account: str | None = None,
        topic: str | None = None,
    ) -> LocalRecord:
        acct = account or (event.account_id if event is not None else "UNKNOWN")
        t = topic or _topic_of(event)
        p = partition_of(acct)
        off = self.next_offset[(t, p)]
        self.next_offset[(t, p)] += 1
        value = raw if raw is not None else event.to_json().encode()  # type: ignore[union-attr]
        return LocalRecord(t, p, off, value, acct.encode(), 1_771_252_200_000 + off)

    def records(self, events: Sequence[Input]) -> list[LocalRecord]:
        return [self.record(e) for e in events]


def _topic_of(event: Input | None) -> str:
    """The topic each kind of record arrives on (key = account, so the partition follows)."""
    if isinstance(event, StressResult):
        return names.TOPIC_STRESS
    if isinstance(event, DeskAction):
        return names.TOPIC_DESK_ACTIONS
    return names.TOPIC_MARGIN_CALC


class Deployment:
    def __init__(self, endpoint: Provisioned, metrics_dir: Path) -> None:
        n = uuid.uuid4().hex[:10]
        self.region = endpoint.region
        sns = boto3.client("sns")
        sqs = boto3.client("sqs")
        topic = sns.create_topic(Name=f"ops-{n}")["TopicArn"]
        self.queue_url = sqs.create_queue(QueueName=f"ops-{n}")["QueueUrl"]
        qarn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=qarn, Attributes={"RawMessageDelivery": "true"}
        )
        cfg = EnforcementConfig.local(
            state_table_name=f"state-{n}",
            idempotency_table_name=f"idem-{n}",
            audit_bucket=f"audit-{n}",
            operator_topic_arn=topic,
        )
        self.config = provision(_endpoint(), cfg).config
        self.metrics_file = metrics_dir / "enforcement.jsonl"
        self.env = {**self.config.to_environment(), "MR_METRICS_DIR": str(metrics_dir)}
        self._notes: list[dict[str, Any]] = []

    @property
    def runtime(self) -> Runtime:
        return get_runtime()

    # -- driving ---------------------------------------------------------------------------------
    def send(self, records: Sequence[LocalRecord]) -> dict[str, Any]:
        return dict(invoke(build_msk_event(records)))

    # -- reading back ----------------------------------------------------------------------------
    def states(self) -> dict[str, AccountState]:
        return DynamoStateRepository(
            boto3.client("dynamodb"), self.config.state_table_name
        ).scan_heads()

    def items(self, account: str) -> list[dict[str, Any]]:
        return DynamoStateRepository(
            boto3.client("dynamodb"), self.config.state_table_name
        ).history(account)

    def audit(self) -> list[AuditEvent]:
        """The trail so far; empty before the first decision (the reader refuses an empty trail,
        which for ``rebuild-state`` means a wrong prefix, but here is a state of the test)."""
        if not self.keys(names.AUDIT_PREFIX):
            return []
        return read_audit_s3(f"s3://{self.config.audit_bucket}/{names.AUDIT_PREFIX}")

    def keys(self, prefix: str = "") -> list[str]:
        resp = boto3.client("s3").list_objects_v2(Bucket=self.config.audit_bucket, Prefix=prefix)
        return sorted(o["Key"] for o in resp.get("Contents", []))

    def versions(self, prefix: str = names.AUDIT_PREFIX) -> dict[str, int]:
        """How many versions each key has (the bucket has Object Lock, so it keeps them all)."""
        out: dict[str, int] = {}
        pages = boto3.client("s3").get_paginator("list_object_versions")
        for page in pages.paginate(Bucket=self.config.audit_bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                out[v["Key"]] = out.get(v["Key"], 0) + 1
            assert not page.get("DeleteMarkers"), "an audit object was deleted"
        return out

    def body(self, key: str) -> str:
        obj = boto3.client("s3").get_object(Bucket=self.config.audit_bucket, Key=key)
        return str(obj["Body"].read().decode())

    def rejected(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for k in self.keys(names.REJECTED_PREFIX):
            out.extend(json.loads(line) for line in self.body(k).splitlines())
        return out

    def notifications(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        while True:
            resp = sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
            )
            msgs = resp.get("Messages", [])
            if not msgs:
                break
            for m in msgs:
                self._notes.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        return list(self._notes)

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line]

    def metric_total(self, name: str, **dims: str) -> float:
        total = 0.0
        for blob in self.metrics():
            if name in blob and all(blob.get(k) == v for k, v in dims.items()):
                total += sum(blob[name])
        return total


def _endpoint() -> str:
    return os.environ["AWS_ENDPOINT_URL"]


@contextmanager
def fault(
    client: Any,
    operation: str,
    *,
    times: int = 1,
    code: str = "ServiceUnavailable",
    when: Any = None,
) -> Iterator[Counter[str]]:
    """Make ``operation`` (e.g. ``"s3.PutObject"``) fail ``times`` times with an AWS error.

    A botocore hook on the real client: the request never reaches the endpoint, exactly as if
    the service had answered with ``code``. ``when(api_params)`` narrows the fault.
    """
    hits: Counter[str] = Counter()
    event = f"before-parameter-build.{operation}"

    def hook(params: dict[str, Any], **_: Any) -> None:
        if hits["failed"] >= times:
            return
        if when is not None and not when(params):
            return
        hits["failed"] += 1
        raise ClientError({"Error": {"Code": code, "Message": "injected"}}, operation.split(".")[1])

    client.meta.events.register(event, hook)
    try:
        yield hits
    finally:
        client.meta.events.unregister(event, hook)


@contextmanager
def lost_response(
    client: Any, operation: str, *, times: int = 1, when: Any = None
) -> Iterator[Counter[str]]:
    """The call reaches the endpoint and takes effect, but its answer is lost: the caller sees
    an AWS error (a timeout or a dropped connection looks like this from inside the function)."""
    hits: Counter[str] = Counter()
    service, name = operation.split(".")

    def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["lost_response_params"] = dict(params)

    def drop(context: dict[str, Any], **_: Any) -> None:
        if hits["lost"] >= times:
            return
        if when is not None and not when(context.get("lost_response_params", {})):
            return
        hits["lost"] += 1
        raise ClientError({"Error": {"Code": "RequestTimeout", "Message": "injected"}}, name)

    client.meta.events.register(f"before-parameter-build.{service}.{name}", remember)
    client.meta.events.register(f"after-call.{service}.{name}", drop)
    try:
        yield hits
    finally:
        client.meta.events.unregister(f"before-parameter-build.{service}.{name}", remember)
        client.meta.events.unregister(f"after-call.{service}.{name}", drop)


@contextmanager
def count_calls(*clients: Any) -> Iterator[Counter[str]]:
    """Count API calls per operation name on the given clients (botocore event hooks)."""
    calls: Counter[str] = Counter()

    def hook(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    for c in clients:
        c.meta.events.register("before-call.*.*", hook)
    try:
        yield calls
    finally:
        for c in clients:
            c.meta.events.unregister("before-call.*.*", hook)
