"""Every AWS call each principal makes is allowed by the policy `cdk synth` gives it, and every
action the policy grants is needed by one of them (least privilege).

* The enforcement Lambda: its calls are recorded from the real handler against the embedded
  endpoint (per-test names mapped to the deployed ones), plus what AWS does with the same role on
  its behalf (logs, X-Ray, the event source mapping's pollers and on-failure destination), plus its
  Kafka clients (the mapping's consumer, the decision producer), which moto cannot serve.
* The Spark job's role: the S3 requests of its checkpoint and state store under its prefix (Hadoop
  file-system operations mapped to S3 requests: the job cannot run against S3 here), the margin
  history's Parquet files it adds under theirs, its Kafka clients, what EMR Serverless does with
  the role (fetch the code, ship the driver's logs).
* The producer policies: upstream systems write exactly the input topics, the risk desk
  exactly desk.actions.v1.

KMS statements are checked for being present where a request needs the key (S3 and SNS
document which KMS actions a request makes); which actions DynamoDB makes on a customer managed
key on the caller's behalf is not observable here, so KMS actions are not held to least privilege.
AWS managed policies (Lambda's basic and VPC execution roles) are AWS's minimum and not edited.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from lambdas.enforcement.runtime import get_runtime, reset_runtime
from margin_risk import names
from margin_risk.archive import KINDS
from margin_risk.tools.local.moto_server import Provisioned
from stacks.enforcement import CONSUMED_TOPICS, consumer_group
from stacks.processing import CHECKPOINT_PREFIX, SPARK_INPUT_TOPICS, SPARK_OUTPUT_TOPICS
from tests.infra.conftest import Synth
from tests.infra.iam_eval import (
    ACCOUNT,
    CLUSTER_UUID,
    REGION,
    Request,
    Statement,
    Templates,
    allowed,
    renamed,
    requests_of_call,
    unused,
)

pytestmark = [pytest.mark.infra, pytest.mark.integration]
ENVS = ("dev", "prod")
CLUSTER = f"arn:aws:kafka:{REGION}:{ACCOUNT}:cluster/{names.MSK_CLUSTER}/{CLUSTER_UUID}"
CLUSTER_ID = f"{names.MSK_CLUSTER}/{CLUSTER_UUID}"
# Docs the platform requests below are taken from.
MSK_ACTIONS = "https://docs.aws.amazon.com/msk/latest/developerguide/kafka-actions.html"
LAMBDA_MSK = "https://docs.aws.amazon.com/lambda/latest/dg/with-msk-permissions.html"
LAMBDA_ON_FAILURE = "https://docs.aws.amazon.com/lambda/latest/dg/kafka-on-failure.html"
LAMBDA_XRAY = "https://docs.aws.amazon.com/lambda/latest/dg/services-xray.html"
S3_KMS = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html"
SNS_KMS = "https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html"
EMR_LOGS = "https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/logging.html"
EMR_ROLE = (
    "https://docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/security-iam-runtime-role.html"
)


def topic_arn(topic: str) -> str:
    return f"arn:aws:kafka:{REGION}:{ACCOUNT}:topic/{CLUSTER_ID}/{topic}"


def group_arn(group: str) -> str:
    return f"arn:aws:kafka:{REGION}:{ACCOUNT}:group/{CLUSTER_ID}/{group}"


def kafka_producer(topics: tuple[str, ...]) -> list[Request]:
    """An idempotent producer (confluent-kafka's and Spark's default) writing ``topics``."""
    why = f"idempotent producer ({MSK_ACTIONS})"
    out = [
        Request.of("kafka-cluster:Connect", CLUSTER, why),
        Request.of("kafka-cluster:WriteDataIdempotently", CLUSTER, why),
    ]
    for t in topics:
        out += [
            Request.of("kafka-cluster:DescribeTopic", topic_arn(t), why),
            Request.of("kafka-cluster:WriteData", topic_arn(t), why),
        ]
    return out


def kafka_consumer(topics: tuple[str, ...], group: str, why: str) -> list[Request]:
    out = [Request.of("kafka-cluster:Connect", CLUSTER, why)]
    for t in topics:
        out += [
            Request.of("kafka-cluster:DescribeTopic", topic_arn(t), why),
            Request.of("kafka-cluster:ReadData", topic_arn(t), why),
        ]
    out += [
        Request.of("kafka-cluster:DescribeGroup", group_arn(group), why),
        Request.of("kafka-cluster:AlterGroup", group_arn(group), why),
    ]
    return out


def least_privilege(statements: list[Statement]) -> list[Statement]:
    """The statements held to least privilege: not AWS managed, not KMS (see module doc)."""
    out = []
    for st in statements:
        if st.source.startswith("AWS managed"):
            continue
        actions = [a for a in st.actions if not a.startswith("kms:")]
        if actions:
            out.append(Statement(actions, st.resources, st.conditions, st.source))
    return out


def check(statements: list[Statement], requests: list[Request]) -> None:
    denied = [r for r in requests if not allowed(statements, r)]
    assert denied == [], "needed but not allowed:\n" + "\n".join(map(str, denied))
    extra = unused(least_privilege(statements), requests)
    assert extra == [], "allowed but used by nothing:\n" + "\n".join(extra)


# --- The enforcement Lambda ----------------------------------------------------------------------
HARNESS = importlib.import_module("tests.lambda.harness")  # "lambda" cannot be imported by name


def scenario(d: Any) -> None:
    """Batches that make every kind of call the handler makes: a call and a liquidation (state,
    audit, SNS), a rejected record, a second commit (history), a failed batch (the idempotency
    record is deleted) and its retry, and a publish that fails after the commit and its
    redelivery (the recovery path)."""
    h, feed = HARNESS, HARNESS.Feed()
    a1 = h.calc("IAM-A", 0, -60_000, h.book(50), "ia1")
    b1 = h.calc("IAM-B", 0, -10_000, h.book(50), "ib1")
    d.send([*feed.records([a1, b1]), feed.record(raw=b"{", account="IAM-A")])
    d.send(feed.records([h.calc("IAM-A", 120, -40_000, h.book(60), "ia2")]))
    records = feed.records([h.calc("IAM-C", 0, -40_000, h.book(50), "ic1")])
    with (
        h.fault(d.runtime.dynamodb, "dynamodb.BatchGetItem"),
        pytest.raises(BatchProcessingError),
    ):
        d.send(records)
    assert d.send(records) == {"batchItemFailures": []}
    records = feed.records([h.calc("IAM-D", 0, -40_000, h.book(50), "id1")])
    with h.fault(d.runtime.sns, "sns.PublishBatch"), pytest.raises(BatchProcessingError):
        d.send(records)
    assert d.send(records) == {"batchItemFailures": []}


@pytest.fixture
def recorded_enforcement_calls(
    aws_endpoint: Provisioned, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> Iterator[tuple[list[Request], dict[str, str]]]:
    """Run the real handler through the calls it can make and record each AWS request."""
    d = HARNESS.Deployment(aws_endpoint, tmp_path / "metrics")
    for k, v in d.env.items():
        monkeypatch.setenv(k, v)
    reset_runtime()
    calls: list[Request] = []

    def record(params: dict[str, Any], event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".")
        calls.extend(requests_of_call(service, operation, params))

    rt = get_runtime()
    for client in (rt.dynamodb, rt.s3, rt.sns):
        client.meta.events.register("before-parameter-build.*.*", record)
    try:
        scenario(d)
    finally:
        for client in (rt.dynamodb, rt.s3, rt.sns):
            client.meta.events.unregister("before-parameter-build.*.*", record)
        reset_runtime()
    deployed = {
        d.config.state_table_name: names.ACCOUNT_STATE_TABLE,
        d.config.idempotency_table_name: names.IDEMPOTENCY_TABLE,
        d.config.audit_bucket: names.audit_bucket_name(ACCOUNT, "ENV"),
        d.config.operator_topic_arn: f"arn:aws:sns:{REGION}:{ACCOUNT}:{names.OPERATOR_TOPIC}",
    }
    yield calls, deployed


def enforcement_platform(t: Templates) -> list[Request]:
    """What AWS does with the function's role on its behalf (no code of ours makes these)."""
    fn_logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/{names.ENFORCEMENT_FUNCTION}"
    ((stack, queue_lid, _),) = [
        x for x in t.find("Enforcement", "AWS::SQS::Queue") if "DeadLetters" not in x[1]
    ]
    queue = t.arn(stack, queue_lid)
    pollers = f"event source mapping pollers ({LAMBDA_MSK})"
    out = [
        Request.of("logs:CreateLogStream", fn_logs + ":log-stream:x", "Lambda runtime logs"),
        Request.of("logs:PutLogEvents", fn_logs + ":log-stream:x", "Lambda runtime logs"),
        Request.of("xray:PutTraceSegments", "*", f"active tracing ({LAMBDA_XRAY})"),
        Request.of("xray:PutTelemetryRecords", "*", f"active tracing ({LAMBDA_XRAY})"),
        Request.of("kafka:DescribeClusterV2", CLUSTER, pollers),
        Request.of("kafka:GetBootstrapBrokers", CLUSTER, pollers),
        Request.of("ec2:DescribeVpcs", "*", pollers),
        Request.of("ec2:DescribeSubnets", "*", pollers),
        Request.of("ec2:DescribeSecurityGroups", "*", pollers),
        Request.of("ec2:CreateNetworkInterface", "*", "VPC function and pollers' ENIs"),
        Request.of("kafka-cluster:DescribeClusterDynamicConfiguration", CLUSTER, pollers),
        Request.of("sqs:SendMessage", queue, f"on-failure destination ({LAMBDA_ON_FAILURE})"),
    ]
    for topic in CONSUMED_TOPICS:
        out += kafka_consumer((topic,), consumer_group(topic), pollers)
    out += kafka_producer(names.DECISION_TOPICS)
    return out


