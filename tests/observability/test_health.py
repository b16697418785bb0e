"""The pipeline health report, from local EMF files and from CloudWatch (moto)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from dashboards import specs
from margin_risk import names
from margin_risk.tools.cli import main
from margin_risk.tools.cloudwatch_source import CloudWatchSource
from margin_risk.tools.health import HealthReport, StageHealth, build_report, local_report
from tests.observability.emf import hand_emf, powertools_emf, simulated_run, write_run


def _stages(report: HealthReport) -> dict[str, StageHealth]:
    return {s.stage: s for s in report.stages}


def test_a_steady_run_is_healthy_with_every_stage_active(tmp_path: Path) -> None:
    report = local_report(write_run(tmp_path, simulated_run(minutes=20)))
    assert report.healthy
    assert [s.status for s in report.stages] == ["OK"] * 4
    assert [s.stage for s in report.stages] == [
        "inputs",
        "spark margin results",
        "enforcement decisions",
        "audit objects",
    ]
    inputs = report.stages[0]
    assert inputs.count > 0 and inputs.rate_per_min == pytest.approx(inputs.count / 10)
    assert inputs.lag_seconds is not None and inputs.lag_seconds < 60


def test_results_stopping_while_inputs_arrive_is_a_stall_naming_the_rule(tmp_path: Path) -> None:
    report = local_report(write_run(tmp_path, simulated_run(minutes=20, stall_results_after_min=8)))
    st = _stages(report)
    results = st["spark margin results"]
    assert not report.healthy
    assert results.status == "STALLED"
    assert "inputs produced" in results.rule and "MarginResults = 0" in results.rule
    assert results.lag_seconds >= 11 * 60
    assert st["inputs"].status == "OK"


def test_a_stall_older_than_the_window_still_shows_in_lag_but_recent_one_decides(
    tmp_path: Path,
) -> None:
    # results stop 3 minutes before the end: still inside the window, so not stalled yet
    report = local_report(
        write_run(tmp_path, simulated_run(minutes=20, stall_results_after_min=17))
    )
    assert _stages(report)["spark margin results"].status == "OK"


def test_latency_over_the_critical_kpi_degrades_enforcement(tmp_path: Path) -> None:
    run = write_run(tmp_path, simulated_run(minutes=12, latency_ms=(31_000.0, 45_000.0)))
    enf = _stages(local_report(run))["enforcement decisions"]
    assert enf.status == "DEGRADED"
    assert "e2e p99" in enf.rule and "30000 ms" in enf.rule


def test_latency_over_the_warning_kpi_warns_but_stays_healthy(tmp_path: Path) -> None:
    report = local_report(
        write_run(tmp_path, simulated_run(minutes=12, latency_ms=(12_000.0, 20_000.0)))
    )
    assert _stages(report)["enforcement decisions"].status == "WARNING"
    assert report.healthy


def test_error_rate_over_one_percent_degrades_enforcement(tmp_path: Path) -> None:
    base = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)
    objs = []
    for i in range(10):
        ts = int((base + timedelta(minutes=i)).timestamp() * 1000)
        objs.append(
            hand_emf(ts, {names.METRIC_INPUT_RECORDS: 100, names.METRIC_MARGIN_RESULTS: 50})
        )
        objs.append(
            hand_emf(
                ts + 1000,
                {names.METRIC_RECORDS_PROCESSED: 97, names.METRIC_RECORDS_FAILED: 3},
                service=names.SERVICE_ENFORCEMENT,
            )
        )
    enf = _stages(local_report(write_run(tmp_path, objs)))["enforcement decisions"]
    assert enf.status == "DEGRADED"
    assert enf.details["error_rate_pct"] == pytest.approx(3.0)


def test_decisions_without_audit_objects_stall_the_audit_stage(tmp_path: Path) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    objs = [
        powertools_emf(
            1_771_252_200_000 + i * 60_000,
            {
                names.METRIC_RECORDS_PROCESSED: (MetricUnit.Count, [10.0]),
                names.METRIC_MARGIN_CALLS_ISSUED: (MetricUnit.Count, [2.0]),
            },
        )
        for i in range(5)
    ]
    audit = _stages(local_report(write_run(tmp_path, objs)))["audit objects"]
    assert audit.status == "STALLED"
    assert "enforcement decisions produced 10" in audit.rule


def test_no_metrics_at_all_is_unknown_not_healthy(tmp_path: Path) -> None:
    (tmp_path / "metrics").mkdir()
    report = local_report(tmp_path)
    assert report.verdict == "UNKNOWN" and not report.healthy
    assert {s.status for s in report.stages} == {"UNKNOWN"}
    assert "no data for InputRecords" in report.stages[0].rule


@pytest.mark.parametrize("layout", ["empty", "not_emf", "missing_metrics"])
def test_cli_health_on_an_empty_or_wrong_dir_answers_unknown_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    if layout == "not_emf":  # e.g. an audit directory given by mistake
        (tmp_path / "batch-1.jsonl").write_text('{"event_id": "e1"}\nnot json\n', "utf-8")
    elif layout == "missing_metrics":
        (tmp_path / "notes.txt").write_text("no metrics here", "utf-8")
    code = main(["health", "--metrics-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 3
    assert out == ""
    assert err.startswith("health: UNKNOWN: no metric datapoints in ")
    assert len(err.strip().splitlines()) == 1


def test_a_stage_without_any_data_is_unknown_and_the_cli_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    # Only the enforcement function reports: nothing says whether inputs and Spark move.
    objs = [
        powertools_emf(
            1_771_252_200_000 + i * 60_000,
            {
                names.METRIC_RECORDS_PROCESSED: (MetricUnit.Count, [10.0]),
                names.METRIC_AUDIT_OBJECTS: (MetricUnit.Count, [1.0]),
            },
        )
        for i in range(5)
    ]
    run = write_run(tmp_path, objs)
    st = _stages(local_report(run))
    assert st["inputs"].status == "UNKNOWN"
    assert st["spark margin results"].status == "UNKNOWN"
    assert st["enforcement decisions"].status == "OK"
    assert st["audit objects"].status == "OK"
    code = main(["health", "--metrics-dir", str(run), "--json"])
    out, err = capsys.readouterr()
    assert code == 3
    doc = json.loads(out)
    assert doc["verdict"] == "UNKNOWN" and doc["healthy"] is False
    assert err.startswith("health: UNKNOWN: inputs: no data for InputRecords")
    assert "spark margin results: no data" in err and len(err.strip().splitlines()) == 1


def test_a_quiet_audit_stage_is_idle_while_the_enforcement_function_reports(
    tmp_path: Path,
) -> None:
    from aws_lambda_powertools.metrics import MetricUnit

    # Records processed, no decisions: no audit object is due, and the stage is known to be idle.
    objs = [
        powertools_emf(
            1_771_252_200_000 + i * 60_000,
            {names.METRIC_RECORDS_PROCESSED: (MetricUnit.Count, [10.0])},
        )
        for i in range(5)
    ]
    assert _stages(local_report(write_run(tmp_path, objs)))["audit objects"].status == "IDLE"


def test_hostile_metric_lines_are_skipped_not_a_crash(tmp_path: Path) -> None:
    run = write_run(
        tmp_path,
        simulated_run(minutes=3),
        extra_lines=[
            "[" * 100_000,
            "1" * 5_000,
            json.dumps(hand_emf(10**300, {names.METRIC_INPUT_RECORDS: 5.0})),
        ],
    )
    report = local_report(run)
    assert report.verdict == "HEALTHY"


def test_cli_health_prints_json_and_exits_2_when_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path, simulated_run(minutes=20, stall_results_after_min=5))
    code = main(["health", "--metrics-dir", str(run), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 2
    assert doc["healthy"] is False
    assert [s["status"] for s in doc["stages"]][:2] == ["OK", "STALLED"]
    assert doc["window_minutes"] == specs.STALL_MINUTES


def test_cli_health_text_exits_0_when_healthy_and_1_on_a_missing_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path, simulated_run(minutes=3))
    assert main(["health", "--metrics-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert "HEALTHY" in out and "spark margin results" in out
    assert main(["health", "--metrics-dir", str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err


def test_cloudwatch_source_feeds_the_same_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        cw = boto3.client("cloudwatch", region_name="us-east-1")
        now = datetime.now(UTC).replace(microsecond=0)
        spark_dims = [{"Name": "service", "Value": names.SERVICE_SPARK}]
        enf_dims = [{"Name": "service", "Value": names.SERVICE_ENFORCEMENT}]
        for minutes_ago in range(1, 9):
            ts = now - timedelta(minutes=minutes_ago)
            data = [
                {
                    "MetricName": names.METRIC_INPUT_RECORDS,
                    "Dimensions": spark_dims,
                    "Value": 400.0,
                },
                {"MetricName": names.METRIC_MARGIN_RESULTS, "Dimensions": spark_dims, "Value": 0.0},
            ]
            for d in data:
                d["Timestamp"] = ts
            cw.put_metric_data(Namespace=names.METRICS_NAMESPACE, MetricData=data)
        # results and decisions flowed earlier, then stopped
        old = now - timedelta(minutes=30)
        cw.put_metric_data(
            Namespace=names.METRICS_NAMESPACE,
            MetricData=[
                {"MetricName": names.METRIC_MARGIN_RESULTS, "Dimensions": spark_dims, "Value": 50.0, "Timestamp": old},
                {"MetricName": names.METRIC_RECORDS_PROCESSED, "Dimensions": enf_dims, "Value": 50.0, "Timestamp": old},
            ],
        )  # fmt: skip
        report = build_report(CloudWatchSource(client=cw), now)
        # and a second cluster view: producers write, the Spark job reads nothing (MSK publishes
        # MessagesInPerSec per broker at every monitoring level)
        msk = [{"Name": "Cluster Name", "Value": names.MSK_CLUSTER}]
        cw.put_metric_data(
            Namespace="AWS/Kafka",
            MetricData=[
                {
                    "MetricName": "MessagesInPerSec",
                    "Dimensions": [*msk, {"Name": "Broker ID", "Value": "2"}],
                    "Value": 12.0,
                    "Timestamp": now + timedelta(minutes=15),
                }
            ],
        )
        dead = build_report(
            CloudWatchSource(client=cw, resources={"msk_cluster_name": names.MSK_CLUSTER}),
            now + timedelta(minutes=20),
        )
    (inp, *_) = dead.stages
    assert inp.status == "STALLED" and "Kafka brokers" in inp.rule
    st = _stages(report)
    assert report.source == "CloudWatch"
    assert st["inputs"].status == "OK" and st["inputs"].count == 3200
    assert st["spark margin results"].status == "STALLED"
    last = st["spark margin results"].last_activity
    assert last is not None and abs((now - last).total_seconds() - 1800) < 120
    assert st["enforcement decisions"].status == "IDLE"
    assert not report.healthy


def test_cli_health_aws_without_a_region_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for k in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    assert main(["health", "--aws"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: CloudWatch:") and err.count("\n") == 1


def test_enforcement_slower_than_its_input_is_degraded_naming_the_backlog(tmp_path: Path) -> None:
    # Given a run whose function processes 60% of the Spark results it is sent, every period
    run = simulated_run(minutes=20)
    for blob in run:
        done = blob.get(names.METRIC_RECORDS_PROCESSED)
        if done is not None:
            blob[names.METRIC_RECORDS_PROCESSED] = (
                [v * 0.6 for v in done] if isinstance(done, list) else done * 0.6
            )
    report = local_report(write_run(tmp_path, run))
    enforce = _stages(report)["enforcement decisions"]
    # Then the stage is degraded by the backlog rule (40% > the 25% critical level), not stalled
    assert enforce.status == "DEGRADED" and not report.healthy
    assert 30.0 < enforce.details["backlog_pct"] < 45.0  # 40% give or take the window's edges
    assert f"> {specs.BACKLOG_CRITICAL_PCT:g}%" in enforce.rule
    # while the steady run's backlog is within the warning level
    steady = _stages(local_report(write_run(tmp_path / "steady", simulated_run(minutes=20))))
    assert steady["enforcement decisions"].details["backlog_pct"] < specs.BACKLOG_WARNING_PCT
