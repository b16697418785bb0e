"""One synthesis of the whole CDK app (dev and prod, cdk-nag on) for every infra test."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")

import aws_cdk as cdk

from stacks.app_builder import EnvironmentStacks, build_app, enable_cdk_nag
from stacks.config import EnvironmentConfig, load_environments

REPO = Path(__file__).resolve().parents[2]
# A house setting injected for the test, to prove MR_ settings reach the function.
TEST_HOUSE_SETTING = ("MR_POLICY__CALL_DEADLINE_SECONDS", "600")


def cdk_context() -> dict[str, Any]:
    ctx: dict[str, Any] = copy.deepcopy(json.loads((REPO / "cdk.json").read_text())["context"])
    ctx["environments"]["dev"]["house_settings"] = dict([TEST_HOUSE_SETTING])
    ctx["env"] = "dev,prod"
    ctx["skipLambdaDeps"] = "true"
    # Bundling (copying the Lambda code) is exercised by the CLI synth test; skip it here.
    ctx["aws:cdk:bundling-stacks"] = []
    return ctx


@dataclass
class Synth:
    app: cdk.App
    outdir: Path
    stacks: dict[str, EnvironmentStacks]
    configs: dict[str, EnvironmentConfig]
    templates: dict[str, dict[str, Any]]  # by stack name
    error: Exception | None

    def template(self, env: str, part: str) -> dict[str, Any]:
        return self.templates[f"MarginRisk-{env}-{part}"]

    def resources(self, env: str, part: str, rtype: str) -> dict[str, dict[str, Any]]:
        res = self.template(env, part)["Resources"]
        return {k: v for k, v in res.items() if v["Type"] == rtype}

    def one(self, env: str, part: str, rtype: str) -> tuple[str, dict[str, Any]]:
        found = self.resources(env, part, rtype)
        assert len(found) == 1, f"expected one {rtype} in {env}/{part}, got {sorted(found)}"
        return next(iter(found.items()))


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synth]:
    outdir = tmp_path_factory.mktemp("cdk.out")
    ctx = cdk_context()
    app = cdk.App(outdir=str(outdir), context=ctx)
    stacks = build_app(app)
    enable_cdk_nag(app)
    error: Exception | None = None
    try:
        app.synth()
    except Exception as exc:  # the nag report is asserted by a test, with the details
        error = exc
    templates = {
        p.name.removesuffix(".template.json"): json.loads(p.read_text())
        for p in outdir.glob("*.template.json")
    }
    yield Synth(app, outdir, stacks, load_environments(ctx["environments"]), templates, error)
