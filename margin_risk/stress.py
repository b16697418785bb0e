"""Beta-weighted SPY stress (spec section 2): the margin rules re-run at shocked prices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from margin_risk.money import ZERO, exact, to_decimal
from margin_risk.params import MarginParams
from margin_risk.rules import DEFAULT_PARAMS, Holding, MarginResult, margin_of_netted, net


@dataclass(frozen=True)
class ScenarioResult:
    scenario: Decimal
    result: MarginResult

    @property
    def breached(self) -> bool:
        return self.result.deficiency > 0


@exact
def shocked_price(price: Decimal | float, beta: Decimal | float, move: Decimal | float) -> Decimal:
    """price * (1 + beta * move), floored at zero."""
    return max(ZERO, to_decimal(price) * (1 + to_decimal(beta) * to_decimal(move)))


@exact
def stress_table(
    cash: Decimal | float,
    holdings: Iterable[Holding],
    p: MarginParams = DEFAULT_PARAMS,
    scenarios: Sequence[Decimal] | None = None,
) -> list[ScenarioResult]:
    """One full margin recomputation per SPY move, on the book netted by symbol.

    The $5 / $2.50 short floors follow the shocked price; the requirement is not held fixed.
    """
    grid = p.scenarios if scenarios is None else tuple(to_decimal(s) for s in scenarios)
    book = net(holdings)
    c = to_decimal(cash)
    out = []
    for s in grid:
        shocked = [
            Holding(h.symbol, h.quantity, shocked_price(h.price, h.beta, s), h.beta) for h in book
        ]
        out.append(ScenarioResult(s, margin_of_netted(c, shocked, p)))
    return out


def worst_scenario(rows: Sequence[ScenarioResult]) -> ScenarioResult:
    """Largest stressed deficiency; ties go to the lowest stressed excess, then grid order."""
    if not rows:
        raise ValueError("empty scenario grid")
    best = rows[0]
    for r in rows[1:]:
        d, bd = r.result.deficiency, best.result.deficiency
        if d > bd or (d == bd and r.result.excess < best.result.excess):
            best = r
    return best
