"""Processing stack: the EMR Serverless Spark application, its job role, the job's code, and the
bucket it keeps its data in: the checkpoint and state store, and the margin history (Parquet under
``history/``, with its Glue tables, `stacks.history`).

The streaming job run itself is started with one documented command, `python -m
stacks.start_job <env>` (see docs/deploy.md), not by CloudFormation: a streaming run lives for
weeks, and a deployment that restarts it on every code change would race the old run for the
same checkpoint. The command stops the running job first, then starts the new one.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_emrserverless as emr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from emr_jobs.package import EmrArtifacts, build_emr_artifacts
from margin_risk import names
from stacks.common import log_retention, removal, secure_bucket
from stacks.config import EnvironmentConfig
from stacks.history import HistoryTables
from stacks.kafka_iam import KafkaClusterRef, grant_consume, grant_produce

CHECKPOINT_PREFIX = "checkpoints/"
# Spark's Kafka source names its consumer groups `spark-kafka-source-<uuid>` unless the job sets
# `groupIdPrefix`; the job role may join groups with either prefix, and no other group.
SPARK_GROUP_PREFIXES = ("spark-kafka-source-*", f"{names.EMR_JOB_NAME}*")
SPARK_INPUT_TOPICS = names.MARGIN_JOB_TOPICS
SPARK_OUTPUT_TOPICS = (*names.RESULT_TOPICS, names.TOPIC_REJECTED)


def stage_emr_artifacts(out_dir: Path) -> EmrArtifacts:
    """The job's entry point and ``spark.submit.pyFiles`` zip, built offline by the Spark side's
    own packager (one list of what ships: `emr_jobs.package`)."""
    return build_emr_artifacts(out_dir)


def emr_release_label() -> str:
    import emr_jobs

    label: str = emr_jobs.EMR_RELEASE_LABEL
    return label


class SparkJobRole(Construct):
    """The job runtime role: EMR Serverless may assume it only for this account's applications."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        stack = cdk.Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            description="Runtime role of the margin-risk Spark streaming job",
            assumed_by=iam.ServicePrincipal("emr-serverless.amazonaws.com").with_conditions(
                {
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="emr-serverless",
                            resource="/applications",
                            resource_name="*",
                        )
                    },
                }
            ),
        )


