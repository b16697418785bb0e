"""Operator notifications on SNS for new margin calls and liquidations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from margin_risk.models import AuditEvent

SNS_BATCH_LIMIT = 10


class SnsNotifier:
    """`ports.Notifier`: PublishBatch, ten decisions a call; any failure raises."""

    def __init__(self, client: Any, topic_arn: str) -> None:
        self.client = client
        self.topic_arn = topic_arn

    def notify(self, decisions: Sequence[AuditEvent]) -> None:
        if not self.topic_arn:
            return
        for i in range(0, len(decisions), SNS_BATCH_LIMIT):
            chunk = decisions[i : i + SNS_BATCH_LIMIT]
            entries = [
                {
                    "Id": f"d{n}",
                    "Subject": f"{d.event_type} {d.account_id}"[:100],
                    "Message": d.to_json(),
                    "MessageAttributes": {
                        "event_type": {"DataType": "String", "StringValue": d.event_type},
                        "event_id": {"DataType": "String", "StringValue": d.event_id},
                    },
                }
                for n, d in enumerate(chunk)
            ]
            resp = self.client.publish_batch(
                TopicArn=self.topic_arn, PublishBatchRequestEntries=entries
            )
            if resp.get("Failed"):
                raise RuntimeError(f"SNS PublishBatch failed: {resp['Failed'][:3]}")
