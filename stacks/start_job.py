"""Start (or restart) the streaming Spark job run: `python -m stacks.start_job --env dev`.

`--stop` only cancels the live run (do it before `cdk destroy`).

Reads the deployed stacks' outputs, cancels any live run of the job (two runs must never share
one checkpoint), waits for it to stop, then starts one `STREAMING` job run. EMR Serverless
(7.1.0+) restarts a failed streaming run from its checkpoint, at most `--max-failures-per-hour`
times an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from emr_jobs.kafka_io import SPARK_PACKAGES
from margin_risk import names
from margin_risk.settings import load_house_settings
from stacks.config import CONTEXT_ENVIRONMENTS, load_environments, stack_name

CDK_JSON = Path(__file__).resolve().parents[1] / "cdk.json"

LIVE_STATES = frozenset({"SUBMITTED", "PENDING", "SCHEDULED", "RUNNING", "QUEUED", "CANCELLING"})


class EmrServerless(Protocol):
    def list_job_runs(self, **kwargs: Any) -> dict[str, Any]: ...
    def cancel_job_run(self, **kwargs: Any) -> dict[str, Any]: ...
    def get_job_run(self, **kwargs: Any) -> dict[str, Any]: ...
    def start_job_run(self, **kwargs: Any) -> dict[str, Any]: ...


def job_run_request(
    processing: Mapping[str, str],
    bootstrap_servers: str,
    *,
    max_failures_per_hour: int = 5,
    client_token: str | None = None,
    params_json: str | None = None,
    dedupe_horizon_hours: int | None = None,
) -> dict[str, Any]:
    """The StartJobRun request, from the processing stack's outputs and the bootstrap string.

    The arguments are `emr_jobs.entrypoint.parse_args`'s (a test parses them with it): MSK IAM
    is the entry point's default, and ``params_json`` carries the environment's house margin
    settings, so the job computes with the same rates as the Lambda's MR_ variables."""
    submit = " ".join(
        [
            f"--conf spark.submit.pyFiles={processing['PyFilesUri']}",
            f"--conf spark.jars.packages={','.join(SPARK_PACKAGES)}",
            "--conf spark.sql.session.timeZone=UTC",
        ]
    )
    return {
        "applicationId": processing["ApplicationId"],
        "executionRoleArn": processing["JobRoleArn"],
        "name": names.EMR_JOB_NAME,
        "mode": "STREAMING",
        "retryPolicy": {"maxFailedAttemptsPerHour": max_failures_per_hour},
        "clientToken": client_token or str(uuid.uuid4()),
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": processing["EntryPointUri"],
                "entryPointArguments": [
                    "--bootstrap",
                    bootstrap_servers,
                    "--checkpoint-dir",
                    processing["CheckpointUri"],
                    # The margin history (margin_risk.archive), beside the checkpoint.
                    *(
                        ["--history-dir", processing["HistoryUri"]]
                        if "HistoryUri" in processing
                        else []
                    ),
                    *(["--params-json", params_json] if params_json else []),
                    *(
                        ["--dedupe-horizon-hours", str(dedupe_horizon_hours)]
                        if dedupe_horizon_hours is not None
                        else []
                    ),
                ],
                "sparkSubmitParameters": submit,
            }
        },
    }


def house_margin_params_json(env: str, cdk_json: Path = CDK_JSON) -> str:
    """The margin parameters of one environment: the house defaults with that environment's
    ``house_settings`` (the MR_ variables the Lambda gets) applied, as the job's --params-json."""
    context = json.loads(cdk_json.read_text(encoding="utf-8"))["context"]
    cfg = load_environments(context.get(CONTEXT_ENVIRONMENTS))[env]
    overrides = {k: v for k, v in cfg.house_settings.items() if k.startswith("MR_MARGIN__")}
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MR_")}
    try:
        os.environ.update(overrides)
        return load_house_settings().margin.to_params().to_json()
    finally:
        for k in overrides:
            os.environ.pop(k, None)
        os.environ.update(saved)


def dedupe_horizon_hours(env: str, cdk_json: Path = CDK_JSON) -> int:
    """The retention of the fills and cash topics in one environment: the job remembers applied
    ids as long as Kafka could redeliver the records that carried them."""
    context = json.loads(cdk_json.read_text(encoding="utf-8"))["context"]
    msk = load_environments(context.get(CONTEXT_ENVIRONMENTS))[env].msk
    return max(msk.topic(t).retention_hours for t in (names.TOPIC_FILLS, names.TOPIC_CASH))


def stop_live_runs(
    client: EmrServerless, application_id: str, *, timeout_s: float = 900, poll_s: float = 10
) -> list[str]:
    """Cancel every live run of the job and wait until none is live. Returns the cancelled ids."""
    live = [
        r["id"]
        for page in [client.list_job_runs(applicationId=application_id, states=sorted(LIVE_STATES))]
        for r in page.get("jobRuns", [])
        if r.get("name") == names.EMR_JOB_NAME
    ]
    for run_id in live:
        client.cancel_job_run(applicationId=application_id, jobRunId=run_id)
    deadline = time.monotonic() + timeout_s
    pending = list(live)
    while pending:
        pending = [
            run_id
            for run_id in pending
            if client.get_job_run(applicationId=application_id, jobRunId=run_id)["jobRun"]["state"]
            in LIVE_STATES
        ]
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"job runs still live after {timeout_s:.0f}s: {pending}")
        if pending:
            time.sleep(poll_s)
    return live


def stack_outputs(cloudformation: Any, name: str) -> dict[str, str]:
    (stack,) = cloudformation.describe_stacks(StackName=name)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="dev")
    parser.add_argument("--region", default=None)
    parser.add_argument("--max-failures-per-hour", type=int, default=5)
    parser.add_argument(
        "--stop", action="store_true", help="only cancel live runs (before destroy)"
    )
    args = parser.parse_args(argv)

    import boto3

    session = boto3.Session(region_name=args.region)
    cfn = session.client("cloudformation")
    processing = stack_outputs(cfn, stack_name(args.env, "Processing"))
    emr = session.client("emr-serverless")
    cancelled = stop_live_runs(emr, processing["ApplicationId"])
    if args.stop:
        print(f"cancelled {cancelled or 'none'}")
        return 0
    streaming = stack_outputs(cfn, stack_name(args.env, "Streaming"))
    request = job_run_request(
        processing,
        streaming["BootstrapServers"],
        max_failures_per_hour=args.max_failures_per_hour,
        params_json=house_margin_params_json(args.env),
        dedupe_horizon_hours=dedupe_horizon_hours(args.env),
    )
    run = emr.start_job_run(**request)
    print(f"cancelled {cancelled or 'none'}; started job run {run['jobRunId']} (STREAMING)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
