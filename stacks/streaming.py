"""Streaming stack: an MSK provisioned cluster (IAM auth, TLS only) and the spec's topics.

Why provisioned and not MSK Serverless: at this system's load two small brokers cost about an
eighth of a serverless cluster's hourly fee, and provisioned clusters (Kafka >= 3.6) support
CloudFormation-native topics (`AWS::MSK::Topic`), so the deployment creates the topics with no
custom-resource Lambda, no Kafka admin client and no network path from CloudFormation to brokers.
"""

from __future__ import annotations

import base64
import json

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_msk as msk
from aws_cdk import custom_resources as cr
from constructs import Construct

from margin_risk import names
from stacks import cfn_lint
from stacks.common import acknowledge, log_retention
from stacks.config import EnvironmentConfig, MskConfig
from stacks.kafka_iam import KafkaClusterRef

KAFKA_IAM_PORT = 9098  # SASL/IAM over TLS
# Construct id of AwsCustomResource's singleton provider function ("AWS" + its fixed uuid).
PROVIDER_ID = "AWS679f53fac002430cb0da5b7982bd2287"


def topic_configs(cfg: MskConfig, topic: str) -> dict[str, str]:
    """Kafka topic configuration (strings, as Kafka wants them) for one topic."""
    t = cfg.topic(topic)
    return {
        "retention.ms": str(t.retention_hours * 3600 * 1000),
        "min.insync.replicas": str(cfg.min_insync_replicas),
        "cleanup.policy": "delete",
    }


def encode_topic_configs(configs: dict[str, str]) -> str:
    """`AWS::MSK::Topic` takes its configs as one Base64 string of a JSON object."""
    return base64.b64encode(json.dumps(configs, sort_keys=True).encode()).decode()


