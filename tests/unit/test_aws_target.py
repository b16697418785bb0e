"""`pytest --localstack`: the integration tests against a running LocalStack instead of moto.

No LocalStack runs on this machine (no Docker), so what is tested here is the switch itself: the
endpoint comes from `localstack_client`, a missing LocalStack is one clear line, and a test that
needs a Pro-only service is skipped with the reason. The suite against a live LocalStack is the
README's command, not run here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws_target import check_localstack, localstack_endpoint, skip_reason

ROOT = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_skip_reason_names_only_what_the_community_image_lacks() -> None:
    assert skip_reason({"s3", "dynamodb"}) is None
    assert skip_reason({"s3", "emr-serverless"}) == (
        "LocalStack's community image has no emr-serverless (a Pro-only service)"
    )


def test_the_endpoint_comes_from_localstack_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("LOCALSTACK_HOST", "127.0.0.1:4599")
    assert localstack_endpoint() == "http://127.0.0.1:4599"
    monkeypatch.delenv("LOCALSTACK_HOST")
    assert localstack_endpoint() == "http://localhost:4566"


def test_no_localstack_is_one_line_saying_what_to_do() -> None:
    with pytest.raises(RuntimeError) as e:
        check_localstack(f"http://127.0.0.1:{_closed_port()}", timeout_s=1)
    assert "no LocalStack answers at" in str(e.value) and "without --localstack" in str(e.value)
    assert "\n" not in str(e.value)


def test_pytest_localstack_skips_pro_only_services_and_needs_a_running_localstack() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env["LOCALSTACK_HOST"] = f"127.0.0.1:{_closed_port()}"
    tests = [
        "tests/infra/test_start_job.py::test_the_request_is_accepted_by_the_emr_serverless_api",
        "tests/unit/test_cli.py::test_rebuild_state_reports_an_unreadable_s3_prefix_in_one_line",
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rs",
            "--localstack",
            *tests,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "LocalStack's community image has no emr-serverless" in text
    assert "no LocalStack answers at http://127.0.0.1:" in text
    # the S3 test's two cases need the endpoint: both error with that line, none runs on moto
    assert "1 skipped" in text and "2 errors" in text
