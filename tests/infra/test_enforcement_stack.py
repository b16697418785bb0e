"""Enforcement stack: the function, its environment contract, and the MSK event source mappings."""

from __future__ import annotations

import pytest

from margin_risk import names
from margin_risk.config import EnforcementConfig
from stacks.enforcement import HANDLER, consumer_group
from tests.infra.conftest import TEST_HOUSE_SETTING, Synth

pytestmark = pytest.mark.infra
ENVS = ("dev", "prod")


def _function(synth: Synth, env: str) -> dict:
    fns = synth.resources(env, "Enforcement", "AWS::Lambda::Function")
    (props,) = [f["Properties"] for f in fns.values()]
    return props


@pytest.mark.parametrize("env", ENVS)
def test_function_runtime_tracing_sizes_come_from_config(synth: Synth, env: str) -> None:
    cfg = synth.configs[env].enforcement
    fn = _function(synth, env)
    assert fn["FunctionName"] == names.ENFORCEMENT_FUNCTION
    assert fn["Runtime"] == "python3.12"
    assert fn["Handler"] == HANDLER == "lambdas.enforcement.app.lambda_handler"
    assert fn["TracingConfig"] == {"Mode": "Active"}
    assert fn["MemorySize"] == cfg.memory_mb
    assert fn["Timeout"] == cfg.timeout_seconds
    assert fn["ReservedConcurrentExecutions"] == cfg.reserved_concurrency
    assert fn["Architectures"] == [cfg.architecture]
    assert fn["VpcConfig"]["SubnetIds"] and fn["VpcConfig"]["SecurityGroupIds"]


def test_environment_keys_are_the_settings_model_fields_plus_powertools_and_house(
    synth: Synth,
) -> None:
    # Given dev with one MR_ house setting injected through cdk.json context
    env = _function(synth, "dev")["Environment"]["Variables"]
    # Then the keys are exactly EnforcementConfig's fields + Powertools + the house setting
    expected = set(EnforcementConfig.env_keys()) | {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
        TEST_HOUSE_SETTING[0],
    }
    assert set(env) == expected
    assert env[TEST_HOUSE_SETTING[0]] == TEST_HOUSE_SETTING[1]
    assert env["POWERTOOLS_SERVICE_NAME"] == names.SERVICE_ENFORCEMENT
    assert env["POWERTOOLS_METRICS_NAMESPACE"] == names.METRICS_NAMESPACE
    assert env["KAFKA_AUTH"] == "iam"
    assert env["AUDIT_PREFIX"] == names.AUDIT_PREFIX
    # The bootstrap string and table names are wired from the other stacks, not hard-coded.
    assert isinstance(env["KAFKA_BOOTSTRAP"], dict)
    assert isinstance(env["STATE_TABLE_NAME"], dict)
    # prod has no house settings: exactly the contract + Powertools
    prod = _function(synth, "prod")["Environment"]["Variables"]
    assert set(prod) == set(EnforcementConfig.env_keys()) | {
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
    }


def _cluster_export(synth: Synth, env: str) -> str:
    """The export name under which the streaming stack publishes the MSK cluster ARN."""
    cluster_id, _ = synth.one(env, "Streaming", "AWS::MSK::Cluster")
    outputs = synth.template(env, "Streaming")["Outputs"]
    (name,) = [
        o["Export"]["Name"]
        for o in outputs.values()
        if "Export" in o and o["Value"] == {"Fn::GetAtt": [cluster_id, "Arn"]}
    ]
    return str(name)


