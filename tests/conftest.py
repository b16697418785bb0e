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

SERVICE_FIXTURES = frozenset({"aws_endpoint", "deployment"})
TIERS = frozenset({"integration", "spark", "infra"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test lands in a selectable tier (``pytest -m unit``, ``-m "not slow"``...): a test
    that uses a service fixture is ``integration``, one with a Spark session ``spark``; whatever
    is in no tier is ``unit``; Spark, synth and the local pipeline's tests are also ``slow``."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & SERVICE_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if "spark" in names:
            item.add_marker(pytest.mark.spark)
        kinds = {m.name for m in item.iter_markers()}
        if not kinds & TIERS:
            item.add_marker(pytest.mark.unit)
        if kinds & {"spark", "infra"} or "tests/local/" in item.nodeid:
            item.add_marker(pytest.mark.slow)


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
