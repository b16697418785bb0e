"""The one place that owns every name shared across code, infrastructure and dashboards.

The Lambda, the Spark job, the CDK stacks, the dashboards and the alarms import these constants,
so a metric or topic can never be spelled two ways. Prefix-dependent names are built by functions
so each environment (dev, prod) gets its own resources from the same vocabulary.
"""

from __future__ import annotations

from typing import Final

PROJECT: Final = "margin-risk-monitor"

# --- Kafka topics (spec section 4) -------------------------------------------------------------
TOPIC_FILLS: Final = "fills.v1"
TOPIC_PRICES: Final = "prices.v1"
TOPIC_CASH: Final = "cash.v1"
TOPIC_BETAS: Final = "betas.v1"
# House margin requirements and desk actions, published by upstream systems like the inputs above.
TOPIC_HOUSE_REQUIREMENTS: Final = "house.requirements.v1"
TOPIC_DESK_ACTIONS: Final = "desk.actions.v1"
TOPIC_MARGIN_CALC: Final = "margin.calc.v1"
TOPIC_STRESS: Final = "stress.beta_spy.v1"
TOPIC_MARGIN_CALLS: Final = "margin.calls.v1"
TOPIC_RESTRICTIONS: Final = "restrictions.v1"
TOPIC_LIQUIDATIONS: Final = "liquidations.v1"
# Records the Spark job could not parse or validate, with a reason (not in the spec's table; ours).
TOPIC_REJECTED: Final = "rejected.v1"

INPUT_TOPICS: Final = (TOPIC_FILLS, TOPIC_PRICES, TOPIC_CASH, TOPIC_BETAS)
# What the Spark margin job reads: the inputs and the house requirements per symbol.
MARGIN_JOB_TOPICS: Final = (*INPUT_TOPICS, TOPIC_HOUSE_REQUIREMENTS)
RESULT_TOPICS: Final = (TOPIC_MARGIN_CALC, TOPIC_STRESS)
DECISION_TOPICS: Final = (TOPIC_MARGIN_CALLS, TOPIC_RESTRICTIONS, TOPIC_LIQUIDATIONS)
# What the enforcement function reads: the Spark job's results and the risk desk's actions.
ENFORCEMENT_INPUT_TOPICS: Final = (*RESULT_TOPICS, TOPIC_DESK_ACTIONS)
# What upstream systems write (the upstream producer policy grants exactly these), and what the
# risk desk writes (its own policy: whoever may publish a desk action is a desk principal only).
UPSTREAM_TOPICS: Final = (*INPUT_TOPICS, TOPIC_HOUSE_REQUIREMENTS)
DESK_TOPICS: Final = (TOPIC_DESK_ACTIONS,)
ALL_TOPICS: Final = (
    UPSTREAM_TOPICS + DESK_TOPICS + RESULT_TOPICS + DECISION_TOPICS + (TOPIC_REJECTED,)
)

# Kafka record headers that carry tracing context from the producer through Spark to the Lambda.
HEADER_CORRELATION_ID: Final = "correlation_id"
HEADER_ORIGIN_TS: Final = "origin_ts"

# --- Resource names ----------------------------------------------------------------------------
ACCOUNT_STATE_TABLE: Final = f"{PROJECT}-account-state"
IDEMPOTENCY_TABLE: Final = f"{PROJECT}-idempotency"
ENFORCEMENT_FUNCTION: Final = f"{PROJECT}-enforcement"
ALERTS_TOPIC: Final = f"{PROJECT}-alerts"
OPERATOR_TOPIC: Final = f"{PROJECT}-operator-notifications"
ON_FAILURE_QUEUE: Final = f"{PROJECT}-enforcement-on-failure"
EMR_APPLICATION: Final = f"{PROJECT}-spark"
EMR_JOB_NAME: Final = f"{PROJECT}-margin-job"
MSK_CLUSTER: Final = f"{PROJECT}-msk"
GLUE_DATABASE: Final = "margin_risk"
AUDIT_TABLE: Final = "audit_events"
ATHENA_WORKGROUP: Final = f"{PROJECT}-audit"
AUDIT_PREFIX: Final = "audit/"
# Records the enforcement function rejected (JSON lines: raw record + reason), same bucket.
REJECTED_PREFIX: Final = "rejected/"
UPSTREAM_PRODUCER_POLICY: Final = f"{PROJECT}-upstream-producer"
DESK_PRODUCER_POLICY: Final = f"{PROJECT}-desk-producer"
# Margin history: every margin.calc.v1 and stress.beta_spy.v1 result, as Parquet in the data
# bucket (layout and columns: margin_risk.archive), queried by Athena and replayed by `backtest`.
HISTORY_PREFIX: Final = "history/"
MARGIN_HISTORY_TABLE: Final = "margin_history"
STRESS_HISTORY_TABLE: Final = "stress_history"
OPS_DASHBOARD: Final = f"{PROJECT}-operations"
RISK_DASHBOARD: Final = f"{PROJECT}-risk"
# CloudWatch Logs group of the Spark job (EMR Serverless monitoringConfiguration).
SPARK_LOG_GROUP: Final = f"/aws/emr-serverless/{PROJECT}"


