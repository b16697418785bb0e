"""House settings: one validated object, overridable by environment variables.

Environment variables use the prefix ``MR_`` and ``__`` for nesting, for example
``MR_MARGIN__LONG_RATE=0.30`` or ``MR_POLICY__CALL_DEADLINE_SECONDS=600`` or
``MR_MARGIN__SCENARIOS='[-0.05,-0.10]'``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from margin_risk import params
from margin_risk.params import DEFAULT_SCENARIOS, MarginParams, PolicyParams


def _house_number(v: Decimal) -> Decimal:
    """Rates, floors and moves are exact decimals the Spark job can carry (see params)."""
    if problem := params.out_of_bounds(
        v, params.RATE_PLACES, params.MAX_ABS_RATE, "value", exclusive=False
    ):
        raise ValueError(problem)
    return v


Rate = Annotated[Decimal, AfterValidator(_house_number)]
MIN_MOVE = Decimal(-1)
MAX_MOVE = Decimal(1)


def check_move(s: Decimal) -> Decimal:
    """A SPY move of the stress grid: exact, within (-1, 1] (a fall of 100% or more is no
    scenario, and a rise beyond 100% leaves the range the exact kernel is sized for)."""
    if not s.is_finite() or s <= MIN_MOVE or s > MAX_MOVE:
        raise ValueError(f"scenario {s} must be a finite SPY move in (-1, 1]")
    if params.places(s) > params.RATE_PLACES:
        raise ValueError(f"scenario {s} has more than {params.RATE_PLACES} decimal places")
    return s


class MarginSettings(BaseModel):
    """Maintenance rates and floors (spec section 1) and the stress grid (section 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    long_rate: Rate = Field(Decimal("0.25"), ge=0, le=1)
    short_rate: Rate = Field(Decimal("0.30"), ge=0)
    short_per_share: Rate = Field(Decimal("5.00"), ge=0)
    low_price_threshold: Rate = Field(Decimal("5.00"), ge=0)
    low_price_short_rate: Rate = Field(Decimal("1.00"), ge=0)
    low_price_short_per_share: Rate = Field(Decimal("2.50"), ge=0)
    concentration_addon: Rate = Field(Decimal("0"), ge=0)
    concentration_threshold: Rate = Field(Decimal("0.30"), gt=0, le=1)
    scenarios: tuple[Decimal, ...] = Field(DEFAULT_SCENARIOS, min_length=1)

    @field_validator("scenarios")
    @classmethod
    def _finite_moves(cls, v: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        return tuple(check_move(s) for s in v)

    def to_params(self) -> MarginParams:
        return MarginParams(**self.model_dump())


class PolicySettings(BaseModel):
    """Enforcement ladder thresholds (spec section 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning_cushion: Rate = Field(Decimal("0.05"), ge=0)
    restrict_after_seconds: float = Field(1800.0, ge=0, allow_inf_nan=False)
    call_deadline_seconds: float = Field(172800.0, ge=0, allow_inf_nan=False)
    liquidation_deficiency_ratio: Rate = Field(Decimal("0.5"), ge=0)

    def to_params(self) -> PolicyParams:
        return PolicyParams(**self.model_dump())


class HouseSettings(BaseSettings):
    """The desk's house settings; defaults are the spec's."""

    model_config = SettingsConfigDict(
        env_prefix="MR_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    margin: MarginSettings = MarginSettings()
    policy: PolicySettings = PolicySettings()


def load_house_settings() -> HouseSettings:
    """Settings from the environment (defaults where unset)."""
    return HouseSettings()
