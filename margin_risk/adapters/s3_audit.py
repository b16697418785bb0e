"""S3 sinks: the audit trail (one object per batch and hour) and the rejected-record log.

Keys are deterministic for a batch, so a retry overwrites instead of adding a duplicate (with
Object Lock the bucket keeps the earlier version too, which is what a regulator wants).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from margin_risk import names
from margin_risk.service import Rejection

JSONL = "application/x-ndjson"


class S3AuditSink:
    """`margin_risk.service.AuditSink`: PUT each audit object, DeleteObjects the obsolete ones."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put_objects(self, objects: Mapping[str, bytes]) -> None:
        for key, body in objects.items():
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=JSONL)

    def delete_objects(self, keys: Sequence[str]) -> None:
        for i in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[i : i + 1000]]
            resp = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
            )
            if resp.get("Errors"):
                raise RuntimeError(f"S3 DeleteObjects failed: {resp['Errors'][:3]}")


def rejected_key(batch_id: str, prefix: str = names.REJECTED_PREFIX) -> str:
    return f"{prefix}batch-{batch_id}.jsonl"


class S3RejectedSink:
    """`margin_risk.service.RejectedSink`: one JSON-lines object per batch under ``rejected/``."""

    def __init__(self, client: Any, bucket: str, prefix: str = names.REJECTED_PREFIX) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def put_rejected(self, batch_id: str, rejections: Sequence[Rejection]) -> None:
        body = "".join(r.to_json() + "\n" for r in rejections).encode()
        self.client.put_object(
            Bucket=self.bucket,
            Key=rejected_key(batch_id, self.prefix),
            Body=body,
            ContentType=JSONL,
        )
