"""Synth of `add_observability` in a bare stack: dashboards, alarms, composite alarm, queries."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Match, Template

from dashboards import specs
from dashboards.cdk_render import ObservedResources, add_observability, search_expression
from margin_risk import names

pytestmark = pytest.mark.infra

RES = ObservedResources(
    function_name="mrm-enforcement",
    state_table_name="mrm-state",
    idempotency_table_name="mrm-idem",
    on_failure_queue_name="mrm-on-failure",
    emr_application_id="00fabc123",
    msk_cluster_name="mrm-msk",
    audit_bucket_name="mrm-audit",
)


@pytest.fixture(scope="module")
def synth() -> tuple[Template, dict[str, Any], int, str]:
    app = cdk.App()
    stack = cdk.Stack(app, "ObservabilityTest")
    topic = sns.Topic(stack, "Alarms")
    alarms = add_observability(stack, RES, topic)
    template = Template.from_stack(stack)
    topic_id = stack.get_logical_id(topic.node.default_child)  # type: ignore[arg-type]
    return template, template.to_json(), len(alarms), topic_id


def _of_type(t: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in t["Resources"].values() if r["Type"] == kind]


def test_one_alarm_per_level_each_with_the_topic_as_action(synth: Any) -> None:
    _, t, returned, topic_id = synth
    expected = sum(len(a.levels()) for a in specs.ALARMS)
    alarms = _of_type(t, "AWS::CloudWatch::Alarm")
    assert returned == expected == len(alarms)
    for a in alarms:
        assert a["AlarmActions"] == [{"Ref": topic_id}], a["AlarmName"]
        assert a["ComparisonOperator"] == "GreaterThanThreshold"


def test_alarm_thresholds_are_the_kpis(synth: Any) -> None:
    template, *_ = synth
    for alarm_id, level, threshold in (
        ("lambda-errors", "critical", 5),
        ("kafka-offset-lag", "warning", 100),
        ("kafka-offset-lag", "critical", 1000),
        ("e2e-latency", "warning", 10_000),
        ("e2e-latency", "critical", 30_000),
        ("error-rate", "critical", 1),
        ("emr-job-failed", "critical", 0),
        ("on-failure-records", "critical", 0),
    ):
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {"AlarmName": f"{names.PROJECT}-{alarm_id}-{level}", "Threshold": threshold},
        )
    for alarm_id, ns, metric, stat, period, dims in (
        (
            "lambda-errors",
            "AWS/Lambda",
            "Errors",
            "Sum",
            300,
            [{"Name": "FunctionName", "Value": RES.function_name}],
        ),
        (
            "e2e-latency",
            names.METRICS_NAMESPACE,
            names.METRIC_E2E_LATENCY,
            "p99",
            60,
            [{"Name": "service", "Value": names.SERVICE_ENFORCEMENT}],
        ),
    ):
        stat_ = {
            "Metric": {"Dimensions": dims, "MetricName": metric, "Namespace": ns},
            "Period": period,
            "Stat": stat,
        }
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "AlarmName": f"{names.PROJECT}-{alarm_id}-critical",
                "Metrics": [Match.object_like({"MetricStat": stat_})],
            },
        )


def test_metric_math_alarms_carry_their_expression(synth: Any) -> None:
    template, *_ = synth
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": f"{names.PROJECT}-margin-results-stalled-critical",
            "Metrics": Match.array_with(
                [Match.object_like({"Expression": specs.MARGIN_RESULTS_STALLED.expression})]
            ),
        },
    )


def test_composite_alarm_watches_every_critical_alarm(synth: Any) -> None:
    _, t, _, topic_id = synth
    (composite,) = _of_type(t, "AWS::CloudWatch::CompositeAlarm")
    assert composite["AlarmName"] == specs.composite_alarm_name()
    assert composite["AlarmActions"] == [{"Ref": topic_id}]
    rule = json.dumps(composite["AlarmRule"])
    critical = [a for a in specs.ALARMS if a.critical is not None]
    ids = {
        lid
        for lid, r in t["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"]["AlarmName"].endswith("-critical")
    }
    assert len(ids) == len(critical)
    for lid in ids:
        assert lid in rule
    warning_ids = {
        lid
        for lid, r in t["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"]["AlarmName"].endswith("-warning")
    }
    assert not any(lid in rule for lid in warning_ids)


def test_two_dashboards_show_the_specs_metrics(synth: Any) -> None:
    _, t, *_ = synth
    boards = {
        d["DashboardName"]: json.dumps(d["DashboardBody"])
        for d in _of_type(t, "AWS::CloudWatch::Dashboard")
    }
    assert set(boards) == {names.OPS_DASHBOARD, names.RISK_DASHBOARD}
    for needed in ("OffsetLag", "FailedJobs", names.METRIC_INPUT_RECORDS, RES.function_name):
        assert needed in boards[names.OPS_DASHBOARD], needed
    assert names.METRIC_MARGIN_CALLS_ISSUED in boards[names.RISK_DASHBOARD]
    assert "SEARCH(" in boards[names.RISK_DASHBOARD]  # rejected records by reason


def test_query_definitions_target_the_lambda_and_spark_log_groups(synth: Any) -> None:
    _, t, *_ = synth
    qs = {q["Name"]: q for q in _of_type(t, "AWS::Logs::QueryDefinition")}
    trace = qs[f"{names.PROJECT}/trace-margin-call"]
    assert trace["LogGroupNames"] == [f"/aws/lambda/{RES.function_name}", names.SPARK_LOG_GROUP]
    assert "correlation_id" in trace["QueryString"]
    assert len(qs) == 4


def test_search_expression_groups_by_the_extra_dimension() -> None:
    m = specs.Metric(
        names.METRICS_NAMESPACE,
        names.METRIC_RECORDS_REJECTED,
        {"service": "margin-job"},
        group_by="reason",
    )
    expr = search_expression(m, {"service": "margin-job"})
    assert expr == (
        'SEARCH(\'{MarginRiskMonitor,reason,service} MetricName="RecordsRejected" '
        '"service"="margin-job"\', \'Sum\', 60)'
    )


def test_a_search_metric_cannot_become_an_alarm() -> None:
    from dashboards.cdk_render import render_alarms

    stack = cdk.Stack(cdk.App(), "Bad")
    bad = specs.AlarmSpec(
        "bad",
        "rejects by reason",
        specs.Metric(names.METRICS_NAMESPACE, names.METRIC_RECORDS_REJECTED, group_by="reason"),
        warning=None,
        critical=0.0,
    )
    with pytest.raises(ValueError, match="SEARCH"):
        render_alarms(stack, bad, RES, sns.Topic(stack, "T"))
