"""Per-environment config validation and the Docker-free Lambda bundler (no synth needed)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from margin_risk import names
from margin_risk.config import EnforcementConfig
from stacks.bundling import PythonAssetSpec, stage
from stacks.config import EnvironmentConfig, load_environments
from stacks.enforcement import ASSET_ENTRIES, REQUIREMENTS, enforcement_environment
from tests.infra.conftest import REPO

pytestmark = pytest.mark.infra


def _environments() -> dict:
    return json.loads((REPO / "cdk.json").read_text())["context"]["environments"]


def test_cdk_json_defines_valid_dev_and_prod() -> None:
    envs = load_environments(_environments())
    assert set(envs) == {"dev", "prod"}
    assert envs["prod"].storage.audit_lock_mode == "COMPLIANCE"
    assert envs["dev"].storage.audit_lock_mode == "GOVERNANCE"
    assert envs["prod"].storage.deletion_protection is True
    assert envs["prod"].alarm_email


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"msk": {"topics": {"orders.v1": {"partitions": 1, "retention_hours": 1}}}}, "unknown"),
        ({"msk": {"broker_count": 3}}, "multiple"),
        ({"house_settings": {"LONG_RATE": "0.3"}}, "MR_"),
        ({"enforcement": {"retry_attempts": 11}}, "less than or equal"),
        ({"storage": {"audit_glacier_ir_days": 20}}, "greater than or equal"),
        ({"surprise": 1}, "Extra inputs"),
        ({"enforcement": {"reserved_concurrency": 17}}, "below the 18 partitions"),
    ],
)
def test_bad_environment_config_fails_with_a_clear_message(patch: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EnvironmentConfig(name="x", **patch)


def test_enforcement_environment_never_reads_the_synth_machines_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a stray variable on the machine that runs `cdk synth`
    monkeypatch.setenv("DECISIONS_TOPIC", "someone-elses-topic")
    # When the stack renders the function environment
    env = enforcement_environment(**RESOURCES)
    # Then the default from the contract is used, not the stray variable
    assert env["DECISIONS_TOPIC"] == names.TOPIC_MARGIN_CALLS
    with pytest.raises(ValueError, match="not EnforcementConfig fields"):
        enforcement_environment(no_such_field="x", **RESOURCES)
    # And a resource the stack forgot stops the synth, naming it
    with pytest.raises(ValidationError, match="audit_bucket"):
        enforcement_environment(**{k: v for k, v in RESOURCES.items() if k != "audit_bucket"})


RESOURCES = {
    "state_table_name": "t",
    "idempotency_table_name": "i",
    "audit_bucket": "b",
    "operator_topic_arn": "arn:aws:sns:us-east-1:123456789012:ops",
    "kafka_bootstrap": "b-1.example:9098",
}


@pytest.mark.parametrize("missing", ["STATE_TABLE_NAME", "AUDIT_BUCKET", "OPERATOR_TOPIC_ARN"])
def test_the_function_fails_fast_when_a_resource_variable_is_missing(monkeypatch, missing) -> None:
    # Given the function's environment as the stack renders it, minus one resource variable
    env = enforcement_environment(**RESOURCES)
    for key in EnforcementConfig.env_keys():
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key != missing:
            monkeypatch.setenv(key, value)
    # When the function builds its configuration at cold start, it stops naming the variable
    with pytest.raises(ValidationError, match=missing.lower()):
        EnforcementConfig()
    # while the complete environment builds it
    monkeypatch.setenv(missing, env[missing])
    assert EnforcementConfig().audit_bucket == "b"


def test_pip_command_fetches_binary_wheels_for_the_lambda_platform() -> None:
    spec = PythonAssetSpec(ASSET_ENTRIES, REQUIREMENTS, "arm64", skip_deps=False)
    cmd = spec.pip_command("/out")
    assert "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12"
    assert cmd[cmd.index("--target") + 1] == "/out"
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert "manylinux2014_aarch64" in platforms and all("aarch64" in p for p in platforms)
    x86 = PythonAssetSpec(ASSET_ENTRIES, REQUIREMENTS, "x86_64", skip_deps=False)
    assert "manylinux2014_x86_64" in x86.pip_command("/out")


def test_asset_hash_tracks_code_platform_and_the_skip_flag() -> None:
    a = PythonAssetSpec(ASSET_ENTRIES, REQUIREMENTS, "arm64", skip_deps=False)
    assert (
        a.source_hash()
        == PythonAssetSpec(ASSET_ENTRIES, REQUIREMENTS, "arm64", False).source_hash()
    )
    assert (
        a.source_hash() != PythonAssetSpec(ASSET_ENTRIES, REQUIREMENTS, "arm64", True).source_hash()
    )
    assert (
        a.source_hash()
        != PythonAssetSpec(ASSET_ENTRIES, REQUIREMENTS, "x86_64", False).source_hash()
    )


def test_staged_code_imports_the_handler_from_the_asset_root(tmp_path: Path) -> None:
    # Given the asset staged without dependencies
    stage(PythonAssetSpec(ASSET_ENTRIES, REQUIREMENTS, "arm64", skip_deps=True), tmp_path)
    # Then the handler's module path resolves inside the asset root
    assert (tmp_path / "lambdas" / "__init__.py").exists()
    assert (tmp_path / "lambdas" / "enforcement" / "app.py").exists()
    assert (tmp_path / "margin_risk" / "config.py").exists()
    assert not list(tmp_path.rglob("__pycache__"))
    # And the staged shared module is the same code as the repository's
    sys.path.insert(0, str(tmp_path))
    try:
        spec = importlib.util.spec_from_file_location(
            "staged_names", tmp_path / "margin_risk/names.py"
        )
        assert spec and spec.loader
        staged = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(staged)
        assert staged.ON_FAILURE_QUEUE == names.ON_FAILURE_QUEUE
    finally:
        sys.path.remove(str(tmp_path))


def test_staging_a_missing_entry_module_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="do not exist"):
        stage(PythonAssetSpec(("no_such_pkg.app",), None, "arm64", skip_deps=True), tmp_path)


def test_the_lambda_asset_is_the_handlers_import_closure_and_no_tool(tmp_path: Path) -> None:
    # Given the enforcement asset staged without dependencies
    stage(PythonAssetSpec(ASSET_ENTRIES, REQUIREMENTS, "arm64", skip_deps=True), tmp_path)
    shipped = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.py")}
    # Then it holds the handler and the core it runs on...
    for needed in (
        "lambdas/enforcement/app.py",
        "margin_risk/usecase/service.py",
        "margin_risk/enforcement.py",
    ):
        assert needed in shipped
    # ...and none of the local tools: no CLI, demo, stand-ins, health report or benchmark
    assert not {s for s in shipped if s.startswith(("margin_risk/tools/", "bench/", "tests/"))}
    for tool in (
        "margin_risk/tools/cli.py",
        "margin_risk/tools/health.py",
        "margin_risk/__main__.py",
    ):
        assert tool not in shipped
    # And in a fresh interpreter that sees only the asset (and the installed dependencies),
    # the handler imports without pulling in moto, DuckDB, Spark or the CDK
    probe = (
        "import sys, lambdas.enforcement.app; "
        "print(sorted(m for m in ('moto', 'duckdb', 'pyspark', 'aws_cdk', 'margin_risk.tools.cli') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "AWS_DEFAULT_REGION": "us-east-1"}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "lambdas" / "enforcement" / "app.py").read_bytes() == (
        REPO / "lambdas" / "enforcement" / "app.py"
    ).read_bytes()


def test_emr_artifacts_are_an_entry_point_and_a_zip_with_the_job_package(tmp_path: Path) -> None:
    import zipfile

    from stacks.processing import stage_emr_artifacts

    staged = stage_emr_artifacts(tmp_path)
    assert staged.entrypoint.suffix == ".py" and staged.entrypoint.exists()
    with zipfile.ZipFile(staged.pyfiles_zip) as zf:
        members = set(zf.namelist())
    assert "emr_jobs/__init__.py" in members
    assert "margin_risk/params.py" in members
