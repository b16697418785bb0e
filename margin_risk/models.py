"""Pydantic models for every event, snapshot and audit record (spec sections 1, 4, 5).

Strict where it protects money: numbers must be finite JSON numbers (no NaN/Infinity, no strings)
carried as exact decimals within the bounds of `margin_risk.params`, identifiers non-empty strings,
timestamps ISO-8601 with a zone. Unknown fields are kept (``extra="allow"``) so producers can add
fields without breaking consumers. JSON is read with decimals for numbers (``json.loads`` with
``parse_float=Decimal``, then ``model_validate``) and written with `to_json`, which keeps every
digit: pydantic's own JSON parser takes numbers through binary floats, and its writer turns
decimals into strings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from margin_risk import money, names, params, untrusted

Id = Annotated[str, StringConstraints(min_length=1, strict=True)]
Timestamp = untrusted.Timestamp  # ISO-8601 with a zone and a UTC date; never an epoch number


def _number(v: Any) -> Decimal:
    """A JSON number as an exact decimal; strings and booleans are not numbers."""
    if isinstance(v, bool) or not isinstance(v, Decimal | int | float):
        raise PydanticCustomError("decimal_type", "Input should be a number")
    try:
        return money.to_decimal(v)
    except ValueError:
        raise PydanticCustomError("finite_number", "Input should be a finite number") from None


def _bounded(max_places: int, max_abs: Decimal, sign: str = "any") -> Callable[[Decimal], Decimal]:
    def check(v: Decimal) -> Decimal:
        if not v.is_finite():
            raise PydanticCustomError("finite_number", "Input should be a finite number")
        if sign == "positive" and v <= 0:
            raise PydanticCustomError("greater_than", "Input should be greater than 0")
        if sign == "non_negative" and v < 0:
            raise PydanticCustomError(
                "greater_than_equal", "Input should be greater than or equal to 0"
            )
        if v.copy_abs() >= max_abs:  # copy_abs never rounds or overflows (1E+999999999)
            raise PydanticCustomError(
                "magnitude",
                "Input should be less than {limit} in absolute value",
                {"limit": f"{max_abs:f}"},
            )
        if params.places(v) > max_places:
            raise PydanticCustomError(
                "decimal_places",
                "Input should have at most {places} decimal places",
                {"places": max_places},
            )
        return v

    return check


Quantity = Annotated[
    Decimal,
    BeforeValidator(_number),
    AfterValidator(_bounded(params.QUANTITY_PLACES, params.MAX_ABS_QUANTITY)),
]
PositiveQuantity = Annotated[
    Decimal,
    BeforeValidator(_number),
    AfterValidator(_bounded(params.QUANTITY_PLACES, params.MAX_ABS_QUANTITY, "positive")),
]
Price = Annotated[
    Decimal,
    BeforeValidator(_number),
    AfterValidator(_bounded(params.PRICE_PLACES, params.MAX_ABS_AMOUNT, "non_negative")),
]
Beta = Annotated[
    Decimal,
    BeforeValidator(_number),
    AfterValidator(_bounded(params.BETA_PLACES, params.MAX_ABS_BETA)),
]
Amount = Annotated[
    Decimal,
    BeforeValidator(_number),
    AfterValidator(_bounded(params.AMOUNT_PLACES, params.MAX_ABS_AMOUNT)),
]
Move = Annotated[
    Decimal,
    BeforeValidator(_number),
    AfterValidator(_bounded(params.RATE_PLACES, params.MAX_ABS_RATE)),
]
ResultAmount = Annotated[
    Decimal,
    BeforeValidator(_number),
    AfterValidator(_bounded(params.RESULT_SCALE, params.MAX_ABS_RESULT)),
]
NonNegativeResult = Annotated[
    Decimal,
    BeforeValidator(_number),
    AfterValidator(_bounded(params.RESULT_SCALE, params.MAX_ABS_RESULT, "non_negative")),
]


def iso(ts: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix, the wire format of every timestamp we write."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    @field_serializer("*", when_used="json", check_fields=False)
    def _ser(self, v: Any) -> Any:
        return iso(v) if isinstance(v, datetime) else v

    def to_json(self) -> str:
        """Compact JSON with exact decimal numbers and ``Z`` timestamps (the wire format)."""
        return money.dumps(self.model_dump(mode="python"))


# --- Inputs ------------------------------------------------------------------------------------
Side = Literal["BUY", "SELL", "SHORT", "COVER"]


class Fill(_Event):
    fill_id: Id
    account_id: Id
    symbol: Id
    side: Side
    quantity: PositiveQuantity
    price: Price
    timestamp: Timestamp
    correlation_id: Id


class PriceTick(_Event):
    symbol: Id
    price: Price
    timestamp: Timestamp
    beta: Beta | None = None


class CashTxn(_Event):
    txn_id: Id
    account_id: Id
    amount: Amount
    timestamp: Timestamp
    correlation_id: Id


# --- Results (Spark -> Lambda) -----------------------------------------------------------------
class MarginCalc(_Event):
    """``margin.calc.v1``."""

    event_id: Id
    account_id: Id
    timestamp: Timestamp
    equity: ResultAmount
    maintenance_req: NonNegativeResult
    excess: ResultAmount
    deficiency: NonNegativeResult
    long_market_value: NonNegativeResult
    short_market_value: NonNegativeResult
    correlation_id: Id

    @property
    def gross(self) -> Decimal:
        return self.long_market_value + self.short_market_value


class StressScenario(_Event):
    scenario: Move
    stressed_equity: ResultAmount
    stressed_maintenance_req: NonNegativeResult
    stressed_deficiency: NonNegativeResult


class StressResult(_Event):
    """``stress.beta_spy.v1``: one record per account and calculation, the whole grid in it."""

    event_id: Id
    account_id: Id
    timestamp: Timestamp
    scenarios: list[StressScenario] = Field(min_length=1)
    worst_scenario: Move
    worst_deficiency: NonNegativeResult
    correlation_id: Id

    def worst(self) -> StressScenario:
        """The grid row named by ``worst_scenario`` (falls back to the largest deficiency)."""
        for row in self.scenarios:
            if row.scenario == self.worst_scenario:
                return row
        return max(self.scenarios, key=lambda r: r.stressed_deficiency)


DeskActionType = Literal["EXTEND_CALL", "WAIVE_CALL"]


class DeskAction(_Event):
    """``desk.actions.v1``: the risk desk extends or waives an account's open call (section 3).

    ``until`` (the new liquidation deadline) belongs to ``EXTEND_CALL`` only: an extension
    without one, or a waiver with one, is not an action anyone can carry out as written.
    """

    action_id: Id
    account_id: Id
    action: DeskActionType
    until: Timestamp | None = None
    operator: Id
    reason: Id
    timestamp: Timestamp
    correlation_id: Id

    @property
    def event_id(self) -> str:
        """Actions are idempotent on ``action_id``; decisions derive their ids from it."""
        return self.action_id

    @model_validator(mode="after")
    def _until_matches_action(self) -> DeskAction:
        if self.action == names.DESK_ACTION_EXTEND and self.until is None:
            raise PydanticCustomError("missing", "EXTEND_CALL needs until (the new deadline)")
        if self.action == names.DESK_ACTION_WAIVE and self.until is not None:
            raise PydanticCustomError("extra_forbidden", "WAIVE_CALL takes no until")
        return self


EnforcementInput = MarginCalc | StressResult | DeskAction


# --- Audit (spec section 5) --------------------------------------------------------------------
DecisionType = Literal[
    "MARGIN_WARNING",
    "MARGIN_CALL_ISSUED",
    "ACCOUNT_RESTRICTED",
    "LIQUIDATION_TRIGGERED",
    "MARGIN_CALL_MET",
    "STRESS_BREACH",
    "MARGIN_CALL_EXTENDED",
    "MARGIN_CALL_WAIVED",
    "DESK_ACTION_REJECTED",
]
DESK_DECISIONS: frozenset[str] = frozenset(
    {
        names.EVENT_MARGIN_CALL_EXTENDED,
        names.EVENT_MARGIN_CALL_WAIVED,
        names.EVENT_DESK_ACTION_REJECTED,
    }
)
# Rule order within one timestamp; a desk action's decision sorts after the ladder's.
DECISION_ORDER: tuple[str, ...] = (
    names.EVENT_MARGIN_WARNING,
    names.EVENT_MARGIN_CALL_ISSUED,
    names.EVENT_ACCOUNT_RESTRICTED,
    names.EVENT_LIQUIDATION_TRIGGERED,
    names.EVENT_MARGIN_CALL_MET,
    names.EVENT_STRESS_BREACH,
    names.EVENT_MARGIN_CALL_EXTENDED,
    names.EVENT_MARGIN_CALL_WAIVED,
    names.EVENT_DESK_ACTION_REJECTED,
)


class AuditDetails(BaseModel):
    """A decision's figures and why. A ladder decision carries the triggering result's amounts;
    a desk decision has no result behind it: it carries the call's amount as ``deficiency`` (when
    a call is open) and the action's ``operator`` and ``reason`` (see `margin_risk.desk_rules`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    deficiency: Decimal | None = None
    excess: Decimal | None = None
    equity: Decimal | None = None
    maintenance_req: Decimal | None = None
    scenario: Decimal | None = None
    reason: str


