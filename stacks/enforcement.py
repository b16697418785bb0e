"""Enforcement stack: the Lambda that turns margin and stress results, and the risk desk's
actions, into decisions.

Three MSK event source mappings (one per input topic: a Kafka mapping takes one topic), margin
results, stress results and desk actions, into the same function, all in provisioned-poller
mode, which is what enables the enhanced Kafka error handling: per-record failure reporting
(`ReportBatchItemFailures`), bisecting, capped retries and an on-failure SQS destination, plus the
`OffsetLag` metric. One function for all three because a desk action changes the same account
state as the margin path, under the same version guard; the batches of the three mappings carry
no order between them (docs/enforcement.md, "Desk actions", on what that means for an action).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from margin_risk import names
from margin_risk.config import EnforcementConfig
from stacks import cfn_lint
from stacks.bundling import PythonAssetSpec, python_code
from stacks.common import acknowledge, log_retention
from stacks.config import EnvironmentConfig, LambdaConfig
from stacks.kafka_iam import KafkaClusterRef, grant_consume, grant_produce

HANDLER = "lambdas.enforcement.app.lambda_handler"
# The asset is the handler's module and every project module it imports, nothing else.
ASSET_ENTRIES = (HANDLER.rsplit(".", 1)[0],)
REQUIREMENTS = "lambdas/enforcement/requirements.txt"
CONSUMED_TOPICS = names.ENFORCEMENT_INPUT_TOPICS


def consumer_group(topic: str) -> str:
    """One consumer group per mapping (Lambda requires distinct groups per event source)."""
    return f"{names.ENFORCEMENT_FUNCTION}-{topic}"


def powertools_environment() -> dict[str, str]:
    return {
        "POWERTOOLS_SERVICE_NAME": names.SERVICE_ENFORCEMENT,
        "POWERTOOLS_METRICS_NAMESPACE": names.METRICS_NAMESPACE,
    }


def enforcement_environment(**values: Any) -> dict[str, str]:
    """`EnforcementConfig(...).to_environment()` with every field given explicitly.

    `EnforcementConfig` is a BaseSettings: any field left out would be read from the synth
    machine's own environment. Passing every field keeps the template reproducible.
    """
    unknown = set(values) - set(EnforcementConfig.model_fields)
    if unknown:
        raise ValueError(f"not EnforcementConfig fields: {sorted(unknown)}")
    defaults = {
        k: f.default for k, f in EnforcementConfig.model_fields.items() if not f.is_required()
    }
    full = defaults | values
    return EnforcementConfig(**full).to_environment()


class OnFailureQueue(Construct):
    """Where the mappings send metadata of records that exhausted their retries, plus its DLQ."""

    def __init__(self, scope: Construct, construct_id: str, *, cfg: LambdaConfig) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="margin-risk enforcement on-failure queues",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        retention = cdk.Duration.days(cfg.on_failure_retention_days)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            queue_name=f"{names.ON_FAILURE_QUEUE}-dlq",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=retention,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            queue_name=names.ON_FAILURE_QUEUE,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            retention_period=retention,
            dead_letter_queue=sqs.DeadLetterQueue(max_receive_count=5, queue=self.dead_letters),
        )
        acknowledge(
            self.dead_letters,
            "AwsSolutions-SQS3",
            "This queue is the dead-letter queue of the on-failure queue; it has no DLQ itself.",
        )


@jsii.implements(lambda_.IEventSourceDlq)
class SendOnlyQueue:
    """The mappings' on-failure destination, granting the role only what Lambda uses to deliver
    there: ``sqs:SendMessage``, and the queue key's GenerateDataKey/Decrypt (SQS's rule for a
    producer of an encrypted queue). CDK's ``SqsDlq`` also grants GetQueueAttributes/GetQueueUrl,
    which nothing calls."""

    def __init__(self, queue: sqs.IQueue, key: kms.IKey) -> None:
        self.queue = queue
        self.key = key

    def bind(
        self, target: lambda_.IEventSourceMapping, target_handler: lambda_.IFunction
    ) -> lambda_.DlqDestinationConfig:
        target_handler.add_to_role_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.queue.queue_arn])
        )
        self.key.grant(target_handler, "kms:GenerateDataKey", "kms:Decrypt")
        return lambda_.DlqDestinationConfig(destination=self.queue.queue_arn)


class EnforcementFunction(Construct):
    """The function, its log group, environment and least-privilege grants."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        code: lambda_.Code,
        vpc: ec2.IVpc,
        kafka_client_sg: ec2.ISecurityGroup,
        environment: dict[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        cfg = config.enforcement
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{names.ENFORCEMENT_FUNCTION}",
            retention=log_retention(cfg.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=names.ENFORCEMENT_FUNCTION,
            description="Margin-call enforcement: margin/stress results to decisions and audit",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64
            if cfg.architecture == "arm64"
            else lambda_.Architecture.X86_64,
            handler=HANDLER,
            code=code,
            memory_size=cfg.memory_mb,
            timeout=cdk.Duration.seconds(cfg.timeout_seconds),
            reserved_concurrent_executions=cfg.reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            environment=environment,
            log_group=self.log_group,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_groups=[kafka_client_sg],
        )


class EnforcementStack(cdk.Stack):
    """The enforcement function, its topics, grants and event source mappings."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        vpc: ec2.IVpc,
        kafka: KafkaClusterRef,
        kafka_client_sg: ec2.ISecurityGroup,
        bootstrap_servers: str,
        state_table: dynamodb.ITable,
        idempotency_table: dynamodb.ITable,
        data_key: kms.IKey,
        skip_deps: bool,
    ) -> None:
        super().__init__(
            scope, construct_id, description="margin-risk-monitor: enforcement (Lambda, MSK ESM)"
        )
        cfg = config.enforcement
        # Referenced by its (account-scoped) name so grants read as plain ARNs.
        audit_bucket = s3.Bucket.from_bucket_attributes(
            self,
            "AuditBucket",
            bucket_name=names.audit_bucket_name(cdk.Aws.ACCOUNT_ID, config.name),
            encryption_key=data_key,
        )
        self.on_failure = OnFailureQueue(self, "OnFailure", cfg=cfg)
        self.operator_topic = self._operator_topic()
        environment = enforcement_environment(
            state_table_name=state_table.table_name,
            idempotency_table_name=idempotency_table.table_name,
            audit_bucket=audit_bucket.bucket_name,
            audit_prefix=names.AUDIT_PREFIX,
            operator_topic_arn=self.operator_topic.topic_arn,
            kafka_bootstrap=bootstrap_servers,
            kafka_auth="iam",
            idempotency_ttl_seconds=cfg.idempotency_ttl_seconds,
        )
        environment |= powertools_environment()
        environment |= dict(config.house_settings)
        code = python_code(
            PythonAssetSpec(
                entries=ASSET_ENTRIES,
                requirements=REQUIREMENTS,
                architecture=cfg.architecture,
                skip_deps=skip_deps,
            )
        )
        self.enforcement = EnforcementFunction(
            self,
            "Enforcement",
            config=config,
            code=code,
            vpc=vpc,
            kafka_client_sg=kafka_client_sg,
            environment=environment,
        )
        fn = self.enforcement.function
        self.function = fn
        self._suppress_generated_depends_on(fn)
        self._grant_storage(fn, state_table, idempotency_table, data_key, audit_bucket)
        self.operator_topic.grant_publish(fn)
        self._grant_kafka(fn, kafka)
        self.mappings = [self._mapping(fn, kafka, cfg, topic) for topic in CONSUMED_TOPICS]

        cdk.CfnOutput(self, "FunctionName", value=fn.function_name)
        cdk.CfnOutput(self, "OnFailureQueueUrl", value=self.on_failure.queue.queue_url)
        cdk.CfnOutput(self, "OperatorTopicArn", value=self.operator_topic.topic_arn)
        acknowledge(
            fn,
            "AwsSolutions-L1",
            "Python 3.12 is pinned on purpose: the bundle's binary wheels (confluent-kafka, "
            "pydantic-core) are fetched for cp312 and the whole test suite runs against it; "
            "AWS patches the runtime until its published deprecation date.",
        )

    def _operator_topic(self) -> sns.Topic:
        topic_key = kms.Key(
            self,
            "OperatorTopicKey",
            description="margin-risk operator notifications",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        return sns.Topic(
            self,
            "OperatorTopic",
            topic_name=names.OPERATOR_TOPIC,
            master_key=topic_key,
            enforce_ssl=True,
        )

    @staticmethod
    def _suppress_generated_depends_on(fn: lambda_.Function) -> None:
        cfn_function = fn.node.default_child
        assert isinstance(cfn_function, cdk.CfnResource)
        cfn_lint.suppress(
            cfn_function,
            "W3005",
            "lambda.Function (aws-cdk-lib) adds DependsOn on its role and the role's default "
            "policy so the grants exist before the first invocation; the role half is also a "
            "GetAtt. Generated by CDK, kept as it is.",
        )

    @staticmethod
    def _grant_storage(
        fn: lambda_.Function,
        state_table: dynamodb.ITable,
        idempotency_table: dynamodb.ITable,
        data_key: kms.IKey,
        audit_bucket: s3.IBucket,
    ) -> None:
        # Exactly the item operations the code makes (tests/infra/test_iam_gatekeeper.py records
        # them): state read in batches, conditional head writes, history in batches; Powertools'
        # idempotency record put, completed and removed after a failure.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem", "dynamodb:PutItem", "dynamodb:BatchWriteItem"],
                resources=[state_table.table_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
                resources=[idempotency_table.table_arn],
            )
        )
        # The tables' customer managed key, as CDK's table grants give it.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "kms:Decrypt",
                    "kms:DescribeKey",
                    "kms:Encrypt",
                    "kms:GenerateDataKey*",
                    "kms:ReEncrypt*",
                ],
                resources=[data_key.key_arn],
            )
        )
        # PutObject only (no read, delete, retention or legal-hold changes) under the two prefixes
        # it writes, and only as a create (If-None-Match: *): the write-once trail cannot be
        # overwritten by this role even with a new version.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[
                    audit_bucket.arn_for_objects(f"{names.AUDIT_PREFIX}*"),
                    audit_bucket.arn_for_objects(f"{names.REJECTED_PREFIX}*"),
                ],
                conditions={"Null": {"s3:if-none-match": "false"}},
            )
        )

    @staticmethod
    def _grant_kafka(fn: lambda_.Function, kafka: KafkaClusterRef) -> None:
        grant_consume(fn, kafka, CONSUMED_TOPICS, [consumer_group(t) for t in CONSUMED_TOPICS])
        grant_produce(fn, kafka, names.DECISION_TOPICS)
        # The MSK event source's pollers describe the cluster's network; these EC2 read actions
        # support no resource-level permissions, so AWS requires "*".
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeVpcs",
                ],
                resources=["*"],
            )
        )

        # What Lambda's event pollers need to find the brokers (AWSLambdaMSKExecutionRole would
        # grant these on every cluster in the account; here they name this cluster only).
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kafka:DescribeClusterV2", "kafka:GetBootstrapBrokers"],
                resources=[kafka.cluster_arn],
            )
        )
        # ... and read the cluster's dynamic configuration when they start (a Kafka action).
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kafka-cluster:DescribeClusterDynamicConfiguration"],
                resources=[kafka.cluster_arn],
            )
        )

    def _mapping(
        self, fn: lambda_.Function, kafka: KafkaClusterRef, cfg: LambdaConfig, topic: str
    ) -> lambda_.EventSourceMapping:
        """One topic's mapping (a Kafka mapping reads one topic): provisioned pollers, per-record
        failures, bisecting, capped retries, the on-failure queue and the OffsetLag metric."""
        return lambda_.EventSourceMapping(
            self,
            f"Mapping-{topic.replace('.', '-')}",
            target=fn,
            event_source_arn=kafka.cluster_arn,
            kafka_topic=topic,
            kafka_consumer_group_id=consumer_group(topic),
            starting_position=lambda_.StartingPosition[cfg.starting_position],
            batch_size=cfg.batch_size,
            max_batching_window=cdk.Duration.seconds(cfg.batching_window_seconds),
            provisioned_poller_config=lambda_.ProvisionedPollerConfig(
                minimum_pollers=cfg.min_pollers, maximum_pollers=cfg.max_pollers
            ),
            report_batch_item_failures=True,
            bisect_batch_on_error=True,
            retry_attempts=cfg.retry_attempts,
            max_record_age=cdk.Duration.seconds(cfg.max_record_age_seconds),
            on_failure=SendOnlyQueue(self.on_failure.queue, self.on_failure.key),
            metrics_config=lambda_.MetricsConfig(
                metrics=[
                    lambda_.MetricType.EVENT_COUNT,
                    lambda_.MetricType.ERROR_COUNT,
                    lambda_.MetricType.KAFKA_METRICS,
                ]
            ),
        )
