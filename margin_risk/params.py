"""House margin parameters and the limits of exact money, as plain standard-library code.

Why not pydantic here: the Spark job ships this module to EMR Serverless, whose image runs an older
Python without our compiled dependencies, so this file stays standard-library only and
Python 3.9 compatible. `margin_risk.settings.HouseSettings` validates and builds it.

Exact money: every amount, quantity, price, beta, rate and SPY move is a ``decimal.Decimal`` taken
from its decimal text as written. Inputs carry at most ``*_PLACES`` decimal places and stay below
the ``MAX_ABS_*`` magnitudes; with those bounds every intermediate of the margin and stress formulas
fits in 38 significant digits with 20 decimal places (Spark's widest decimal), so the core and the
Spark job compute the same exact values, whatever the order of their sums.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Dict, Optional, Tuple

# --- limits of exact inputs (spec section 1) -----------------------------------------------------
QUANTITY_PLACES = 4  # fractional shares to 1/10,000
PRICE_PLACES = 4  # sub-penny quotes (Reg NMS: $0.0001 below $1)
BETA_PLACES = 4
AMOUNT_PLACES = 4  # cash balances and cash.v1 amounts
RATE_PLACES = 4  # house rates, per-share floors, SPY moves, policy ratios
MAX_ABS_AMOUNT = Decimal("1e15")  # USD: cash, price, market value of one position
MAX_ABS_QUANTITY = Decimal("1e12")
MAX_ABS_BETA = Decimal("100")
MAX_ABS_RATE = Decimal("10")  # rates, per-share floors (USD) and moves are house settings
# Amounts inside results (margin.calc.v1, stress.beta_spy.v1): sums of bounded positions, and
# stressed values, stay below this; anything larger is a corrupt record, not an account.
MAX_ABS_RESULT = Decimal("1e18")
# The widest exact intermediate: a stressed requirement carries rate x quantity x price x beta x
# move places (4 x 5 = 20) and stays below 1e18 USD with the bounds above.
RESULT_SCALE = 20
RESULT_PRECISION = 38

DEFAULT_SCENARIOS: Tuple[Decimal, ...] = tuple(
    Decimal(s) for s in ("-0.08", "-0.06", "-0.04", "-0.02", "0", "0.02", "0.04", "0.06")
)


def places(x: Decimal) -> int:
    """Decimal places a value needs as written (``33.590`` needs 2, ``1E+2`` none)."""
    exponent = x.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def out_of_bounds(
    x: Decimal, max_places: int, max_abs: Decimal, what: str, exclusive: bool = True
) -> Optional[str]:
    """Why ``x`` cannot be carried exactly (one line), or None when it can."""
    if not x.is_finite():
        return f"{what} must be a finite number"
    if (abs(x) >= max_abs) if exclusive else (abs(x) > max_abs):
        return f"{what} {x} is beyond what a brokerage can hold (|{what}| < {max_abs:f})"
    if places(x) > max_places:
        return f"{what} {x} has more than {max_places} decimal places"
    return None


def _decimal(x: Any) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


@dataclass(frozen=True)
class MarginParams:
    """Every rate, floor and scenario of spec sections 1-2 (money in USD, rates as fractions)."""

    long_rate: Decimal = Decimal("0.25")
    short_rate: Decimal = Decimal("0.30")
    short_per_share: Decimal = Decimal("5.00")
    low_price_threshold: Decimal = Decimal("5.00")
    low_price_short_rate: Decimal = Decimal("1.00")
    low_price_short_per_share: Decimal = Decimal("2.50")
    concentration_addon: Decimal = Decimal("0")
    concentration_threshold: Decimal = Decimal("0.30")
    scenarios: Tuple[Decimal, ...] = field(default=DEFAULT_SCENARIOS)

    def __post_init__(self) -> None:
        # Accept ints, floats and strings from callers and tests, but carry exact decimals: a
        # float 0.3 becomes Decimal("0.3") (its shortest text), never 0.29999999999999998889.
        for name in (
            "long_rate",
            "short_rate",
            "short_per_share",
            "low_price_threshold",
            "low_price_short_rate",
            "low_price_short_per_share",
            "concentration_addon",
            "concentration_threshold",
        ):
            object.__setattr__(self, name, _decimal(getattr(self, name)))
        object.__setattr__(self, "scenarios", tuple(_decimal(s) for s in self.scenarios))

    def to_json(self) -> str:
        """Serialised form handed to the Spark job as an argument (decimals as strings)."""
        raw = asdict(self)
        return json.dumps(
            {k: ([str(s) for s in v] if isinstance(v, tuple) else str(v)) for k, v in raw.items()},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> MarginParams:
        raw: Dict[str, Any] = json.loads(text, parse_float=Decimal)
        values: Dict[str, Any] = {k: _decimal(v) for k, v in raw.items() if k != "scenarios"}
        if "scenarios" in raw:
            values["scenarios"] = tuple(_decimal(s) for s in raw["scenarios"])
        return cls(**values)


@dataclass(frozen=True)
class PolicyParams:
    """The enforcement ladder's thresholds (spec section 3)."""

    warning_cushion: Decimal = Decimal("0.05")
    restrict_after_seconds: float = 1800.0
    call_deadline_seconds: float = 172800.0
    liquidation_deficiency_ratio: Decimal = Decimal("0.5")

    def __post_init__(self) -> None:
        for name in ("warning_cushion", "liquidation_deficiency_ratio"):
            object.__setattr__(self, name, _decimal(getattr(self, name)))
