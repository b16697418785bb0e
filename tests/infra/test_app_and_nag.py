"""The whole app: every stack synthesizes for dev and prod, cdk-nag passes, the real CLI works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from cdk_nag import AwsSolutionsChecks

from stacks import iam_allowlist
from tests.infra.conftest import REPO, Synth

pytestmark = pytest.mark.infra

PARTS = ("Network", "Streaming", "Storage", "Processing", "Enforcement", "Observability")


def test_every_stack_of_both_environments_synthesizes(synth: Synth) -> None:
    # Given the app built for dev and prod / Then all twelve templates exist
    assert synth.error is None, f"synth failed: {synth.error}"
    expected = {f"MarginRisk-{env}-{part}" for env in ("dev", "prod") for part in PARTS}
    assert set(synth.templates) == expected


def test_cdk_nag_awssolutions_reports_no_unacknowledged_error(synth: Synth) -> None:
    reports = [
        json.loads(p.read_text())
        for name in ("policy-validation-report.json", "validation-report.json")
        if (p := synth.outdir / name).exists()
    ]
    errors = [
        (v["ruleName"], [r.get("constructPath") for r in v.get("violatingConstructs", [])])
        for report in reports
        for plugin in report.get("pluginReports", [])
        for v in plugin.get("violations", [])
        if v.get("severity") == "error"
    ]
    assert synth.error is None and errors == []


def _acknowledgments(root: cdk.App) -> list[tuple[str, str, str]]:
    out = []
    for node in root.node.find_all():
        for entry in node.node.metadata:
            if entry.type == cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY and entry.data:
                for rule, reason in dict(entry.data).items():
                    out.append((node.node.path, str(rule), str(reason)))
    return out


def test_every_acknowledgment_carries_a_reviewable_reason(synth: Synth) -> None:
    acks = [a for a in _acknowledgments(synth.app) if "AwsSolutions-" in a[1]]
    assert acks, "cdk-nag acknowledgments are recorded as construct metadata"
    for path, rule, reason in acks:
        assert len(reason.split()) >= 8, f"{path} {rule}: reason too thin: {reason!r}"
    # Only these AwsSolutions rules are acknowledged wholesale; IAM4/IAM5 only per finding.
    whole_rules = {r.split("::")[-1] for _, r, _ in acks if "[" not in r}
    assert whole_rules <= {"AwsSolutions-L1", "AwsSolutions-S1", "AwsSolutions-SQS3"}


def test_an_unreviewed_wildcard_fails_the_synth(tmp_path: Path) -> None:
    # Given a stack with a role allowed s3:* on everything
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Careless")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    role.add_to_policy(iam.PolicyStatement(actions=["s3:*"], resources=["*"]))
    iam_allowlist.install(app)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    # When it is synthesized / Then cdk-nag fails it: the allow-list does not cover it
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-IAM5[Action::s3:*]", "AwsSolutions-IAM5[Resource::*]"} <= rules


def test_resource_counts_are_recorded(synth: Synth) -> None:
    counts = {name: len(t["Resources"]) for name, t in sorted(synth.templates.items())}
    print(json.dumps(counts, indent=1))
    assert all(n > 0 for n in counts.values())


def test_cdk_cli_synth_runs_offline_without_docker(tmp_path: Path) -> None:
    # Given the pinned CLI and no Docker on PATH
    cli = REPO / "node_modules" / ".bin" / "cdk"
    assert cli.exists(), "bin/setup installs the pinned CDK CLI"
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if not (Path(p) / "docker").exists()
    )
    assert shutil.which("docker", path=path) is None
    env = {
        **os.environ,
        "PATH": path,
        "CDK_DISABLE_VERSION_CHECK": "1",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
    }
    out = tmp_path / "cdk.out"
    # When `cdk synth` runs the app (local bundling, no pip download) for dev
    started = time.monotonic()
    proc = subprocess.run(
        [
            str(cli),
            "synth",
            "--quiet",
            "--no-notices",
            "--no-version-reporting",
            "-o",
            str(out),
            "-c",
            "env=dev",
            "-c",
            "skipLambdaDeps=true",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # Then it succeeds and the Lambda asset holds the handler package and the shared code
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # No construct warnings (cdk-nag warnings, deprecations, CDK advisories) in the output.
    assert "WARNING" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert len(list(out.glob("MarginRisk-dev-*.template.json"))) == 6
    handlers = list(out.glob("asset.*/lambdas/enforcement/app.py"))
    assert handlers, "the bundled Lambda asset contains lambdas/enforcement/app.py"
    assert (handlers[0].parents[2] / "margin_risk" / "names.py").exists()
    assert time.monotonic() - started < 300
