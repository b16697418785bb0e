"""The risk desk's command: extend or waive an account's open call by publishing a
``desk.actions.v1`` record, signed by the caller's AWS identity.

The operator is never typed in: it is the ARN that STS ``GetCallerIdentity`` returns for the
credentials the command runs with, so the audit trail names whoever held them. The action id is a
hash of the action's content (account, action, until, operator, reason, timestamp): a record
re-sent by a retry carries the same id, and the enforcement function applies it once. On AWS the
record goes to MSK with IAM auth (the same OAUTHBEARER signer as the enforcement function's
producer); locally ``auth="none"`` talks to the demo's broker.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from margin_risk import names
from margin_risk.models import DeskAction, iso

DELIVERY_TIMEOUT_S = 15.0


class DeskSettings(BaseSettings):
    """Where the desk command publishes: ``MR_DESK_BOOTSTRAP``, ``MR_DESK_AUTH``, ``MR_DESK_TOPIC``
    (the command's ``--bootstrap`` and ``--auth`` override them)."""

    model_config = SettingsConfigDict(env_prefix="MR_DESK_", extra="ignore", frozen=True)

    bootstrap: str = ""
    auth: Literal["iam", "none"] = "iam"
    topic: str = names.TOPIC_DESK_ACTIONS


class DeskError(Exception):
    """Why an action could not be built or published (one line)."""


def operator_identity(sts: Any | None = None) -> str:
    """The caller's identity as an ARN (``arn:aws:sts::123456789012:assumed-role/Desk/jane``)."""
    if sts is None:
        import boto3

        sts = boto3.client("sts")
    arn = sts.get_caller_identity()["Arn"]
    if not isinstance(arn, str) or not arn:
        raise DeskError("STS returned no caller ARN")
    return arn


def action_id(
    account_id: str,
    action: str,
    until: datetime | None,
    operator: str,
    reason: str,
    timestamp: datetime,
) -> str:
    """A deterministic id: the same action content always gets the same id."""
    parts = [account_id, action, "" if until is None else iso(until), operator, reason]
    digest = hashlib.sha256("\x1f".join([*parts, iso(timestamp)]).encode()).hexdigest()
    return f"desk-{digest[:32]}"


def build_action(
    account_id: str,
    action: Literal["EXTEND_CALL", "WAIVE_CALL"],
    *,
    operator: str,
    reason: str,
    until: datetime | None = None,
    now: datetime | None = None,
) -> DeskAction:
    """The record to publish; validated like every record the enforcement function reads.

    ``now`` is the action's event time (the wall clock by default; the demo passes its
    simulated session clock). An extension whose ``until`` is not after ``now`` is refused here:
    it could never move a deadline that is still ahead.
    """
    ts = (now or datetime.now(UTC)).astimezone(UTC)
    if action == names.DESK_ACTION_EXTEND and until is not None and until <= ts:
        raise DeskError(f"--until {iso(until)} is not after now ({iso(ts)})")
    aid = action_id(account_id, action, until, operator, reason, ts)
    return DeskAction(
        action_id=aid,
        account_id=account_id,
        action=action,
        until=until,
        operator=operator,
        reason=reason,
        timestamp=ts,
        correlation_id=f"desk-{uuid.uuid5(uuid.NAMESPACE_URL, aid)}",
    )


@dataclass
class DeskPublisher:
    """Publishes actions to ``desk.actions.v1`` (key = account) and waits for the broker's ack."""

    bootstrap: str
    auth: Literal["iam", "none"] = "iam"
    topic: str = names.TOPIC_DESK_ACTIONS

    def publish(self, action: DeskAction) -> None:
        from confluent_kafka import Producer

        from margin_risk.adapters.kafka_publisher import producer_config

        if not self.bootstrap:
            raise DeskError("no Kafka bootstrap: give --bootstrap or set MR_DESK_BOOTSTRAP")
        conf = producer_config(self.bootstrap, self.auth)
        conf["client.id"] = "margin-risk-desk"
        conf["message.timeout.ms"] = int(DELIVERY_TIMEOUT_S * 1000)
        producer = Producer(conf)
        errors: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        producer.produce(
            self.topic,
            key=action.account_id.encode(),
            value=action.to_json().encode(),
            # origin_ts: when the desk sent it, what the function's latency metric counts from
            # (an action's own timestamp is its event time, which a replayed session sets).
            headers=[
                (names.HEADER_CORRELATION_ID, action.correlation_id.encode()),
                (names.HEADER_ORIGIN_TS, iso(datetime.now(UTC)).encode()),
            ],
            on_delivery=on_delivery,
        )
        remaining = producer.flush(DELIVERY_TIMEOUT_S + 5)
        if remaining or errors:
            why = errors[0] if errors else f"not delivered in {DELIVERY_TIMEOUT_S:.0f}s"
            raise DeskError(f"{self.topic} at {self.bootstrap}: {why}")
