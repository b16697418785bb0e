"""Read the audit trail back from S3 (``python -m margin_risk rebuild-state s3://bucket/prefix``)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from margin_risk.audit import BadAuditTrail, parse_jsonl
from margin_risk.models import AuditEvent


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``)."""
    u = urlparse(uri)
    if u.scheme != "s3" or not u.netloc:
        raise ValueError(f"{uri}: expected s3://bucket/prefix")
    return u.netloc, u.path.lstrip("/")


def read_audit_s3(uri: str, client: Any | None = None) -> list[AuditEvent]:
    """Every audit event in the ``.jsonl`` objects under the prefix, in key order.

    The endpoint comes from ``AWS_ENDPOINT_URL`` (moto, LocalStack) or is real AWS when unset.
    """
    bucket, prefix = split_s3_uri(uri)
    if client is None:
        import boto3

        client = boto3.client("s3")
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith(".jsonl"))
    if not keys:
        raise BadAuditTrail(f"{uri}: no audit objects (*.jsonl) under this prefix")
    out: list[AuditEvent] = []
    for key in sorted(keys):
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        out.extend(parse_jsonl(body, f"s3://{bucket}/{key}"))
    return out