class ProcessingStack(cdk.Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: EnvironmentConfig,
        vpc: ec2.IVpc,
        kafka: KafkaClusterRef,
        kafka_client_sg: ec2.ISecurityGroup,
        access_logs: s3.IBucket,
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            description="margin-risk-monitor: processing (EMR Serverless Spark)",
        )
        cfg = config.emr
        self.key = kms.Key(
            self,
            "Key",
            description="margin-risk Spark checkpoints and logs",
            enable_key_rotation=True,
            removal_policy=removal(config),
        )
        self.checkpoints = secure_bucket(
            self,
            "Checkpoints",
            key=self.key,
            access_logs=access_logs,
            log_prefix="spark-checkpoints/",
            lifecycle_rules=[
                # Only the checkpoint prefix expires: the margin history beside it is what
                # backtests and the desk's queries read, kept until someone decides otherwise.
                s3.LifecycleRule(
                    id="expire-stale-checkpoint-files",
                    prefix=CHECKPOINT_PREFIX,
                    expiration=cdk.Duration.days(cfg.checkpoint_retention_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="abort-incomplete-history-uploads",
                    prefix=names.HISTORY_PREFIX,
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(1),
                ),
            ],
            removal_policy=removal(config),
        )
        self.log_group = logs.LogGroup(
            self,
            "SparkLogs",
            log_group_name=names.SPARK_LOG_GROUP,
            retention=log_retention(cfg.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )

        # Built inside the cloud assembly folder, next to the staged assets.
        stage = cdk.Stage.of(self)
        assert stage is not None
        build_dir = Path(stage.outdir) / f"emr-build-{self.stack_name}"
        staged = stage_emr_artifacts(build_dir)
        self.entrypoint = s3_assets.Asset(self, "EntryPoint", path=str(staged.entrypoint))
        self.pyfiles = s3_assets.Asset(self, "PyFiles", path=str(staged.pyfiles_zip))

        job = SparkJobRole(self, "JobRole")
        self.job_role = job.role
        # EMR Serverless fetches the job's code with the job role: the two objects, nothing else.
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[
                    a.bucket.arn_for_objects(a.s3_object_key)
                    for a in (self.entrypoint, self.pyfiles)
                ],
            )
        )
        # The checkpoint and state store under its prefix, through Hadoop's file system on S3:
        # create, open, delete, rename (a copy and a delete), abandoned multipart uploads, and
        # listings under the prefix only.
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=[
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                resources=[self.checkpoints.arn_for_objects(f"{CHECKPOINT_PREFIX}*")],
            )
        )
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.checkpoints.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{CHECKPOINT_PREFIX}*"]}},
            )
        )
        # The margin history: the job stages a batch's files under its checkpoint prefix and
        # copies them in (emr_jobs.history), one file per micro-batch, kind, task and hour under
        # a name of the batch, so a retried batch rewrites the same objects. It never deletes
        # there; the Hadoop FileSystem's existence checks before a copy read object metadata
        # (HEAD: GetObject) and list the prefix (a HEAD without ListBucket answers 403, not 404).
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:GetObject"],
                resources=[self.checkpoints.arn_for_objects(f"{names.HISTORY_PREFIX}*")],
            )
        )
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.checkpoints.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{names.HISTORY_PREFIX}*"]}},
            )
        )
        self.history = HistoryTables(
            self, "History", bucket=self.checkpoints, first_year=config.storage.audit_first_year
        )
        self.key.grant_encrypt_decrypt(self.job_role)
        self.log_group.grant_write(self.job_role)
        self.job_role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["logs:DescribeLogGroups", "logs:DescribeLogStreams"],
                resources=[self.log_group.log_group_arn],
            )
        )
        # No cloudwatch:PutMetricData: the job's metrics are EMF lines in its driver log.
        grant_consume(self.job_role, kafka, SPARK_INPUT_TOPICS, SPARK_GROUP_PREFIXES)
        grant_produce(self.job_role, kafka, SPARK_OUTPUT_TOPICS)

        subnets = vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        self.application = emr.CfnApplication(
            self,
            "Application",
            name=names.EMR_APPLICATION,
            release_label=emr_release_label(),
            type="SPARK",
            architecture=cfg.architecture,
            auto_start_configuration=emr.CfnApplication.AutoStartConfigurationProperty(
                enabled=True
            ),
            auto_stop_configuration=emr.CfnApplication.AutoStopConfigurationProperty(
                enabled=True, idle_timeout_minutes=cfg.idle_timeout_minutes
            ),
            maximum_capacity=emr.CfnApplication.MaximumAllowedResourcesProperty(
                cpu=cfg.max_cpu, memory=cfg.max_memory, disk=cfg.max_disk
            ),
            network_configuration=emr.CfnApplication.NetworkConfigurationProperty(
                subnet_ids=subnets.subnet_ids,
                security_group_ids=[kafka_client_sg.security_group_id],
            ),
            monitoring_configuration=emr.CfnApplication.MonitoringConfigurationProperty(
                cloud_watch_logging_configuration=emr.CfnApplication.CloudWatchLoggingConfigurationProperty(
                    enabled=True,
                    log_group_name=self.log_group.log_group_name,
                    log_stream_name_prefix=names.EMR_JOB_NAME,
                )
            ),
        )
        self.checkpoint_uri = f"s3://{self.checkpoints.bucket_name}/{CHECKPOINT_PREFIX}"
        self.history_uri = f"s3://{self.checkpoints.bucket_name}/{names.HISTORY_PREFIX}"
        for key, value in {
            "ApplicationId": self.application.attr_application_id,
            "JobRoleArn": self.job_role.role_arn,
            "EntryPointUri": self.entrypoint.s3_object_url,
            "PyFilesUri": self.pyfiles.s3_object_url,
            "CheckpointUri": self.checkpoint_uri,
            "HistoryUri": self.history_uri,
        }.items():
            cdk.CfnOutput(self, key, value=value)
