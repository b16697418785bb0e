"""House margin parameters as a plain frozen dataclass.

Why not pydantic here: the Spark job ships this module to EMR Serverless, whose image runs an older
Python without our compiled dependencies, so this file stays standard-library only and
Python 3.9 compatible. `margin_risk.settings.HouseSettings` validates and builds it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Tuple

DEFAULT_SCENARIOS: Tuple[float, ...] = (-0.08, -0.06, -0.04, -0.02, 0.0, 0.02, 0.04, 0.06)


@dataclass(frozen=True)
class MarginParams:
    """Every rate, floor and scenario of spec sections 1-2 (money in USD, rates as fractions)."""

    long_rate: float = 0.25
    short_rate: float = 0.30
    short_per_share: float = 5.00
    low_price_threshold: float = 5.00
    low_price_short_rate: float = 1.00
    low_price_short_per_share: float = 2.50
    concentration_addon: float = 0.0
    concentration_threshold: float = 0.30
    scenarios: Tuple[float, ...] = field(default=DEFAULT_SCENARIOS)

    def to_json(self) -> str:
        """Serialised form handed to the Spark job as an argument."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MarginParams:
        raw: Dict[str, Any] = json.loads(text)
        if "scenarios" in raw:
            raw["scenarios"] = tuple(float(s) for s in raw["scenarios"])
        return cls(**raw)


@dataclass(frozen=True)
class PolicyParams:
    """The enforcement ladder's thresholds (spec section 3)."""

    warning_cushion: float = 0.05
    restrict_after_seconds: float = 1800.0
    call_deadline_seconds: float = 172800.0
    liquidation_deficiency_ratio: float = 0.5
