"""S3 sinks: the write-once audit trail and the rejected-record log.

Audit objects are created with ``If-None-Match: *``: S3 refuses (412) to write a key that exists, so
the function never overwrites an audit object, not even with the same bytes, and needs no other
permission than ``s3:PutObject``. Keys are deterministic (see `margin_risk.outbox`), so a retry that
finds its object already there has nothing left to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from margin_risk import names
from margin_risk.usecase.records import Rejection

JSONL = "application/x-ndjson"
# Audit objects created in parallel per batch (one request each; within the client's pool).
MAX_CONCURRENT_PUTS = 16


class S3AuditSink:
    """`ports.AuditSink`: a conditional PUT per audit object."""

    def __init__(
        self, client: Any, bucket: str, max_concurrent_puts: int = MAX_CONCURRENT_PUTS
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.max_concurrent_puts = max_concurrent_puts

    def create(self, key: str, body: bytes) -> bool:
        return create_object(self.client, self.bucket, key, body)


def create_object(client: Any, bucket: str, key: str, body: bytes) -> bool:
    """PUT with ``If-None-Match: *``: True if created, False if the key already existed.

    The role's policy allows PutObject on this bucket only with that header (an IAM condition), so
    an unconditional PUT, which would overwrite, is refused by IAM as well.
    """
    try:
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=JSONL, IfNoneMatch="*")
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if e.response.get("Error", {}).get("Code") == "PreconditionFailed" or status == 412:
            return False
        raise
    return True


def rejected_key(batch_id: str, prefix: str = names.REJECTED_PREFIX) -> str:
    return f"{prefix}batch-{batch_id}.jsonl"


class S3RejectedSink:
    """`ports.RejectedSink`: one JSON-lines object per batch under ``rejected/``."""

    def __init__(self, client: Any, bucket: str, prefix: str = names.REJECTED_PREFIX) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def put_rejected(self, batch_id: str, rejections: Sequence[Rejection]) -> None:
        # The key is the batch's: a retried batch finds its object there, with the same lines.
        body = "".join(r.to_json() + "\n" for r in rejections).encode()
        create_object(self.client, self.bucket, rejected_key(batch_id, self.prefix), body)
