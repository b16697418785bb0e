"""Per-environment deployment settings, read from the `environments` block of cdk.json context.

Every size, retention and limit the stacks use comes from here, validated once, so a typo in
cdk.json fails the synth with a clear message instead of deploying a half-configured system.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from margin_risk import names

CONTEXT_ENVIRONMENTS = "environments"
# `-c env=dev` (or `-c env=dev,prod`) picks the environments to synthesize.
CONTEXT_ENV = "env"
# `-c skipLambdaDeps=true` stages Lambda code without `pip install` (tests, offline synth).
CONTEXT_SKIP_DEPS = "skipLambdaDeps"
# Same switch as an environment variable, for tools that cannot pass context.
ENV_SKIP_DEPS = "MR_CDK_SKIP_LAMBDA_DEPS"
STACK_PREFIX = "MarginRisk"


def stack_name(env: str, part: str) -> str:
    """CloudFormation stack names: `MarginRisk-<env>-<Part>`."""
    return f"{STACK_PREFIX}-{env}-{part}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkConfig(_Strict):
    cidr: str = "10.40.0.0/16"
    max_azs: int = Field(2, ge=2, le=3)
    nat_gateways: int = Field(1, ge=1)
    flow_log_retention_days: int = 30


class TopicConfig(_Strict):
    partitions: int = Field(ge=1)
    retention_hours: int = Field(ge=1)


class MskConfig(_Strict):
    kafka_version: str = "3.9.x"
    broker_instance_type: str = "kafka.t3.small"
    # Brokers in total; must be a multiple of the number of AZs.
    broker_count: int = Field(2, ge=2)
    volume_gb: int = Field(100, ge=1)
    replication_factor: int = Field(2, ge=1)
    min_insync_replicas: int = Field(1, ge=1)
    log_retention_days: int = 30
    enhanced_monitoring: Literal[
        "DEFAULT", "PER_BROKER", "PER_TOPIC_PER_BROKER", "PER_TOPIC_PER_PARTITION"
    ] = "PER_BROKER"
    default_topic: TopicConfig = TopicConfig(partitions=6, retention_hours=168)
    # Per-topic overrides by topic name (names.ALL_TOPICS).
    topics: dict[str, TopicConfig] = {}

    @model_validator(mode="after")
    def _known_topics(self) -> MskConfig:
        unknown = set(self.topics) - set(names.ALL_TOPICS)
        if unknown:
            raise ValueError(f"unknown topics in msk.topics: {sorted(unknown)}")
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError("min_insync_replicas must not exceed replication_factor")
        return self

    def topic(self, name: str) -> TopicConfig:
        return self.topics.get(name, self.default_topic)


class StorageConfig(_Strict):
    # Audit trail: write-once. COMPLIANCE cannot be shortened or removed by anyone (root included).
    audit_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "GOVERNANCE"
    audit_retention_days: int = Field(2190, ge=1)  # six years: SEC 17a-4(a)
    audit_infrequent_access_days: int = Field(30, ge=30)
    audit_glacier_ir_days: int = Field(90, ge=31)
    audit_deep_archive_days: int = Field(365, ge=91)
    access_log_retention_days: int = 365
    athena_results_retention_days: int = 30
    athena_bytes_scanned_cutoff: int = Field(10 * 1024**3, ge=10 * 1024**2)
    audit_first_year: int = 2025
    audit_last_year: int = 2100
    deletion_protection: bool = False

    @model_validator(mode="after")
    def _ordered_tiers(self) -> StorageConfig:
        tiers = (
            self.audit_infrequent_access_days,
            self.audit_glacier_ir_days,
            self.audit_deep_archive_days,
        )
        if list(tiers) != sorted(set(tiers)):
            raise ValueError("audit lifecycle tiers must be strictly increasing in days")
        return self


class EmrConfig(_Strict):
    architecture: Literal["ARM64", "X86_64"] = "ARM64"
    max_cpu: str = "16 vCPU"
    max_memory: str = "64 GB"
    max_disk: str = "200 GB"
    idle_timeout_minutes: int = Field(15, ge=1)
    log_retention_days: int = 30
    checkpoint_retention_days: int = 30


class LambdaConfig(_Strict):
    architecture: Literal["arm64", "x86_64"] = "arm64"
    memory_mb: int = Field(1024, ge=128, le=10240)
    timeout_seconds: int = Field(60, ge=1, le=900)
    # At least the partitions of the topics it reads (3 x the default 6; see EnvironmentConfig).
    reserved_concurrency: int = Field(18, ge=1)
    log_retention_days: int = 30
    batch_size: int = Field(100, ge=1, le=10000)
    batching_window_seconds: int = Field(1, ge=0, le=300)
    # Enhanced Kafka error handling (retries, bisect, partial batch) needs provisioned pollers.
    min_pollers: int = Field(1, ge=1)
    max_pollers: int = Field(2, ge=1)
    retry_attempts: int = Field(5, ge=0, le=10)
    max_record_age_seconds: int = Field(3600, ge=60)
    on_failure_retention_days: int = Field(14, ge=1, le=14)
    idempotency_ttl_seconds: int = Field(3600, ge=60)
    starting_position: Literal["TRIM_HORIZON", "LATEST"] = "TRIM_HORIZON"


class EnvironmentConfig(_Strict):
    """One deployment environment (dev, prod): its sizes, retentions and alarm e-mail."""

    name: str
    alarm_email: str = ""
    network: NetworkConfig = NetworkConfig()
    msk: MskConfig = MskConfig()
    storage: StorageConfig = StorageConfig()
    emr: EmrConfig = EmrConfig()
    enforcement: LambdaConfig = LambdaConfig()
    # House settings for the Lambda, as MR_ environment variables (see margin_risk.settings).
    house_settings: dict[str, str] = {}
    removal_retain: bool = True
    tags: dict[str, str] = {}

    @model_validator(mode="after")
    def _checks(self) -> EnvironmentConfig:
        if self.msk.broker_count % self.network.max_azs:
            raise ValueError("msk.broker_count must be a multiple of network.max_azs")
        if self.msk.replication_factor > self.msk.broker_count:
            raise ValueError("msk.replication_factor must not exceed msk.broker_count")
        bad = [k for k in self.house_settings if not k.startswith("MR_")]
        if bad:
            raise ValueError(f"house_settings keys must start with MR_: {bad}")
        if self.enforcement.min_pollers > self.enforcement.max_pollers:
            raise ValueError("enforcement.min_pollers must not exceed max_pollers")
        # Lambda runs at most one invocation per Kafka partition at a time: reserve at least
        # that many, so the function is never throttled by its own reservation.
        topics = names.ENFORCEMENT_INPUT_TOPICS
        partitions = sum(self.msk.topic(t).partitions for t in topics)
        if self.enforcement.reserved_concurrency < partitions:
            raise ValueError(
                f"enforcement.reserved_concurrency ({self.enforcement.reserved_concurrency}) is "
                f"below the {partitions} partitions of {topics}"
            )
        return self


def load_environments(context: dict[str, Any] | None) -> dict[str, EnvironmentConfig]:
    """Validate every environment of the `environments` context block."""
    if not context:
        raise ValueError(f"cdk.json context has no {CONTEXT_ENVIRONMENTS!r} block")
    return {name: EnvironmentConfig(name=name, **raw) for name, raw in context.items()}


def truthy(value: object) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}
