"""Which AWS endpoint the integration tests talk to: the embedded moto server (default), or a
running LocalStack with ``pytest --localstack`` (found through `localstack_client`, which honours
``LOCALSTACK_HOST``, default ``localhost:4566``, and ``AWS_ENDPOINT_URL``).

Tests that need a service LocalStack's community image does not have are marked
``@pytest.mark.aws_services("emr-serverless")`` and skipped there, with the reason.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

# Not in LocalStack's community (free) image: these are Pro-only services.
LOCALSTACK_LACKS = frozenset({"athena", "emr-serverless", "glue", "kafka", "xray"})


def localstack_endpoint() -> str:
    from localstack_client.config import get_service_endpoint

    endpoint = get_service_endpoint("s3")
    if not endpoint:
        raise RuntimeError("localstack_client found no LocalStack endpoint")
    return str(endpoint).rstrip("/")


def check_localstack(endpoint: str, timeout_s: float = 3.0) -> dict[str, str]:
    """LocalStack's own health report (its services and their state), or one line saying why not."""
    url = f"{endpoint}/_localstack/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise RuntimeError(
            f"no LocalStack answers at {url} ({e}): start one, or run the tests without "
            "--localstack (the embedded moto server)"
        ) from None
    services: dict[str, str] = body.get("services", {})
    return services


def skip_reason(needed: set[str]) -> str | None:
    lacking = sorted(needed & LOCALSTACK_LACKS)
    if not lacking:
        return None
    return f"LocalStack's community image has no {', '.join(lacking)} (a Pro-only service)"