class AuditEvent(_Event):
    """One enforcement decision, as written to S3 and published to ``margin.calls.v1``."""

    event_id: Id
    event_type: DecisionType
    account_id: Id
    timestamp: Timestamp
    details: AuditDetails
    correlation_id: Id

    @model_validator(mode="after")
    def _amounts_of_ladder_decisions(self) -> AuditEvent:
        if self.event_type in DESK_DECISIONS:
            if not isinstance(getattr(self.details, "operator", None), str):
                raise PydanticCustomError("missing", "a desk decision needs details.operator")
            if self.event_type == names.EVENT_MARGIN_CALL_EXTENDED:
                untrusted.parse_timestamp(getattr(self.details, "until", None))
            return self
        d = self.details
        if None in (d.deficiency, d.excess, d.equity, d.maintenance_req):
            raise PydanticCustomError(
                "missing", "details: deficiency, excess, equity and maintenance_req are required"
            )
        return self


# --- Snapshots (what-if) -----------------------------------------------------------------------
class Position(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    symbol: Id
    quantity: Quantity
    price: Price
    beta: Beta = Decimal(1)


class AccountSnapshot(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    account_id: Id
    cash: Amount
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
    if kinds & {"greater_than_equal", "greater_than", "magnitude"}:
        return "out_of_range"
    if "decimal_places" in kinds:
        return "too_many_decimal_places"
    if kinds & {"json_invalid", "model_type"}:
        return "malformed_json"
    return "wrong_type"


def parse_enforcement_input(raw: dict[str, Any]) -> EnforcementInput:
    """Tell ``desk.actions.v1``, ``stress.beta_spy.v1`` and ``margin.calc.v1`` records apart by
    their fields."""
    if "action_id" in raw:
        return DeskAction.model_validate(raw)
    if "scenarios" in raw or "worst_deficiency" in raw:
        return StressResult.model_validate(raw)
    return MarginCalc.model_validate(raw)