def kms_needs(t: Templates, requests: list[Request]) -> list[Request]:
    """KMS requests that S3 and SNS make with the caller's permissions on encrypted resources."""
    out: list[Request] = []
    storage = f"MarginRisk-{t.env}-Storage"
    ((_, data_key, _),) = [x for x in t.find("Storage", "AWS::KMS::Key") if "DataKey" in x[1]]
    key = t.arn(storage, data_key)
    if any(
        r.action == "s3:PutObject" and ":s3:::margin-risk-monitor-audit" in r.resource
        for r in requests
    ):
        out.append(Request.of("kms:GenerateDataKey", key, f"SSE-KMS upload ({S3_KMS})"))
    ((stack, topic_key, _),) = [
        x for x in t.find("Enforcement", "AWS::KMS::Key") if "OperatorTopicKey" in x[1]
    ]
    if any(r.action == "sns:Publish" for r in requests):
        for action in ("kms:GenerateDataKey", "kms:Decrypt"):
            out.append(Request.of(action, t.arn(stack, topic_key), f"encrypted topic ({SNS_KMS})"))
    return out


@pytest.mark.parametrize("env", ENVS)
def test_enforcement_role_allows_every_call_of_the_handler_and_nothing_unused(
    synth: Synth, recorded_enforcement_calls: tuple[list[Request], dict[str, str]], env: str
) -> None:
    t = Templates(synth.templates, env)
    calls, deployed = recorded_enforcement_calls
    names_map = {k: v.replace("ENV", env) for k, v in deployed.items()}
    recorded = sorted({renamed(r, names_map) for r in calls}, key=str)
    ((stack, _, fn),) = list(t.find("Enforcement", "AWS::Lambda::Function"))
    role_lid = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = t.statements_of_role(stack, role_lid)
    requests = recorded + enforcement_platform(t)
    check(statements, requests + kms_needs(t, requests))
    # and the scenario really exercised the handler's whole call pattern (nothing else)
    assert {r.action for r in recorded} == {
        "dynamodb:BatchGetItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "s3:PutObject",
        "sns:Publish",
    }


