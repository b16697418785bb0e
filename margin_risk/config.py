"""The enforcement Lambda's environment contract, as code.

The CDK stack builds the function's ``environment=`` from these field names (see
`EnforcementConfig.env_keys`), and an infrastructure test asserts they match, so a rename breaks
a test rather than production. The AWS endpoint is not here: boto3 honours the standard
``AWS_ENDPOINT_URL`` variable, the one setting that points the same code at the embedded moto
server, a LocalStack, or (unset) real AWS.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from margin_risk import names


class EnforcementConfig(BaseSettings):
    """Resources the enforcement function talks to, read from its environment."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, case_sensitive=False)

    state_table_name: str = names.ACCOUNT_STATE_TABLE
    idempotency_table_name: str = names.IDEMPOTENCY_TABLE
    audit_bucket: str = names.local_audit_bucket()
    audit_prefix: str = names.AUDIT_PREFIX
    operator_topic_arn: str = ""
    # Kafka publishing of decisions: empty bootstrap disables it (the audit trail keeps all).
    kafka_bootstrap: str = ""
    kafka_auth: Literal["iam", "none"] = "iam"
    decisions_topic: str = names.TOPIC_MARGIN_CALLS
    restrictions_topic: str = names.TOPIC_RESTRICTIONS
    liquidations_topic: str = names.TOPIC_LIQUIDATIONS
    # Powertools idempotency record lifetime for whole batches.
    idempotency_ttl_seconds: int = Field(3600, ge=60)
    # Write a history item per account and batch beside the head item.
    history_enabled: bool = True

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
