"""Fixtures of the enforcement-Lambda tier: a fresh deployment per test on the shared moto server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lambdas.enforcement.runtime import reset_runtime
from margin_risk.tools.local.moto_server import Provisioned

from .harness import Deployment, Feed


@pytest.fixture
def deployment(
    aws_endpoint: Provisioned, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> Iterator[Deployment]:
    d = Deployment(aws_endpoint, tmp_path / "metrics")
    for k, v in d.env.items():
        monkeypatch.setenv(k, v)
    reset_runtime()
    yield d
    reset_runtime()


@pytest.fixture
def feed() -> Feed:
    return Feed()
