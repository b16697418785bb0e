"""The one command that (re)starts the streaming job run, against an in-memory EMR fake."""

from __future__ import annotations

from typing import Any

import pytest

from margin_risk import names
from stacks.start_job import job_run_request, stop_live_runs

OUTPUTS = {
    "ApplicationId": "app-1",
    "JobRoleArn": "arn:aws:iam::123456789012:role/job",
    "EntryPointUri": "s3://assets/entry.py",
    "PyFilesUri": "s3://assets/pyfiles.zip",
    "CheckpointUri": "s3://ckpt/checkpoints/",
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
    args = submit["entryPointArguments"]
    assert args[args.index("--bootstrap-servers") + 1] == "b-1:9098,b-2:9098"
    assert args[args.index("--checkpoint") + 1] == OUTPUTS["CheckpointUri"]


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