class KafkaCluster(Construct):
    """The MSK cluster, its security groups, broker logs and at-rest encryption key."""

    def __init__(
        self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, config: EnvironmentConfig
    ) -> None:
        super().__init__(scope, construct_id)
        self._security_groups(vpc)
        retention = cdk.RemovalPolicy.RETAIN if config.removal_retain else cdk.RemovalPolicy.DESTROY
        self.key = kms.Key(
            self,
            "Key",
            description="margin-risk MSK data at rest",
            enable_key_rotation=True,
            removal_policy=retention,
        )
        self.broker_logs = logs.LogGroup(
            self,
            "BrokerLogs",
            retention=log_retention(config.msk.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        subnets = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.subnet_ids = subnets.subnet_ids
        self.cluster_name = names.MSK_CLUSTER
        self.cluster = self._cluster(config, self._configuration(config), subnets.subnet_ids)
        self.cluster.apply_removal_policy(retention)
        self.ref = KafkaClusterRef(
            cluster_arn=self.cluster.attr_arn, cluster_name=self.cluster_name
        )

    def _security_groups(self, vpc: ec2.IVpc) -> None:
        # Kafka clients (the Lambda, the Spark job) attach this group; brokers admit only it.
        self.client_security_group = ec2.SecurityGroup(
            self, "ClientSg", vpc=vpc, description="Kafka clients of the margin-risk MSK cluster"
        )
        self.cluster_security_group = ec2.SecurityGroup(
            self,
            "BrokerSg",
            vpc=vpc,
            description="margin-risk MSK brokers (IAM over TLS only)",
            allow_all_outbound=False,
        )
        brokers = self.cluster_security_group
        port = ec2.Port.tcp(KAFKA_IAM_PORT)
        brokers.add_ingress_rule(self.client_security_group, port, "Kafka clients, IAM/TLS")
        # The Lambda event source mapping's pollers use the cluster's own security group.
        brokers.add_ingress_rule(brokers, port, "ESM pollers, IAM/TLS")
        brokers.add_egress_rule(brokers, port, "ESM pollers to brokers")
        brokers.add_egress_rule(
            ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "ESM pollers to Lambda/STS APIs via NAT"
        )

    def _configuration(self, config: EnvironmentConfig) -> msk.CfnConfiguration:
        cfg = config.msk
        server_properties = "\n".join(
            [
                "auto.create.topics.enable=false",
                f"default.replication.factor={cfg.replication_factor}",
                f"min.insync.replicas={cfg.min_insync_replicas}",
                f"num.partitions={cfg.default_topic.partitions}",
                "unclean.leader.election.enable=false",
                "allow.everyone.if.no.acl.found=false",
            ]
        )
        return msk.CfnConfiguration(
            self,
            "Configuration",
            name=f"{names.MSK_CLUSTER}-{config.name}",
            kafka_versions_list=[cfg.kafka_version],
            server_properties=server_properties,
        )

    def _cluster(
        self, config: EnvironmentConfig, configuration: msk.CfnConfiguration, subnets: list[str]
    ) -> msk.CfnCluster:
        """IAM-only clients, TLS in transit, the key at rest, broker logs, the house config."""
        cfg = config.msk
        return msk.CfnCluster(
            self,
            "Cluster",
            cluster_name=self.cluster_name,
            kafka_version=cfg.kafka_version,
            number_of_broker_nodes=cfg.broker_count,
            broker_node_group_info=msk.CfnCluster.BrokerNodeGroupInfoProperty(
                client_subnets=subnets,
                instance_type=cfg.broker_instance_type,
                security_groups=[self.cluster_security_group.security_group_id],
                storage_info=msk.CfnCluster.StorageInfoProperty(
                    ebs_storage_info=msk.CfnCluster.EBSStorageInfoProperty(
                        volume_size=cfg.volume_gb
                    )
                ),
            ),
            client_authentication=msk.CfnCluster.ClientAuthenticationProperty(
                sasl=msk.CfnCluster.SaslProperty(iam=msk.CfnCluster.IamProperty(enabled=True)),
                unauthenticated=msk.CfnCluster.UnauthenticatedProperty(enabled=False),
            ),
            encryption_info=msk.CfnCluster.EncryptionInfoProperty(
                encryption_at_rest=msk.CfnCluster.EncryptionAtRestProperty(
                    data_volume_kms_key_id=self.key.key_arn
                ),
                encryption_in_transit=msk.CfnCluster.EncryptionInTransitProperty(
                    client_broker="TLS", in_cluster=True
                ),
            ),
            configuration_info=msk.CfnCluster.ConfigurationInfoProperty(
                arn=configuration.attr_arn, revision=1
            ),
            enhanced_monitoring=cfg.enhanced_monitoring,
            logging_info=msk.CfnCluster.LoggingInfoProperty(
                broker_logs=msk.CfnCluster.BrokerLogsProperty(
                    cloud_watch_logs=msk.CfnCluster.CloudWatchLogsProperty(
                        enabled=True, log_group=self.broker_logs.log_group_name
                    )
                )
            ),
        )


class KafkaTopics(Construct):
    """One `AWS::MSK::Topic` per topic of spec section 4 (plus the rejected-records topic)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, cluster: KafkaCluster, cfg: MskConfig
    ) -> None:
        super().__init__(scope, construct_id)
        self.topics: dict[str, msk.CfnTopic] = {}
        for topic in names.ALL_TOPICS:
            resource = msk.CfnTopic(
                self,
                topic.replace(".", "-"),
                cluster_arn=cluster.cluster.attr_arn,
                topic_name=topic,
                partition_count=cfg.topic(topic).partitions,
                replication_factor=cfg.replication_factor,
                configs=encode_topic_configs(topic_configs(cfg, topic)),
            )
            self.topics[topic] = resource


class BootstrapBrokers(Construct):
    """The SASL/IAM bootstrap string, read once per deploy from the MSK control plane.

    CloudFormation has no attribute for it; an SDK call (`kafka:GetBootstrapBrokers`, scoped to
    this cluster) made by CDK's AwsCustomResource provides it. The call needs no network path to
    the brokers, so its function stays outside the VPC.
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster_arn: str) -> None:
        super().__init__(scope, construct_id)
        call = cr.AwsSdkCall(
            service="Kafka",
            action="getBootstrapBrokers",
            parameters={"ClusterArn": cluster_arn},
            physical_resource_id=cr.PhysicalResourceId.of(cluster_arn),
            output_paths=["BootstrapBrokerStringSaslIam"],
        )
        self.resource = cr.AwsCustomResource(
            self,
            "Lookup",
            on_create=call,
            on_update=call,
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=[cluster_arn]),
            install_latest_aws_sdk=False,
        )
        self.bootstrap_servers = self.resource.get_response_field("BootstrapBrokerStringSaslIam")
        # The provider function CDK adds once per stack (a SingletonFunction of fixed uuid).
        provider = cdk.Stack.of(self).node.try_find_child(PROVIDER_ID)
        assert provider is not None, "AwsCustomResource's provider function moved"
        cfn_function = provider.node.default_child
        assert isinstance(cfn_function, cdk.CfnResource)
        cfn_lint.suppress(
            cfn_function,
            "W3005",
            "AwsCustomResource's provider function (aws-cdk-lib) DependsOn its role, which it "
            "also reads with GetAtt. Generated by CDK, kept as it is.",
        )


