"""Session-wide fixtures: one AWS endpoint for every test that needs AWS.

By default `aws_endpoint` starts the embedded moto server once; with ``pytest --localstack`` it
uses a running LocalStack instead (`tests.aws_target`). Either way it points boto3 at the endpoint
through ``AWS_ENDPOINT_URL`` (the same setting that selects LocalStack or real AWS for the code),
sets a region and fake credentials, and provisions the tables, bucket, SNS topic and queue from
`margin_risk.names`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

from margin_risk.tools.local.moto_server import (
    Provisioned,
    client_env,
    patched_env,
    provision,
    start_moto,
)
from tests.aws_target import check_localstack, localstack_endpoint, skip_reason


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--localstack",
        action="store_true",
        help="run the AWS integration tests against a running LocalStack (LOCALSTACK_HOST, "
        "default localhost:4566) instead of the embedded moto server",
    )


# No per-example deadline: on two cores shared with Spark and synth, an example that takes 0.5 ms
# alone can take 300 ms; these tests assert behaviour, and speed belongs in bench/.
settings.register_profile("repo", deadline=None)
settings.load_profile("repo")

SERVICE_FIXTURES = frozenset({"aws_endpoint", "deployment"})
TIERS = frozenset({"integration", "spark", "infra"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test lands in a selectable tier (``pytest -m unit``, ``-m "not slow"``...): a test
    that uses a service fixture is ``integration``, one with a Spark session ``spark``; whatever
    is in no tier is ``unit``; Spark, synth and the local pipeline's tests are also ``slow``.
    With ``--localstack``, a test needing a service the community image lacks is skipped."""
    for item in items:
        _assign_tier(item)
    if not config.getoption("--localstack"):
        return
    for item in items:
        marker = item.get_closest_marker("aws_services")
        reason = skip_reason(set(marker.args)) if marker else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _assign_tier(item: pytest.Item) -> None:
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
def aws_endpoint(request: pytest.FixtureRequest) -> Iterator[Provisioned]:
    server = None
    if request.config.getoption("--localstack"):
        endpoint = localstack_endpoint()
        check_localstack(endpoint)
    else:
        server = start_moto()
        endpoint = server.endpoint
    try:
        with patched_env(client_env(endpoint)):
            yield provision(endpoint)
    finally:
        if server is not None:
            server.stop()
