"""Beta-weighted SPY stress (spec section 2): the margin rules re-run at shocked prices."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from margin_risk.params import MarginParams
from margin_risk.rules import DEFAULT_PARAMS, Holding, MarginResult, compute_margin


@dataclass(frozen=True)
class ScenarioResult:
    scenario: float
    result: MarginResult

    @property
    def breached(self) -> bool:
        return self.result.deficiency > 0


def shocked_price(price: float, beta: float, move: float) -> float:
    """price * (1 + beta * move), floored at zero."""
    return max(0.0, price * (1.0 + beta * move))


def stress_table(
    cash: float,
    holdings: Sequence[Holding],
    p: MarginParams = DEFAULT_PARAMS,
    scenarios: Sequence[float] | None = None,
) -> list[ScenarioResult]:
    """One full margin recomputation per SPY move.

    The $5 / $2.50 short floors follow the shocked price; the requirement is not held fixed.
    """
    grid = p.scenarios if scenarios is None else scenarios
    out = []
    for s in grid:
        shocked = [
            Holding(h.symbol, h.quantity, shocked_price(h.price, h.beta, s), h.beta)
            for h in holdings
        ]
        out.append(ScenarioResult(float(s), compute_margin(cash, shocked, p)))
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
