"""Session-wide fixtures: one embedded AWS endpoint (moto server) for every test that needs AWS.

`aws_endpoint` starts the server once, points boto3 at it through ``AWS_ENDPOINT_URL`` (the same
setting that selects LocalStack or real AWS), sets a region and fake credentials, and provisions
the tables, bucket, SNS topic and queue from `margin_risk.names`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from margin_risk.local.moto_server import Provisioned, client_env, provision, start_moto


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[Provisioned]:
    server = start_moto()
    env = client_env(server.endpoint)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield provision(server.endpoint)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
