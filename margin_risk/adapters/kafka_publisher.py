"""Decisions to Kafka (``margin.calls.v1``, ``restrictions.v1``, ``liquidations.v1``).

MSK Serverless accepts IAM auth only: with ``kafka_auth="iam"`` the producer signs an OAUTHBEARER
token with ``aws-msk-iam-sasl-signer-python``; ``"none"`` is for the local broker. The producer is
idempotent with ``acks=all`` and `publish` waits for every delivery report, so a failure raises
and the batch is retried before the state commit (consumers dedupe on the decision's event_id).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from margin_risk.usecase.records import Publication

FLUSH_TIMEOUT_S = 10.0


def msk_iam_oauth_cb(region: str) -> Any:
    """confluent-kafka ``oauth_cb``: returns (token, expiry in seconds since the epoch)."""

    def _cb(_config: str) -> tuple[str, float]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return token, expiry_ms / 1000.0

    return _cb


def producer_config(
    bootstrap: str, auth: Literal["iam", "none"], region: str | None = None
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "client.id": "margin-risk-enforcement",
    }
    if auth == "iam":
        conf.update(
            {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "OAUTHBEARER",
                "oauth_cb": msk_iam_oauth_cb(
                    region or os.environ.get("AWS_REGION") or os.environ["AWS_DEFAULT_REGION"]
                ),
            }
        )
    return conf


class KafkaDecisionPublisher:
    """`ports.DecisionPublisher` on confluent-kafka; the producer is made lazily."""

    def __init__(self, bootstrap: str, auth: Literal["iam", "none"] = "iam") -> None:
        self.conf = producer_config(bootstrap, auth)
        self._producer: Any = None

    def _get(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(self.conf)
            if "oauth_cb" in self.conf:
                self._producer.poll(0)  # trigger the token callback before the first produce
        return self._producer

    def close(self) -> None:
        """Flush and drop the producer (its librdkafka threads go with it)."""
        if self._producer is not None:
            self._producer.flush(FLUSH_TIMEOUT_S)
            self._producer = None

    def publish(self, publications: Sequence[Publication]) -> None:
        if not publications:
            return
        p = self._get()
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for pub in publications:
            p.produce(
                pub.topic,
                key=pub.key,
                value=pub.value,
                headers=list(pub.headers.items()),
                on_delivery=on_delivery,
            )
            p.poll(0)
        remaining = p.flush(FLUSH_TIMEOUT_S)
        if remaining:
            raise RuntimeError(
                f"Kafka: {remaining} decision(s) not delivered in {FLUSH_TIMEOUT_S}s"
            )
        if errors:
            raise RuntimeError(f"Kafka delivery failed: {errors[:3]}")