def test_an_unconditional_audit_put_is_refused_by_the_policy(synth: Synth) -> None:
    # The role may create audit objects only (If-None-Match); an overwrite is not allowed.
    t = Templates(synth.templates, "dev")
    ((stack, _, fn),) = list(t.find("Enforcement", "AWS::Lambda::Function"))
    statements = t.statements_of_role(stack, fn["Properties"]["Role"]["Fn::GetAtt"][0])
    key = f"arn:aws:s3:::{names.audit_bucket_name(ACCOUNT, 'dev')}/audit/year=2026/x.jsonl"
    assert allowed(statements, Request.of("s3:PutObject", key, **{"s3:if-none-match": "*"}))
    assert not allowed(statements, Request.of("s3:PutObject", key))
    assert not allowed(statements, Request.of("s3:DeleteObject", key))


# --- The Spark job -------------------------------------------------------------------------------
def spark_requests(t: Templates) -> list[Request]:
    stack = f"MarginRisk-{t.env}-Processing"
    ((_, bucket_lid, _),) = list(t.find("Processing", "AWS::S3::Bucket"))
    bucket = t.arn(stack, bucket_lid)
    under = f"{bucket}/{CHECKPOINT_PREFIX}spark-checkpoint/offsets/7"
    state = f"{bucket}/{CHECKPOINT_PREFIX}state/commits/7.json"
    fs = "Hadoop FileSystem on S3 (create, open, rename = copy + delete, delete, list)"
    out = [
        Request.of("s3:GetObject", under, fs),
        Request.of("s3:PutObject", state, fs),
        Request.of("s3:DeleteObject", state + ".tmp", fs),
        Request.of("s3:AbortMultipartUpload", state, "a failed multipart upload of a snapshot"),
        Request.of(
            "s3:ListBucket", bucket, fs, **{"s3:prefix": f"{CHECKPOINT_PREFIX}state/commits/"}
        ),
    ]
    staged = f"{bucket}/{CHECKPOINT_PREFIX}state/history-staging/b7-0a1b/stress/part-0.parquet"
    out.append(Request.of("s3:DeleteObject", staged, "a staged history file, once copied"))
    why = "the margin history (emr_jobs.history: FileUtil.copy, overwrite; margin_risk.archive)"
    for kind in KINDS:  # margin_risk.archive's layout: a file per batch, kind, task and hour
        part = (
            f"{bucket}/{names.HISTORY_PREFIX}{kind}/event_date=2026-02-16/hour=14/b7-0a1b-0.parquet"
        )
        out.append(Request.of("s3:PutObject", part, why))
        out.append(Request.of("s3:GetObject", part, why + ": the existence check (HEAD)"))
    out.append(
        Request.of(
            "s3:ListBucket",
            bucket,
            why + ": the existence check (list)",
            **{"s3:prefix": f"{names.HISTORY_PREFIX}margin_calc/event_date=2026-02-16/hour=14/"},
        )
    )
    ((_, logs_lid, _),) = list(t.find("Processing", "AWS::Logs::LogGroup"))
    group = t.arn(stack, logs_lid)
    why = f"EMR Serverless ships the driver's logs ({EMR_LOGS})"
    for action in (
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
        "logs:DescribeLogGroups",
    ):
        out.append(Request.of(action, group.removesuffix(":*") + ":log-stream:driver", why))
        out.append(Request.of(action, group, why))
    outputs = t.templates[stack]["Outputs"]
    for output in ("EntryPointUri", "PyFilesUri"):
        uri = str(t.resolve(stack, outputs[output]["Value"]))
        why = f"EMR Serverless fetches the job's code ({EMR_ROLE})"
        out.append(Request.of("s3:GetObject", "arn:aws:s3:::" + uri.removeprefix("s3://"), why))
    spark_group = f"{names.EMR_JOB_NAME}-0"
    out += kafka_consumer(SPARK_INPUT_TOPICS, spark_group, "Spark's Kafka source")
    out += kafka_consumer(SPARK_INPUT_TOPICS, "spark-kafka-source-0a1b", "Spark's Kafka source")
    out += kafka_producer(SPARK_OUTPUT_TOPICS)
    return out