@pytest.mark.parametrize("env", ENVS)
def test_mappings_read_the_results_and_the_desk_actions_from_the_cluster_alike(
    synth: Synth, env: str
) -> None:
    cfg = synth.configs[env].enforcement
    mappings = synth.resources(env, "Enforcement", "AWS::Lambda::EventSourceMapping")
    queues = synth.resources(env, "Enforcement", "AWS::SQS::Queue")
    (on_failure_id,) = [
        k for k, q in queues.items() if q["Properties"]["QueueName"] == names.ON_FAILURE_QUEUE
    ]
    fn_id = next(iter(synth.resources(env, "Enforcement", "AWS::Lambda::Function")))
    export = _cluster_export(synth, env)
    topics = sorted(t for m in mappings.values() for t in m["Properties"]["Topics"])
    assert topics == sorted([names.TOPIC_MARGIN_CALC, names.TOPIC_STRESS, names.TOPIC_DESK_ACTIONS])
    groups = {
        m["Properties"]["AmazonManagedKafkaEventSourceConfig"]["ConsumerGroupId"]
        for m in mappings.values()
    }
    assert len(groups) == 3  # a consumer group of its own for each mapping
    for m in mappings.values():
        p = m["Properties"]
        assert p["EventSourceArn"] == {"Fn::ImportValue": export}
        assert p["FunctionName"] == {"Ref": fn_id}
        assert p["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert p["DestinationConfig"]["OnFailure"]["Destination"] == {
            "Fn::GetAtt": [on_failure_id, "Arn"]
        }
        assert 0 <= p["MaximumRetryAttempts"] <= 10
        assert p["MaximumRetryAttempts"] == cfg.retry_attempts
        assert p["BatchSize"] == cfg.batch_size
        assert p["MaximumBatchingWindowInSeconds"] == cfg.batching_window_seconds
        assert "KafkaMetrics" in p["MetricsConfig"]["Metrics"]
        assert p["ProvisionedPollerConfig"] == {
            "MinimumPollers": cfg.min_pollers,
            "MaximumPollers": cfg.max_pollers,
        }
        (topic,) = p["Topics"]
        assert p["AmazonManagedKafkaEventSourceConfig"]["ConsumerGroupId"] == consumer_group(topic)


@pytest.mark.parametrize("env", ENVS)
def test_on_failure_queue_is_encrypted_ssl_only_and_has_its_own_dlq(synth: Synth, env: str) -> None:
    queues = synth.resources(env, "Enforcement", "AWS::SQS::Queue")
    by_name = {q["Properties"]["QueueName"]: (k, q["Properties"]) for k, q in queues.items()}
    _qid, q = by_name[names.ON_FAILURE_QUEUE]
    dlq_id, dlq = by_name[f"{names.ON_FAILURE_QUEUE}-dlq"]
    days = synth.configs[env].enforcement.on_failure_retention_days
    for props in (q, dlq):
        assert "KmsMasterKeyId" in props
        assert props["MessageRetentionPeriod"] == days * 86400
    assert q["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": [dlq_id, "Arn"]}
    policies = synth.resources(env, "Enforcement", "AWS::SQS::QueuePolicy")
    denies = [
        s
        for p in policies.values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    ]
    assert len(denies) == 2


def test_function_role_reaches_only_its_topics_and_groups(synth: Synth) -> None:
    policies = synth.resources("dev", "Enforcement", "AWS::IAM::Policy")
    statements = [
        s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]

    def arns_for(action: str) -> list[str]:
        out = []
        for s in statements:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            if action in actions:
                res = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
                out += [str(r) for r in res]
        return out

    read = arns_for("kafka-cluster:ReadData")
    write = arns_for("kafka-cluster:WriteData")
    consumed = (names.TOPIC_MARGIN_CALC, names.TOPIC_STRESS, names.TOPIC_DESK_ACTIONS)
    assert len(read) == 3 and all(any(t in r for t in consumed) for r in read)
    assert len(write) == len(names.DECISION_TOPICS)
    assert all(any(t in r for t in names.DECISION_TOPICS) for r in write)
    assert not any(a.startswith("kafka-cluster:*") for s in statements for a in s["Action"])
    assert "kafka-cluster:DescribeClusterDynamicConfiguration" in {
        a
        for s in statements
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    queues = synth.resources("dev", "Enforcement", "AWS::SQS::Queue")
    (on_failure_id,) = [
        k for k, q in queues.items() if q["Properties"]["QueueName"] == names.ON_FAILURE_QUEUE
    ]
    assert arns_for("sqs:SendMessage") == [str({"Fn::GetAtt": [on_failure_id, "Arn"]})]
    put = arns_for("s3:PutObject")
    assert len(put) == 2 and all("/audit/*" in r or "/rejected/*" in r for r in put)
    assert arns_for("s3:PutObjectRetention") == [] and arns_for("s3:DeleteObject*") == []