class ProducerPolicy(Construct):
    """A managed policy a producer attaches to the role or user that publishes: connect, and
    write exactly ``topics`` with an idempotent producer, nothing else on the cluster."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: KafkaClusterRef,
        name: str,
        topics: tuple[str, ...],
        description: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            managed_policy_name=name,
            description=description,
            statements=[
                iam.PolicyStatement(
                    actions=["kafka-cluster:Connect", "kafka-cluster:WriteDataIdempotently"],
                    resources=[cluster.cluster_arn],
                ),
                iam.PolicyStatement(
                    actions=["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"],
                    resources=[cluster.topic_arn(t) for t in topics],
                ),
            ],
        )


class StreamingStack(cdk.Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: EnvironmentConfig, vpc: ec2.IVpc
    ) -> None:
        super().__init__(
            scope, construct_id, description="margin-risk-monitor: streaming (MSK, topics)"
        )
        self.kafka = KafkaCluster(self, "Kafka", vpc=vpc, config=config)
        self.topics = KafkaTopics(self, "Topics", cluster=self.kafka, cfg=config.msk)
        self.bootstrap = BootstrapBrokers(
            self, "BootstrapBrokers", cluster_arn=self.kafka.cluster.attr_arn
        )
        self.cluster_ref = self.kafka.ref
        # Upstream systems (order management, market data, treasury, the house-requirements
        # tool) and the risk desk get separate policies: a market-data producer cannot publish
        # a desk action, whose operator field the enforcement records as the one who acted.
        self.producer = ProducerPolicy(
            self,
            "UpstreamProducer",
            cluster=self.cluster_ref,
            name=f"{names.UPSTREAM_PRODUCER_POLICY}-{config.name}",
            topics=names.UPSTREAM_TOPICS,
            description="Write the margin-risk input topics (MSK IAM auth, idempotent producer)",
        )
        self.desk_producer = ProducerPolicy(
            self,
            "DeskProducer",
            cluster=self.cluster_ref,
            name=f"{names.DESK_PRODUCER_POLICY}-{config.name}",
            topics=names.DESK_TOPICS,
            description="Publish the risk desk's actions on margin calls (desk.actions.v1 only)",
        )
        cdk.CfnOutput(self, "ClusterArn", value=self.kafka.cluster.attr_arn)
        cdk.CfnOutput(self, "BootstrapServers", value=self.bootstrap.bootstrap_servers)
        cdk.CfnOutput(
            self, "UpstreamProducerPolicyArn", value=self.producer.policy.managed_policy_arn
        )
        cdk.CfnOutput(
            self, "DeskProducerPolicyArn", value=self.desk_producer.policy.managed_policy_arn
        )
        acknowledge(
            self,
            "AwsSolutions-L1",
            "The AwsCustomResource singleton function's runtime is chosen by aws-cdk-lib (pinned "
            "2.275.0) and moves with library upgrades; it runs one read-only SDK call per deploy.",
        )
