"""Decisions on Kafka: routed to margin.calls.v1 / restrictions.v1 / liquidations.v1 (local broker),
and the MSK IAM OAUTHBEARER configuration used in AWS."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from confluent_kafka import Consumer, TopicPartition

from lambdas.enforcement.runtime import reset_runtime
from margin_risk import names
from margin_risk.adapters.kafka_publisher import msk_iam_oauth_cb, producer_config
from margin_risk.tools.local.kafka_broker import Broker, start_broker

from .harness import Deployment, Feed, book, calc, fault

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with start_broker(partitions=1) as b:
        yield b


def read_topic(bootstrap: str, topic: str) -> list[dict[str, object]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msgs = c.consume(100, timeout=0.5)
        if not msgs:
            break
        for m in msgs:
            assert m.error() is None
            headers = dict(m.headers() or [])
            value = json.loads(m.value())
            assert m.key() == value["account_id"].encode()
            assert headers[names.HEADER_CORRELATION_ID] == value["correlation_id"].encode()
            out.append(value)
    c.close()
    return out


def test_decisions_are_routed_to_the_three_topics(
    deployment: Deployment, feed: Feed, broker: Broker, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("KAFKA_BOOTSTRAP", broker.bootstrap)
    monkeypatch.setenv("KAFKA_AUTH", "none")
    reset_runtime()
    events = [
        calc("ACC-K1", 0, -40_000, book(50), "k1"),  # call
        calc("ACC-K1", 1_900, -40_000, book(50), "k2"),  # restricted
        calc("ACC-K1", 2_000, -40_000, book(60), "k3"),  # cured: restriction lifted
        calc("ACC-K2", 0, -60_000, book(50), "j1"),  # call + liquidation
    ]
    records = feed.records(events)
    # The first delivery fails at SNS after Kafka accepted the decisions: at-least-once
    with fault(deployment.runtime.sns, "sns.PublishBatch"), pytest.raises(BatchProcessingError):
        deployment.send(records)  # every record failed: the whole batch is retried
    assert deployment.send(records) == {"batchItemFailures": []}

    calls = read_topic(broker.bootstrap, names.TOPIC_MARGIN_CALLS)
    ids = [c["event_id"] for c in calls]
    # every decision reached margin.calls.v1; the retry re-sent the same ids (dedupe on event_id)
    assert sorted(set(ids)) == sorted(e.event_id for e in deployment.audit())
    assert len(ids) == 2 * len(set(ids)) == 10
    restrictions = {r["event_id"] for r in read_topic(broker.bootstrap, names.TOPIC_RESTRICTIONS)}
    assert restrictions == {"k2:ACCOUNT_RESTRICTED", "k3:MARGIN_CALL_MET"}
    liquidations = {r["event_id"] for r in read_topic(broker.bootstrap, names.TOPIC_LIQUIDATIONS)}
    assert liquidations == {"j1:LIQUIDATION_TRIGGERED"}


def test_msk_iam_auth_signs_an_oauthbearer_token(monkeypatch: pytest.MonkeyPatch):
    conf = producer_config("b-1.msk:9098", "iam", region="eu-west-1")
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "OAUTHBEARER"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    token, expiry = msk_iam_oauth_cb("eu-west-1")("")
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    assert url.startswith("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect")
    assert "X-Amz-Signature=" in url and expiry > time.time()
    assert "oauth_cb" not in producer_config("localhost:9092", "none")
