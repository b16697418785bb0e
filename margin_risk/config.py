"""The enforcement Lambda's environment contract, as code.

The CDK stack builds the function's ``environment=`` from these field names (see
`EnforcementConfig.env_keys`), and an infrastructure test asserts they match, so a rename breaks
a test rather than production. The AWS endpoint is not here: boto3 honours the standard
``AWS_ENDPOINT_URL`` variable, the one setting that points the same code at the embedded moto
server, a LocalStack, or (unset) real AWS.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from margin_risk import names

# The operator topic of a local config before the embedded endpoint has created it (see `local`).
LOCAL_TOPIC_PENDING = "local:operator-topic-not-provisioned-yet"


class EnforcementConfig(BaseSettings):
    """Resources the enforcement function talks to, read from its environment.

    The resources have no defaults: in AWS a variable the stack failed to set stops the function
    at its cold start with the field's name, instead of silently writing to a local bucket or
    dropping the operators' notifications. Local tools start from `local()`.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=False)

    state_table_name: str = Field(min_length=1)
    idempotency_table_name: str = Field(min_length=1)
    audit_bucket: str = Field(min_length=1)
    audit_prefix: str = names.AUDIT_PREFIX
    operator_topic_arn: str = Field(min_length=1)
    # Kafka publishing of decisions: must be set; an empty value disables it (local runs only:
    # the audit trail keeps every decision).
    kafka_bootstrap: str
    kafka_auth: Literal["iam", "none"] = "iam"
    decisions_topic: str = names.TOPIC_MARGIN_CALLS
    restrictions_topic: str = names.TOPIC_RESTRICTIONS
    liquidations_topic: str = names.TOPIC_LIQUIDATIONS
    # Powertools idempotency record lifetime for whole batches.
    idempotency_ttl_seconds: int = Field(3600, ge=60)
    # Write a history item per account and batch beside the head item.
    history_enabled: bool = True

    @classmethod
    def local(cls, **overrides: Any) -> EnforcementConfig:
        """The names the embedded endpoint provisions (`margin_risk.tools.local.moto_server`),
        with ``overrides`` on top; never used in AWS."""
        values: dict[str, Any] = {
            "state_table_name": names.ACCOUNT_STATE_TABLE,
            "idempotency_table_name": names.IDEMPOTENCY_TABLE,
            "audit_bucket": names.local_audit_bucket(),
            "operator_topic_arn": LOCAL_TOPIC_PENDING,
            "kafka_bootstrap": "",
        }
        return cls(**(values | overrides))

    @classmethod
    def env_keys(cls) -> list[str]:
        """The environment variable names, upper-cased as the stack sets them."""
        return sorted(k.upper() for k in cls.model_fields)

    def to_environment(self) -> dict[str, str]:
        """Render as a Lambda ``environment=`` mapping."""
        out: dict[str, str] = {}
        for k, v in self.model_dump().items():
            out[k.upper()] = str(v).lower() if isinstance(v, bool) else str(v)
        return out
