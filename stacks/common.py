"""Small helpers every stack uses: log retention, removal policy, cdk-nag acknowledgments."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct, IConstruct

from stacks.config import EnvironmentConfig

# CloudWatch Logs accepts these retentions only (days), in RetentionDays' declaration order.
_RETENTION_DAYS: tuple[int, ...] = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545)
_RETENTION_DAYS += (731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


def log_retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch Logs retention that keeps logs at least `days` days."""
    members = [m for m in logs.RetentionDays if m.name != "INFINITE"]
    for value, member in zip(_RETENTION_DAYS, members, strict=True):
        if value >= days:
            return member
    return logs.RetentionDays.TEN_YEARS


def removal(config: EnvironmentConfig) -> cdk.RemovalPolicy:
    """Data stores are retained in prod; dev tears down with the stack."""
    return cdk.RemovalPolicy.RETAIN if config.removal_retain else cdk.RemovalPolicy.DESTROY


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on `scope` (and its children) with the reviewer's reason."""
    cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def secure_bucket(
    scope: Construct,
    construct_id: str,
    *,
    key: kms.IKey,
    access_logs: s3.IBucket,
    log_prefix: str,
    **props: Any,
) -> s3.Bucket:
    """A private bucket under the data key: SSE-KMS with a bucket key, TLS only, public access
    blocked, ACLs off, server access logs to ``access_logs/log_prefix``. Every bucket of the
    system that holds data is one of these; ``props`` add what differs (lock, lifecycle...)."""
    return s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.KMS,
        encryption_key=key,
        bucket_key_enabled=True,
        enforce_ssl=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        server_access_logs_bucket=access_logs,
        server_access_logs_prefix=log_prefix,
        **props,
    )
