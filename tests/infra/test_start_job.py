"""The one command that (re)starts the streaming job run, against an in-memory EMR fake."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from emr_jobs import entrypoint
from margin_risk import names
from margin_risk.params import MarginParams
from stacks.start_job import (
    dedupe_horizon_hours,
    house_margin_params_json,
    job_run_request,
    stop_live_runs,
)

REPO = Path(__file__).resolve().parents[2]

OUTPUTS = {
    "ApplicationId": "app-1",
    "JobRoleArn": "arn:aws:iam::123456789012:role/job",
    "EntryPointUri": "s3://assets/entry.py",
    "PyFilesUri": "s3://assets/pyfiles.zip",
    "CheckpointUri": "s3://ckpt/checkpoints/",
    "HistoryUri": "s3://ckpt/history/",
}


class FakeEmr:
    """Job runs in memory; a cancelled run stops after one more poll."""

    def __init__(self, runs: dict[str, tuple[str, str]]) -> None:
        self.runs = dict(runs)  # id -> (name, state)
        self.cancelled: list[str] = []

    def list_job_runs(self, **kw: Any) -> dict[str, Any]:
        states = set(kw["states"])
        return {
            "jobRuns": [
                {"id": i, "name": n, "state": s} for i, (n, s) in self.runs.items() if s in states
            ]
        }

    def cancel_job_run(self, **kw: Any) -> dict[str, Any]:
        name, _ = self.runs[kw["jobRunId"]]
        self.runs[kw["jobRunId"]] = (name, "CANCELLING")
        self.cancelled.append(kw["jobRunId"])
        return {}

    def get_job_run(self, **kw: Any) -> dict[str, Any]:
        name, state = self.runs[kw["jobRunId"]]
        if state == "CANCELLING":
            self.runs[kw["jobRunId"]] = (name, "CANCELLED")
        return {"jobRun": {"state": state}}

    def start_job_run(self, **kw: Any) -> dict[str, Any]:
        return {"jobRunId": "new"}


def test_request_is_a_streaming_run_with_the_deployed_code_and_checkpoint() -> None:
    req = job_run_request(OUTPUTS, "b-1:9098,b-2:9098", client_token="t")
    assert req["mode"] == "STREAMING"
    assert req["name"] == names.EMR_JOB_NAME
    assert req["applicationId"] == "app-1"
    assert req["executionRoleArn"] == OUTPUTS["JobRoleArn"]
    assert req["retryPolicy"] == {"maxFailedAttemptsPerHour": 5}
    submit = req["jobDriver"]["sparkSubmit"]
    assert submit["entryPoint"] == OUTPUTS["EntryPointUri"]
    assert "spark.submit.pyFiles=s3://assets/pyfiles.zip" in submit["sparkSubmitParameters"]
    # The arguments are the entry point's own: the job would die on an unknown flag
    args = entrypoint.parse_args(submit["entryPointArguments"])
    assert args.bootstrap == "b-1:9098,b-2:9098"
    assert args.checkpoint_dir == OUTPUTS["CheckpointUri"]
    assert args.history_dir == OUTPUTS["HistoryUri"]  # the margin history in the data bucket
    assert args.no_iam is False  # MSK IAM
    assert args.params_json is None
    assert args.dedupe_horizon_hours == 168  # the entry point's default


def test_the_job_remembers_applied_ids_as_long_as_the_input_topics_keep_them(tmp_path) -> None:
    ctx = json.loads((REPO / "cdk.json").read_text())
    msk = ctx["context"]["environments"]["prod"].setdefault("msk", {})
    msk["topics"] = {"cash.v1": {"partitions": 6, "retention_hours": 336}}
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps(ctx))
    hours = dedupe_horizon_hours("prod", cdk_json)
    assert hours == 336  # the longer of fills.v1 (default 168) and cash.v1
    req = job_run_request(OUTPUTS, "b:9098", client_token="t", dedupe_horizon_hours=hours)
    args = entrypoint.parse_args(req["jobDriver"]["sparkSubmit"]["entryPointArguments"])
    assert args.dedupe_horizon_hours == 336


def test_the_environments_house_margin_settings_reach_the_job(tmp_path, monkeypatch) -> None:
    ctx = json.loads((REPO / "cdk.json").read_text())
    ctx["context"]["environments"]["dev"]["house_settings"] = {
        "MR_MARGIN__LONG_RATE": "0.30",
        "MR_POLICY__CALL_DEADLINE_SECONDS": "600",  # a Lambda-only setting: not the job's
    }
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps(ctx))
    monkeypatch.setenv("MR_MARGIN__SHORT_RATE", "0.99")  # the operator's shell must not leak in
    params_json = house_margin_params_json("dev", cdk_json)
    req = job_run_request(OUTPUTS, "b:9098", client_token="t", params_json=params_json)
    args = entrypoint.parse_args(req["jobDriver"]["sparkSubmit"]["entryPointArguments"])
    params = MarginParams.from_json(args.params_json)
    assert params.long_rate == Decimal("0.30")
    assert params.short_rate == MarginParams().short_rate == Decimal("0.30")
    assert os.environ["MR_MARGIN__SHORT_RATE"] == "0.99"  # and the shell is left as it was
    assert "MR_MARGIN__LONG_RATE" not in os.environ


def test_live_runs_of_the_job_are_cancelled_before_a_new_start() -> None:
    emr = FakeEmr(
        {
            "old": (names.EMR_JOB_NAME, "RUNNING"),
            "done": (names.EMR_JOB_NAME, "SUCCESS"),
            "other": ("someone-elses-job", "RUNNING"),
        }
    )
    assert stop_live_runs(emr, "app-1", poll_s=0) == ["old"]
    assert emr.runs["old"][1] == "CANCELLED"
    assert emr.runs["other"][1] == "RUNNING"


def test_a_run_that_will_not_stop_times_out() -> None:
    class Stuck(FakeEmr):
        def get_job_run(self, **kw: Any) -> dict[str, Any]:
            return {"jobRun": {"state": "CANCELLING"}}

    with pytest.raises(TimeoutError):
        stop_live_runs(Stuck({"old": (names.EMR_JOB_NAME, "RUNNING")}), "a", timeout_s=0, poll_s=0)


@pytest.mark.aws_services("emr-serverless")
def test_the_request_is_accepted_by_the_emr_serverless_api(aws_endpoint) -> None:
    """The embedded endpoint validates the request's shape (moto's runs finish at once, so the
    live-run cancelling above needs the fake)."""
    import boto3

    emr = boto3.client("emr-serverless")
    app = emr.create_application(name="margin", releaseLabel="emr-7.10.0", type="SPARK")
    outputs = {**OUTPUTS, "ApplicationId": app["applicationId"]}
    params_json = house_margin_params_json("dev")
    run = emr.start_job_run(**job_run_request(outputs, "b-1:9098", params_json=params_json))
    got = emr.get_job_run(applicationId=app["applicationId"], jobRunId=run["jobRunId"])["jobRun"]
    assert got["name"] == names.EMR_JOB_NAME
    args = entrypoint.parse_args(got["jobDriver"]["sparkSubmit"]["entryPointArguments"])
    assert MarginParams.from_json(args.params_json) == MarginParams()


def test_the_run_asks_for_the_kafka_connector_of_the_jobs_spark_version() -> None:
    import pyspark

    from emr_jobs.kafka_io import SPARK_PACKAGES

    submit = job_run_request(OUTPUTS, "b:9098", client_token="t")["jobDriver"]["sparkSubmit"]
    assert f"spark.jars.packages={','.join(SPARK_PACKAGES)}" in submit["sparkSubmitParameters"]
    connector = next(p for p in SPARK_PACKAGES if ":spark-sql-kafka-" in p)
    # the connector must match the Spark of the release (pyspark is pinned to it)
    assert connector.rsplit(":", 1)[1] == pyspark.__version__
    assert any(p.startswith("software.amazon.msk:aws-msk-iam-auth:") for p in SPARK_PACKAGES)
