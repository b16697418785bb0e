"""Account maintenance margin (spec section 1): equity, requirement, excess and deficiency.

Pure functions over exact decimals (USD). Nothing is rounded here: rounding to cents happens only
when a result is presented (`cents`), so comparisons use the exact values. Rows of one symbol
are one position: `net` sums them before any rule applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from margin_risk.money import ZERO, cents, exact, to_decimal
from margin_risk.params import MarginParams

__all__ = [
    "DEFAULT_PARAMS",
    "Holding",
    "InvalidBook",
    "MarginResult",
    "cents",
    "compute_margin",
    "margin_of_netted",
    "net",
    "position_requirement",
]

DEFAULT_PARAMS = MarginParams()
ONE = Decimal(1)


class InvalidBook(ValueError):
    """A snapshot whose rows cannot describe one book (one-line reason)."""


@dataclass(frozen=True)
class Holding:
    """A signed position at a price: quantity > 0 long, < 0 short. Numbers are exact decimals
    (ints, floats and strings given by callers are taken as written)."""

    symbol: str
    quantity: Decimal
    price: Decimal
    beta: Decimal = ONE

    def __post_init__(self) -> None:
        for name in ("quantity", "price", "beta"):
            object.__setattr__(self, name, to_decimal(getattr(self, name)))


@dataclass(frozen=True)
class MarginResult:
    long_market_value: Decimal
    short_market_value: Decimal
    equity: Decimal
    maintenance_req: Decimal

    @property
    @exact
    def excess(self) -> Decimal:
        return self.equity - self.maintenance_req

    @property
    @exact
    def deficiency(self) -> Decimal:
        return max(ZERO, self.maintenance_req - self.equity)

    @property
    @exact
    def gross(self) -> Decimal:
        return self.long_market_value + self.short_market_value


@exact
def net(holdings: Iterable[Holding]) -> list[Holding]:
    """One holding per symbol, quantities summed, in first-seen order; flat positions dropped.

    Rows of one symbol must agree on price and beta: a book with two marks for one symbol is not
    a book, and charging its rows as separate positions would dodge the concentration add-on.
    """
    merged: dict[str, Holding] = {}
    for h in holdings:
        seen = merged.get(h.symbol)
        if seen is None:
            merged[h.symbol] = h
            continue
        if seen.price != h.price or seen.beta != h.beta:
            raise InvalidBook(
                f"symbol {h.symbol}: rows disagree (price {seen.price} vs {h.price},"
                f" beta {seen.beta} vs {h.beta})"
            )
        merged[h.symbol] = Holding(h.symbol, seen.quantity + h.quantity, h.price, h.beta)
    return [h for h in merged.values() if h.quantity != 0]


@exact
def position_requirement(
    quantity: Decimal | float, price: Decimal | float, p: MarginParams = DEFAULT_PARAMS
) -> Decimal:
    """Maintenance requirement of one position in USD, before any concentration add-on."""
    quantity, price = to_decimal(quantity), to_decimal(price)
    market_value = abs(quantity * price)
    if quantity > 0:
        return p.long_rate * market_value
    if quantity < 0:
        shares = -quantity
        if price >= p.low_price_threshold:
            return max(p.short_per_share * shares, p.short_rate * market_value)
        return max(p.low_price_short_per_share * shares, p.low_price_short_rate * market_value)
    return ZERO


@exact
def margin_of_netted(
    cash: Decimal, book: Sequence[Holding], p: MarginParams = DEFAULT_PARAMS
) -> MarginResult:
    """`compute_margin` of a book already netted by symbol (stress reuses one netting)."""
    lmv = smv = req = ZERO
    for h in book:
        mv = h.quantity * h.price
        if mv > 0:
            lmv += mv
        elif mv < 0:
            smv -= mv
        req += position_requirement(h.quantity, h.price, p)
    if p.concentration_addon > 0:
        limit = p.concentration_threshold * (lmv + smv)
        for h in book:
            v = abs(h.quantity * h.price)
            if v > limit:
                req += p.concentration_addon * v
    return MarginResult(lmv, smv, to_decimal(cash) + lmv - smv, req)


def compute_margin(
    cash: Decimal | float, holdings: Iterable[Holding], p: MarginParams = DEFAULT_PARAMS
) -> MarginResult:
    """Equity = cash + LMV - SMV; requirement = per-position requirements plus add-ons, on the
    book netted by symbol. Raises `InvalidBook` when rows of one symbol disagree."""
    return margin_of_netted(to_decimal(cash), net(holdings), p)
