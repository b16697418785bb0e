"""Storage and analytics stack: account state, idempotency, the write-once audit trail, Athena.

Long-lived data lives here, apart from the compute that writes it, so redeploying or destroying
the processing and enforcement stacks never touches the records a regulator may ask for.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_athena as athena
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_glue as glue
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from margin_risk import names
from stacks.athena_queries import NAMED_QUERIES
from stacks.common import acknowledge, removal, secure_bucket
from stacks.config import EnvironmentConfig, StorageConfig

# Glue/Hive type of each audit column (spec section 5), in the seed's order.
AUDIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "string"),
    ("event_type", "string"),
    ("account_id", "string"),
    ("timestamp", "string"),
    (
        "details",
        "struct<deficiency:double,excess:double,equity:double,maintenance_req:double,"
        "scenario:double,reason:string>",
    ),
    ("correlation_id", "string"),
)
AUDIT_PARTITIONS: tuple[str, ...] = ("year", "month", "day", "hour")
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
REJECTED_PREFIX = "rejected/"


class StateTables(Construct):
    """The account-state table (head + history items) and Powertools' idempotency table."""

    def __init__(
        self, scope: Construct, construct_id: str, *, key: kms.IKey, config: EnvironmentConfig
    ) -> None:
        super().__init__(scope, construct_id)
        pitr = dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True)
        self.state = dynamodb.Table(
            self,
            "AccountState",
            table_name=names.ACCOUNT_STATE_TABLE,
            partition_key=dynamodb.Attribute(
                name=names.PK_ACCOUNT, type=dynamodb.AttributeType.STRING
            ),
            sort_key=dynamodb.Attribute(name=names.SK_ITEM, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=pitr,
            deletion_protection=config.storage.deletion_protection,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            removal_policy=removal(config),
        )
        self.idempotency = dynamodb.Table(
            self,
            "Idempotency",
            table_name=names.IDEMPOTENCY_TABLE,
            partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING),
            time_to_live_attribute="expiration",
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=pitr,
            deletion_protection=config.storage.deletion_protection,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )


def audit_lifecycle(cfg: StorageConfig) -> list[s3.LifecycleRule]:
    """Colder storage over time, for current and superseded versions; never an expiration."""
    transitions = [
        (s3.StorageClass.INFREQUENT_ACCESS, cfg.audit_infrequent_access_days),
        (s3.StorageClass.GLACIER_INSTANT_RETRIEVAL, cfg.audit_glacier_ir_days),
        (s3.StorageClass.DEEP_ARCHIVE, cfg.audit_deep_archive_days),
    ]
    return [
        s3.LifecycleRule(
            id="audit-to-colder-storage",
            abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
            transitions=[
                s3.Transition(storage_class=c, transition_after=cdk.Duration.days(d))
                for c, d in transitions
            ],
            noncurrent_version_transitions=[
                s3.NoncurrentVersionTransition(
                    storage_class=c, transition_after=cdk.Duration.days(d)
                )
                for c, d in transitions
            ],
        )
    ]


