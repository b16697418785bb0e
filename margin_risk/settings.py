"""House settings: one validated object, overridable by environment variables.

Environment variables use the prefix ``MR_`` and ``__`` for nesting, for example
``MR_MARGIN__LONG_RATE=0.30`` or ``MR_POLICY__CALL_DEADLINE_SECONDS=600`` or
``MR_MARGIN__SCENARIOS='[-0.05,-0.10]'``.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from margin_risk.params import DEFAULT_SCENARIOS, MarginParams, PolicyParams

Rate = float


class MarginSettings(BaseModel):
    """Maintenance rates and floors (spec section 1) and the stress grid (section 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    long_rate: Rate = Field(0.25, ge=0, le=1)
    short_rate: Rate = Field(0.30, ge=0)
    short_per_share: float = Field(5.00, ge=0)
    low_price_threshold: float = Field(5.00, ge=0)
    low_price_short_rate: Rate = Field(1.00, ge=0)
    low_price_short_per_share: float = Field(2.50, ge=0)
    concentration_addon: Rate = Field(0.0, ge=0)
    concentration_threshold: Rate = Field(0.30, gt=0, le=1)
    scenarios: tuple[float, ...] = Field(DEFAULT_SCENARIOS, min_length=1)

    @field_validator("scenarios")
    @classmethod
    def _finite_moves(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        for s in v:
            if not math.isfinite(s) or s <= -1.0 or s > 10.0:
                raise ValueError(f"scenario {s!r} must be a finite SPY move in (-1, 10]")
        return v

    def to_params(self) -> MarginParams:
        return MarginParams(**self.model_dump())


class PolicySettings(BaseModel):
    """Enforcement ladder thresholds (spec section 3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning_cushion: Rate = Field(0.05, ge=0)
    restrict_after_seconds: float = Field(1800.0, ge=0)
    call_deadline_seconds: float = Field(172800.0, ge=0)
    liquidation_deficiency_ratio: Rate = Field(0.5, ge=0)

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
