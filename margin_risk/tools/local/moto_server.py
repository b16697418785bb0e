"""The embedded AWS endpoint: an in-process moto server plus the resources the pipeline expects.

The same boto3 code talks to it, to a LocalStack or to real AWS; only ``AWS_ENDPOINT_URL`` differs.
`start_moto` binds a free port and returns once the server accepts requests (readiness, not sleep);
`provision` creates the tables, bucket, SNS topic and on-failure queue named in `margin_risk.names`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from margin_risk import names
from margin_risk.config import LOCAL_TOPIC_PENDING, EnforcementConfig

DEFAULT_REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


@dataclass
class MotoServer:
    """A running moto server; ``endpoint`` is what ``AWS_ENDPOINT_URL`` should hold."""

    endpoint: str
    _server: Any

    def stop(self) -> None:
        self._server.stop()


def start_moto(host: str = "127.0.0.1", port: int = 0) -> MotoServer:
    """Start moto in a daemon thread on a free port (``port=0``) and wait until it is bound."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO: thousands of lines per test run, none useful.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()  # returns after the socket is bound and the WSGI app is built
    bound_host, bound_port = server.get_host_and_port()
    return MotoServer(endpoint=f"http://{bound_host}:{bound_port}", _server=server)


def client_env(endpoint: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """The environment that points boto3 (and the Lambda code) at ``endpoint``."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        **FAKE_CREDENTIALS,
    }


@contextmanager
def patched_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, restoring the old values after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass(frozen=True)
class Provisioned:
    """What `provision` created; ``config`` has the SNS topic ARN filled in."""

    config: EnforcementConfig
    operator_topic_arn: str
    on_failure_queue_url: str
    region: str


def provision(
    endpoint: str, config: EnforcementConfig | None = None, region: str = DEFAULT_REGION
) -> Provisioned:
    """Create (idempotently) every resource the enforcement function and the demo use."""
    import boto3

    cfg = config or EnforcementConfig.local()
    creds = _session_credentials()
    session = boto3.session.Session(
        region_name=region,
        aws_access_key_id=creds.get("aws_access_key_id"),
        aws_secret_access_key=creds.get("aws_secret_access_key"),
        aws_session_token=creds.get("aws_session_token"),
    )
    ddb = session.client("dynamodb", endpoint_url=endpoint)
    existing = set(ddb.list_tables()["TableNames"])
    if cfg.state_table_name not in existing:
        ddb.create_table(
            TableName=cfg.state_table_name,
            AttributeDefinitions=[
                {"AttributeName": names.PK_ACCOUNT, "AttributeType": "S"},
                {"AttributeName": names.SK_ITEM, "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": names.PK_ACCOUNT, "KeyType": "HASH"},
                {"AttributeName": names.SK_ITEM, "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    if cfg.idempotency_table_name not in existing:
        ddb.create_table(
            TableName=cfg.idempotency_table_name,
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        ddb.update_time_to_live(
            TableName=cfg.idempotency_table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expiration"},
        )
    s3 = session.client("s3", endpoint_url=endpoint)
    # Object Lock (and so versioning) as the deployed audit bucket has: every write stays a
    # version, so a test can show that no audit object was ever written twice.
    s3.create_bucket(Bucket=cfg.audit_bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=cfg.audit_bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    sns = session.client("sns", endpoint_url=endpoint)
    topic_arn: str = sns.create_topic(Name=names.OPERATOR_TOPIC)["TopicArn"]
    sqs = session.client("sqs", endpoint_url=endpoint)
    queue_url: str = sqs.create_queue(QueueName=names.ON_FAILURE_QUEUE)["QueueUrl"]
    if cfg.operator_topic_arn == LOCAL_TOPIC_PENDING:
        cfg = cfg.model_copy(update={"operator_topic_arn": topic_arn})
    return Provisioned(cfg, topic_arn, queue_url, region)


def _session_credentials() -> dict[str, str]:
    """Fake credentials unless real ones are configured (moto accepts anything)."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return {}
    return {
        "aws_access_key_id": FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "aws_session_token": FAKE_CREDENTIALS["AWS_SESSION_TOKEN"],
    }
