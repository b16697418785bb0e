"""Observability stack: the alarm topic (KMS, e-mail from config) and the dashboards/alarms.

Dashboards, alarms and Logs Insights queries are rendered by `dashboards.cdk_render` from its
specs; this stack only supplies the deployed resource names and the topic.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from constructs import Construct

from dashboards.cdk_render import ObservedResources, add_observability
from dashboards.specs import MAX_MSK_BROKERS
from margin_risk import names
from stacks.config import EnvironmentConfig


class AlarmTopic(Construct):
    """KMS-encrypted SNS topic that CloudWatch alarms may publish to."""

    def __init__(self, scope: Construct, construct_id: str, *, email: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="margin-risk alarm notifications",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        # CloudWatch publishes to an encrypted topic only if the key lets it use the key.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": cdk.Aws.ACCOUNT_ID}},
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=names.ALERTS_TOPIC,
            master_key=self.key,
            enforce_ssl=True,
        )
        if email:
            self.topic.add_subscription(subs.EmailSubscription(email))


class ObservabilityStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        resources: ObservedResources,
    ) -> None:
        super().__init__(
            scope, construct_id, description="margin-risk-monitor: dashboards, alarms, alerting"
        )
        if config.msk.broker_count > MAX_MSK_BROKERS:
            # The input-stall alarm sums MessagesInPerSec over broker IDs 1..MAX_MSK_BROKERS.
            raise ValueError(
                f"{config.name}: msk.broker_count {config.msk.broker_count} > {MAX_MSK_BROKERS}, "
                "the brokers the spark-input-stalled alarm sums over (dashboards/specs.py)"
            )
        self.alarm_topic = AlarmTopic(self, "Alerts", email=config.alarm_email)
        self.alarms: list[cw.Alarm] = add_observability(self, resources, self.alarm_topic.topic)
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.alarm_topic.topic.topic_arn)
