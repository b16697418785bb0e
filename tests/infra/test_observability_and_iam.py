"""Observability wiring and the IAM rules that hold across every stack."""

from __future__ import annotations

from typing import Any

import pytest

from margin_risk import names
from stacks import iam_allowlist
from tests.infra.conftest import Synth

pytestmark = pytest.mark.infra
ENVS = ("dev", "prod")

# AWS requires Resource "*" for these actions (no resource-level permissions); nothing else.
STAR_ALLOWED = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
}


@pytest.mark.parametrize("env", ENVS)
def test_every_alarm_notifies_the_alarm_topic(synth: Synth, env: str) -> None:
    topic_id, topic = synth.one(env, "Observability", "AWS::SNS::Topic")
    assert topic["Properties"]["TopicName"] == names.ALERTS_TOPIC
    assert topic["Properties"]["KmsMasterKeyId"]
    alarms = {
        **synth.resources(env, "Observability", "AWS::CloudWatch::Alarm"),
        **synth.resources(env, "Observability", "AWS::CloudWatch::CompositeAlarm"),
    }
    assert len(alarms) >= 5
    for alarm_id, alarm in alarms.items():
        assert {"Ref": topic_id} in alarm["Properties"].get("AlarmActions", []), alarm_id
    assert len(synth.stacks[env].observability.alarms) == len(
        synth.resources(env, "Observability", "AWS::CloudWatch::Alarm")
    )


def test_alarm_email_subscription_comes_from_config(synth: Synth) -> None:
    subs = synth.resources("prod", "Observability", "AWS::SNS::Subscription").values()
    assert [s["Properties"]["Endpoint"] for s in subs] == [synth.configs["prod"].alarm_email]
    assert synth.configs["dev"].alarm_email == ""
    assert synth.resources("dev", "Observability", "AWS::SNS::Subscription") == {}


def test_alarm_topic_key_lets_cloudwatch_publish(synth: Synth) -> None:
    keys = synth.resources("dev", "Observability", "AWS::KMS::Key").values()
    (key,) = keys
    principals = [
        s.get("Principal", {}).get("Service") for s in key["Properties"]["KeyPolicy"]["Statement"]
    ]
    assert "cloudwatch.amazonaws.com" in principals


def _iam_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for lid, res in template["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            out += [(lid, s) for s in props["PolicyDocument"]["Statement"]]
        elif res["Type"] == "AWS::IAM::Role":
            for p in props.get("Policies", []):
                out += [(lid, s) for s in p["PolicyDocument"]["Statement"]]
    return out


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def test_no_iam_statement_has_star_resources_outside_the_explicit_allow_list(synth: Synth) -> None:
    seen_star = set()
    for name, template in synth.templates.items():
        for lid, s in _iam_statements(template):
            if s["Effect"] != "Allow" or "*" not in _as_list(s["Resource"]):
                continue
            actions = set(_as_list(s["Action"]))
            assert actions <= STAR_ALLOWED, f"{name}/{lid}: {sorted(actions - STAR_ALLOWED)}"
            assert _as_list(s["Resource"]) == ["*"]
            seen_star |= actions
    # The allow-list is not vacuous: X-Ray and the ESM's EC2 lookups are really there.
    assert {"xray:PutTraceSegments", "ec2:DescribeVpcs"} <= seen_star


def test_no_wildcard_service_actions_anywhere(synth: Synth) -> None:
    for name, template in synth.templates.items():
        for lid, s in _iam_statements(template):
            for action in _as_list(s["Action"]):
                assert action != "*" and not action.endswith(":*"), f"{name}/{lid}: {action}"


def test_every_iam_wildcard_in_the_templates_is_a_reviewed_one(synth: Synth) -> None:
    unreviewed = [
        (name, lid, f.rule_id)
        for name, template in synth.templates.items()
        for lid, f in iam_allowlist.template_findings(template)
        if f.review() is None
    ]
    assert unreviewed == []


def test_flatten_matches_cdk_nag_spelling() -> None:
    ref = {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":s3:::b/",
                {"Fn::GetAtt": ["Bucket", "Arn"]},
                "/*",
            ],
        ]
    }
    assert iam_allowlist.flatten(ref) == "arn:<AWS::Partition>:s3:::b/<Bucket.Arn>/*"
    assert iam_allowlist.flatten({"Fn::ImportValue": "S:Export"}) == "S:Export"
    assert iam_allowlist.flatten({"Fn::Select": [2, "x"]}) == '{"Fn::Select":[2,"x"]}'


def test_resource_star_review_requires_the_statement_actions_to_need_it() -> None:
    ok = iam_allowlist.Finding("Resource", "*", ("xray:PutTraceSegments",))
    bad = iam_allowlist.Finding("Resource", "*", ("xray:PutTraceSegments", "s3:GetObject"))
    assert ok.review() is not None
    assert bad.review() is None


@pytest.mark.parametrize("action", ["*", "s3:*", "kms:*", "dynamodb:*", "kafka-cluster:*", "iam:*"])
def test_no_reviewed_pattern_admits_a_service_wide_action(action: str) -> None:
    assert iam_allowlist.Finding("Action", action, (action,)).review() is None


@pytest.mark.parametrize(
    "resource",
    [
        "arn:<AWS::Partition>:s3:::margin-risk-monitor-audit-dev-<AWS::AccountId>/*",
        "arn:<AWS::Partition>:kafka:<AWS::Region>:<AWS::AccountId>:topic/margin-risk-monitor-msk/*",
        "arn:<AWS::Partition>:s3:::*",
    ],
)
def test_no_reviewed_pattern_admits_a_whole_bucket_or_every_topic(resource: str) -> None:
    assert iam_allowlist.Finding("Resource", resource, ("s3:PutObject",)).review() is None


def test_a_cluster_with_more_brokers_than_the_stall_alarm_sums_is_refused() -> None:
    import aws_cdk as cdk

    from dashboards.cdk_render import ObservedResources
    from dashboards.specs import MAX_MSK_BROKERS
    from stacks.config import EnvironmentConfig
    from stacks.observability import ObservabilityStack

    msk = {
        "broker_count": MAX_MSK_BROKERS + 2,
        "default_topic": {"partitions": 3, "retention_hours": 72},
    }
    too_many = EnvironmentConfig(name="dev", msk=msk)
    resources = ObservedResources("fn", "state", "idem", "queue", "app", "msk", "bucket")
    with pytest.raises(ValueError, match="spark-input-stalled"):
        ObservabilityStack(cdk.App(), "X", config=too_many, resources=resources)


def test_every_reviewed_wildcard_is_still_needed(synth: Synth) -> None:
    # A reviewed entry that matches nothing would admit a wildcard no stack needs any more.
    used = {
        f.review()
        for template in synth.templates.values()
        for _, f in iam_allowlist.template_findings(template)
    }
    stale = [r.pattern for r in iam_allowlist.REVIEWED if r not in used]
    assert stale == []