@pytest.mark.parametrize("env", ENVS)
def test_spark_job_role_allows_its_storage_logs_and_kafka_and_nothing_unused(
    synth: Synth, env: str
) -> None:
    t = Templates(synth.templates, env)
    ((stack, role_lid, _),) = list(t.find("Processing", "AWS::IAM::Role"))
    statements = t.statements_of_role(stack, role_lid)
    check(statements, spark_requests(t))


def test_spark_job_role_cannot_touch_the_bucket_outside_its_prefix(synth: Synth) -> None:
    t = Templates(synth.templates, "dev")
    ((stack, role_lid, _),) = list(t.find("Processing", "AWS::IAM::Role"))
    statements = t.statements_of_role(stack, role_lid)
    ((_, bucket_lid, _),) = list(t.find("Processing", "AWS::S3::Bucket"))
    bucket = t.arn(stack, bucket_lid)
    assert allowed(statements, Request.of("s3:PutObject", f"{bucket}/checkpoints/state/x"))
    assert not allowed(statements, Request.of("s3:PutObject", f"{bucket}/other/x"))
    # the history is written, never deleted by the job
    history = f"{bucket}/{names.HISTORY_PREFIX}margin_calc/event_date=2026-02-16/hour=14/p.parquet"
    assert allowed(statements, Request.of("s3:PutObject", history))
    for action in ("s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert not allowed(statements, Request.of(action, history))
    prefix = {"s3:prefix": names.HISTORY_PREFIX}
    assert allowed(statements, Request.of("s3:ListBucket", bucket, **prefix))
    assert not allowed(statements, Request.of("s3:ListBucket", bucket, **{"s3:prefix": "other/"}))
    assert not allowed(
        statements, Request.of("kafka-cluster:WriteData", topic_arn(names.TOPIC_MARGIN_CALLS))
    )


def test_the_evaluator_refuses_what_iam_refuses() -> None:
    st = [Statement(["s3:Get*"], ["arn:aws:s3:::b/p/*"], {}, "t")]
    assert allowed(st, Request.of("s3:GetObject", "arn:aws:s3:::b/p/k"))
    assert not allowed(st, Request.of("s3:GetObject", "arn:aws:s3:::b/q/k"))
    assert not allowed(st, Request.of("s3:PutObject", "arn:aws:s3:::b/p/k"))
    cond = [Statement(["s3:PutObject"], ["*"], {"Null": {"s3:if-none-match": "false"}}, "t")]
    assert allowed(cond, Request.of("s3:PutObject", "x", **{"s3:if-none-match": "*"}))
    assert not allowed(cond, Request.of("s3:PutObject", "x"))
    assert unused(st, [Request.of("s3:GetObject", "arn:aws:s3:::b/p/k")]) == []
    assert unused(st, []) == ["s3:Get* on arn:aws:s3:::b/p/* (t)"]


# --- Producers --------------------------------------------------------------------------------
def producer_statements(t: Templates, name: str) -> list[Statement]:
    policies = [
        (stack, lid, policy)
        for stack, lid, policy in t.find("Streaming", "AWS::IAM::ManagedPolicy")
        if policy["Properties"]["ManagedPolicyName"] == f"{name}-{t.env}"
    ]
    ((stack, lid, policy),) = policies
    return t.document(stack, policy["Properties"]["PolicyDocument"], lid)


def assert_writes_exactly(
    t: Templates, statements: list[Statement], topics: tuple[str, ...]
) -> None:
    check(statements, kafka_producer(topics))
    for topic in sorted(set(names.ALL_TOPICS) - set(topics)):
        assert not allowed(statements, Request.of("kafka-cluster:WriteData", topic_arn(topic)))
    for topic in topics:
        assert not allowed(statements, Request.of("kafka-cluster:ReadData", topic_arn(topic)))
    # ... and every topic it may write exists on the cluster
    created = {r["Properties"]["TopicName"] for _, _, r in t.find("Streaming", "AWS::MSK::Topic")}
    assert set(topics) <= created


@pytest.mark.parametrize("env", ENVS)
def test_upstream_producer_policy_writes_exactly_the_five_input_topics(
    synth: Synth, env: str
) -> None:
    t = Templates(synth.templates, env)
    statements = producer_statements(t, names.UPSTREAM_PRODUCER_POLICY)
    assert names.UPSTREAM_TOPICS == (
        "fills.v1",
        "prices.v1",
        "cash.v1",
        "betas.v1",
        "house.requirements.v1",
    )
    assert_writes_exactly(t, statements, names.UPSTREAM_TOPICS)
    # a market-data or order system cannot speak for the risk desk
    assert not allowed(
        statements, Request.of("kafka-cluster:WriteData", topic_arn(names.TOPIC_DESK_ACTIONS))
    )


@pytest.mark.parametrize("env", ENVS)
def test_desk_producer_policy_writes_only_desk_actions(synth: Synth, env: str) -> None:
    t = Templates(synth.templates, env)
    statements = producer_statements(t, names.DESK_PRODUCER_POLICY)
    assert names.DESK_TOPICS == ("desk.actions.v1",)
    assert_writes_exactly(t, statements, names.DESK_TOPICS)