class AuditBucket(Construct):
    """The write-once audit trail (Object Lock), and the bucket receiving S3 access logs."""

    def __init__(
        self, scope: Construct, construct_id: str, *, key: kms.IKey, config: EnvironmentConfig
    ) -> None:
        super().__init__(scope, construct_id)
        cfg = config.storage
        # Server access logs cannot be delivered to an SSE-KMS bucket: SSE-S3 here.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=cdk.Duration.days(cfg.access_log_retention_days),
                    noncurrent_version_expiration=cdk.Duration.days(1),
                )
            ],
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This is the access-log destination itself; logging it into itself would loop and "
            "logging it elsewhere only moves the problem. It is SSL-only, private and versioned.",
        )
        retention = cdk.Duration.days(cfg.audit_retention_days)
        lock = (
            s3.ObjectLockRetention.compliance(retention)
            if cfg.audit_lock_mode == "COMPLIANCE"
            else s3.ObjectLockRetention.governance(retention)
        )
        self.bucket = secure_bucket(
            self,
            "Audit",
            key=key,
            access_logs=self.access_logs,
            log_prefix="audit-bucket/",
            bucket_name=names.audit_bucket_name(cdk.Aws.ACCOUNT_ID, config.name),
            versioned=True,
            object_lock_enabled=True,
            object_lock_default_retention=lock,
            lifecycle_rules=audit_lifecycle(cfg),
            # Locked records outlive any stack: never deleted by CloudFormation.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )


class AuditAnalytics(Construct):
    """Glue table with partition projection, an Athena workgroup and the desk's named queries."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        audit_bucket: s3.IBucket,
        access_logs: s3.IBucket,
        key: kms.IKey,
        config: EnvironmentConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        account = cdk.Aws.ACCOUNT_ID
        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=names.GLUE_DATABASE, description="margin-risk-monitor audit trail"
            ),
        )
        self.table = self._audit_table(audit_bucket, config)
        self.table.node.add_dependency(self.database)
        self.results = secure_bucket(
            self,
            "Results",
            key=key,
            access_logs=access_logs,
            log_prefix="athena-results/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-query-results",
                    expiration=cdk.Duration.days(config.storage.athena_results_retention_days),
                )
            ],
            removal_policy=removal(config),
        )
        self.workgroup = self._workgroup(key, config)
        self.named_queries: dict[str, athena.CfnNamedQuery] = {
            query.name: athena.CfnNamedQuery(
                self,
                f"Query-{query.name}",
                name=query.name,
                description=query.description[:1024],
                database=names.GLUE_DATABASE,
                work_group=self.workgroup.ref,
                query_string=query.sql,
            )
            for query in NAMED_QUERIES.values()
        }

    def _audit_table(self, audit_bucket: s3.IBucket, config: EnvironmentConfig) -> glue.CfnTable:
        """``audit_events`` over the trail's JSON lines, with partition projection so a new hour
        is queryable at once (no crawler, no MSCK REPAIR)."""
        cfg = config.storage
        location = f"s3://{audit_bucket.bucket_name}/{names.AUDIT_PREFIX}"
        template = location + "year=${year}/month=${month}/day=${day}/hour=${hour}/"
        ranges = {
            "year": f"{cfg.audit_first_year},{cfg.audit_last_year}",
            "month": "1,12",
            "day": "1,31",
            "hour": "0,23",
        }
        parameters = {
            "classification": "json",
            "EXTERNAL": "TRUE",
            "projection.enabled": "true",
            "storage.location.template": template,
        }
        for part, rng in ranges.items():
            parameters[f"projection.{part}.type"] = "integer"
            parameters[f"projection.{part}.range"] = rng
        return glue.CfnTable(
            self,
            "AuditEvents",
            catalog_id=cdk.Aws.ACCOUNT_ID,
            database_name=names.GLUE_DATABASE,
            table_input=glue.CfnTable.TableInputProperty(
                name=names.AUDIT_TABLE,
                description="Enforcement decisions (spec section 5), one JSON object per line.",
                table_type="EXTERNAL_TABLE",
                parameters=parameters,
                partition_keys=[
                    glue.CfnTable.ColumnProperty(name=p, type="int") for p in AUDIT_PARTITIONS
                ],
                storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                    location=location,
                    input_format="org.apache.hadoop.mapred.TextInputFormat",
                    output_format="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
                    columns=[
                        glue.CfnTable.ColumnProperty(name=n, type=t) for n, t in AUDIT_COLUMNS
                    ],
                    serde_info=glue.CfnTable.SerdeInfoProperty(
                        serialization_library=JSON_SERDE,
                        parameters={"ignore.malformed.json": "FALSE", "case.insensitive": "TRUE"},
                    ),
                ),
            ),
        )

    def _workgroup(self, key: kms.IKey, config: EnvironmentConfig) -> athena.CfnWorkGroup:
        """Engine 3, enforced settings, a bytes-scanned cutoff, results under the data key."""
        return athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=names.ATHENA_WORKGROUP,
            description="Audit-trail queries; results encrypted with the data key",
            state="ENABLED",
            recursive_delete_option=not config.removal_retain,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=config.storage.athena_bytes_scanned_cutoff,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version="Athena engine version 3"
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{self.results.bucket_name}/results/",
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_KMS", kms_key=key.key_arn
                    ),
                ),
            ),
        )


class StorageStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(
            scope,
            construct_id,
            description="margin-risk-monitor: storage and analytics (DynamoDB, S3 audit, Athena)",
        )
        self.key = kms.Key(
            self,
            "DataKey",
            description="margin-risk-monitor data at rest: state, audit trail, query results",
            enable_key_rotation=True,
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        self.tables = StateTables(self, "Tables", key=self.key, config=config)
        self.audit = AuditBucket(self, "AuditTrail", key=self.key, config=config)
        self.analytics = AuditAnalytics(
            self,
            "Analytics",
            audit_bucket=self.audit.bucket,
            access_logs=self.audit.access_logs,
            key=self.key,
            config=config,
        )
        cdk.CfnOutput(self, "AuditBucketName", value=self.audit.bucket.bucket_name)
        cdk.CfnOutput(self, "StateTableName", value=self.tables.state.table_name)
        cdk.CfnOutput(self, "AthenaWorkGroup", value=self.analytics.workgroup.ref)