def audit_bucket_name(account: str, env: str = "dev") -> str:
    """Audit bucket: account-scoped because bucket names are global."""
    return f"{PROJECT}-audit-{env}-{account}"


def local_audit_bucket() -> str:
    """The bucket the embedded endpoint (moto / LocalStack) uses."""
    return f"{PROJECT}-audit-local"


# --- DynamoDB key layout of the account-state table ---------------------------------------------
PK_ACCOUNT: Final = "account_id"
SK_ITEM: Final = "sk"
# The head item holds the current state; history items "H#<version>" sort below it, so a
# `query --scan-index-forward false` returns the current state first, then history newest first.
SK_HEAD: Final = "LATEST"
SK_HISTORY_PREFIX: Final = "H#"

# --- Metrics (EMF, Powertools) -----------------------------------------------------------------
METRICS_NAMESPACE: Final = "MarginRiskMonitor"
SERVICE_ENFORCEMENT: Final = "enforcement"
SERVICE_SPARK: Final = "margin-job"

METRIC_MARGIN_CALLS_ISSUED: Final = "MarginCallsIssued"
METRIC_MARGIN_CALLS_MET: Final = "MarginCallsMet"
METRIC_MARGIN_WARNINGS: Final = "MarginWarnings"
METRIC_ACCOUNTS_RESTRICTED: Final = "AccountsRestricted"
METRIC_LIQUIDATIONS: Final = "LiquidationsTriggered"
METRIC_STRESS_BREACHES: Final = "StressBreaches"
METRIC_CALLS_EXTENDED: Final = "MarginCallsExtended"
METRIC_CALLS_WAIVED: Final = "MarginCallsWaived"
METRIC_DESK_ACTIONS_REJECTED: Final = "DeskActionsRejected"
METRIC_RECORDS_REJECTED: Final = "RecordsRejected"
METRIC_STALE_EVENTS: Final = "StaleEvents"
METRIC_DUPLICATE_EVENTS: Final = "DuplicateEvents"
METRIC_E2E_LATENCY: Final = "EndToEndLatency"
METRIC_BATCH_SIZE: Final = "BatchSize"
METRIC_RECORDS_PROCESSED: Final = "RecordsProcessed"
METRIC_RECORDS_FAILED: Final = "RecordsFailed"
METRIC_AUDIT_OBJECTS: Final = "AuditObjectsWritten"
METRIC_TOTAL_DEFICIENCY: Final = "TotalDeficiency"
METRIC_STATE_CONFLICTS: Final = "StateWriteConflicts"
# Emitted by the Spark job per micro-batch.
METRIC_INPUT_RECORDS: Final = "InputRecords"
METRIC_MARGIN_RESULTS: Final = "MarginResults"
METRIC_STRESS_RESULTS: Final = "StressResults"
METRIC_SPARK_BATCH_DURATION: Final = "MicroBatchDuration"

DIM_REASON: Final = "reason"
DIM_SERVICE: Final = "service"

# Audit/decision event types (spec section 3), in rule-evaluation order.
EVENT_MARGIN_WARNING: Final = "MARGIN_WARNING"
EVENT_MARGIN_CALL_ISSUED: Final = "MARGIN_CALL_ISSUED"
EVENT_ACCOUNT_RESTRICTED: Final = "ACCOUNT_RESTRICTED"
EVENT_LIQUIDATION_TRIGGERED: Final = "LIQUIDATION_TRIGGERED"
EVENT_MARGIN_CALL_MET: Final = "MARGIN_CALL_MET"
EVENT_STRESS_BREACH: Final = "STRESS_BREACH"
# Decisions on the risk desk's actions (desk.actions.v1), after the ladder's.
EVENT_MARGIN_CALL_EXTENDED: Final = "MARGIN_CALL_EXTENDED"
EVENT_MARGIN_CALL_WAIVED: Final = "MARGIN_CALL_WAIVED"
EVENT_DESK_ACTION_REJECTED: Final = "DESK_ACTION_REJECTED"
DESK_ACTION_EXTEND: Final = "EXTEND_CALL"
DESK_ACTION_WAIVE: Final = "WAIVE_CALL"
DECISION_METRIC: Final = {
    EVENT_MARGIN_WARNING: METRIC_MARGIN_WARNINGS,
    EVENT_MARGIN_CALL_ISSUED: METRIC_MARGIN_CALLS_ISSUED,
    EVENT_ACCOUNT_RESTRICTED: METRIC_ACCOUNTS_RESTRICTED,
    EVENT_LIQUIDATION_TRIGGERED: METRIC_LIQUIDATIONS,
    EVENT_MARGIN_CALL_MET: METRIC_MARGIN_CALLS_MET,
    EVENT_STRESS_BREACH: METRIC_STRESS_BREACHES,
    EVENT_MARGIN_CALL_EXTENDED: METRIC_CALLS_EXTENDED,
    EVENT_MARGIN_CALL_WAIVED: METRIC_CALLS_WAIVED,
    EVENT_DESK_ACTION_REJECTED: METRIC_DESK_ACTIONS_REJECTED,
}
