"""Pydantic models for every event, snapshot and audit record (spec sections 1, 4, 5).

Strict where it protects money: numbers must be finite JSON numbers (no NaN/Infinity, no strings),
identifiers non-empty strings, timestamps ISO-8601 with a zone. Unknown fields are kept
(``extra="allow"``) so producers can add fields without breaking consumers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
)

from margin_risk import names, untrusted

Id = Annotated[str, StringConstraints(min_length=1, strict=True)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
Positive = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]
Timestamp = untrusted.Timestamp  # ISO-8601 with a zone and a UTC date; never an epoch number


def iso(ts: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix, the wire format of every timestamp we write."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    @field_serializer("*", when_used="json", check_fields=False)
    def _ser(self, v: Any) -> Any:
        return iso(v) if isinstance(v, datetime) else v


# --- Inputs ------------------------------------------------------------------------------------
Side = Literal["BUY", "SELL", "SHORT", "COVER"]


class Fill(_Event):
    fill_id: Id
    account_id: Id
    symbol: Id
    side: Side
    quantity: Positive
    price: NonNegative
    timestamp: Timestamp
    correlation_id: Id


class PriceTick(_Event):
    symbol: Id
    price: NonNegative
    timestamp: Timestamp
    beta: Number | None = None


class CashTxn(_Event):
    txn_id: Id
    account_id: Id
    amount: Number
    timestamp: Timestamp
    correlation_id: Id


class BetaUpdate(_Event):
    symbol: Id
    beta: Number
    as_of: Timestamp


# --- Results (Spark -> Lambda) -----------------------------------------------------------------
class MarginCalc(_Event):
    """``margin.calc.v1``."""

    event_id: Id
    account_id: Id
    timestamp: Timestamp
    equity: Number
    maintenance_req: NonNegative
    excess: Number
    deficiency: NonNegative
    long_market_value: NonNegative
    short_market_value: NonNegative
    correlation_id: Id

    @property
    def gross(self) -> float:
        return self.long_market_value + self.short_market_value


class StressScenario(_Event):
    scenario: Number
    stressed_equity: Number
    stressed_maintenance_req: NonNegative
    stressed_deficiency: NonNegative


class StressResult(_Event):
    """``stress.beta_spy.v1``: one record per account and calculation, the whole grid in it."""

    event_id: Id
    account_id: Id
    timestamp: Timestamp
    scenarios: list[StressScenario] = Field(min_length=1)
    worst_scenario: Number
    worst_deficiency: NonNegative
    correlation_id: Id

    def worst(self) -> StressScenario:
        """The grid row named by ``worst_scenario`` (falls back to the largest deficiency)."""
        for row in self.scenarios:
            if row.scenario == self.worst_scenario:
                return row
        return max(self.scenarios, key=lambda r: r.stressed_deficiency)


EnforcementInput = MarginCalc | StressResult


# --- Audit (spec section 5) --------------------------------------------------------------------
DecisionType = Literal[
    "MARGIN_WARNING",
    "MARGIN_CALL_ISSUED",
    "ACCOUNT_RESTRICTED",
    "LIQUIDATION_TRIGGERED",
    "MARGIN_CALL_MET",
    "STRESS_BREACH",
]
DECISION_ORDER: tuple[str, ...] = (
    names.EVENT_MARGIN_WARNING,
    names.EVENT_MARGIN_CALL_ISSUED,
    names.EVENT_ACCOUNT_RESTRICTED,
    names.EVENT_LIQUIDATION_TRIGGERED,
    names.EVENT_MARGIN_CALL_MET,
    names.EVENT_STRESS_BREACH,
)


class AuditDetails(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    deficiency: float
    excess: float
    equity: float
    maintenance_req: float
    scenario: float | None = None
    reason: str


class AuditEvent(_Event):
    """One enforcement decision, as written to S3 and published to ``margin.calls.v1``."""

    event_id: Id
    event_type: DecisionType
    account_id: Id
    timestamp: Timestamp
    details: AuditDetails
    correlation_id: Id


# --- Snapshots (what-if) -----------------------------------------------------------------------
class Position(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    symbol: Id
    quantity: Number
    price: NonNegative
    beta: Number = 1.0


class AccountSnapshot(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    account_id: Id
    cash: Number
    positions: list[Position] = Field(default_factory=list)


def describe_error(err: ValidationError) -> str:
    """One line naming each offending field, for stderr, logs and the RecordsRejected metric."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"]) or "record"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def reason_code(err: ValidationError) -> str:
    """A low-cardinality reason for metric dimensions (``missing``, ``invalid_number``...)."""
    kinds = {e["type"] for e in err.errors(include_url=False)}
    if "missing" in kinds:
        return "missing_field"
    if kinds & {"finite_number"}:
        return "non_finite_number"
    if kinds & {"greater_than_equal", "greater_than"}:
        return "out_of_range"
    if kinds & {"json_invalid", "model_type"}:
        return "malformed_json"
    return "wrong_type"


def parse_enforcement_input(raw: dict[str, Any]) -> EnforcementInput:
    """Tell a ``stress.beta_spy.v1`` record from a ``margin.calc.v1`` one by its fields."""
    if "scenarios" in raw or "worst_deficiency" in raw:
        return StressResult.model_validate(raw)
    return MarginCalc.model_validate(raw)
