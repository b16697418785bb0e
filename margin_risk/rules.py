"""Account maintenance margin (spec section 1): equity, requirement, excess and deficiency.

Pure functions over floats (USD). Nothing is rounded here: rounding to cents happens only when a
result is presented (`MarginResult.rounded`), so comparisons use the unrounded values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from margin_risk.params import MarginParams

DEFAULT_PARAMS = MarginParams()
_CENT = Decimal("0.01")


@dataclass(frozen=True)
class Holding:
    """A signed position at a price: quantity > 0 long, < 0 short."""

    symbol: str
    quantity: float
    price: float
    beta: float = 1.0


@dataclass(frozen=True)
class MarginResult:
    long_market_value: float
    short_market_value: float
    equity: float
    maintenance_req: float

    @property
    def excess(self) -> float:
        return self.equity - self.maintenance_req

    @property
    def deficiency(self) -> float:
        return max(0.0, self.maintenance_req - self.equity)

    @property
    def gross(self) -> float:
        return self.long_market_value + self.short_market_value


def cents(x: float) -> float:
    """Present a USD amount rounded half-away-from-zero to cents (never used for comparisons)."""
    r = float(Decimal(repr(x)).quantize(_CENT, rounding=ROUND_HALF_UP))
    return 0.0 if r == 0 else r


def position_requirement(quantity: float, price: float, p: MarginParams = DEFAULT_PARAMS) -> float:
    """Maintenance requirement of one position in USD, before any concentration add-on."""
    market_value = abs(quantity * price)
    if quantity > 0:
        return p.long_rate * market_value
    if quantity < 0:
        shares = -quantity
        if price >= p.low_price_threshold:
            return max(p.short_per_share * shares, p.short_rate * market_value)
        return max(p.low_price_short_per_share * shares, p.low_price_short_rate * market_value)
    return 0.0


def compute_margin(
    cash: float, holdings: Iterable[Holding], p: MarginParams = DEFAULT_PARAMS
) -> MarginResult:
    """Equity = cash + LMV - SMV; requirement = per-position requirements plus add-ons."""
    lmv = 0.0
    smv = 0.0
    req = 0.0
    values: list[float] = []
    for h in holdings:
        mv = h.quantity * h.price
        if mv > 0:
            lmv += mv
        elif mv < 0:
            smv += -mv
        req += position_requirement(h.quantity, h.price, p)
        values.append(abs(mv))
    if p.concentration_addon > 0:
        gross = lmv + smv
        for v in values:
            if v > p.concentration_threshold * gross:
                req += p.concentration_addon * v
    return MarginResult(lmv, smv, cash + lmv - smv, req)
