"""Builders of realistic enforcement inputs, shared by the test tiers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from margin_risk.models import DeskAction, MarginCalc, StressResult
from margin_risk.rules import Holding, compute_margin
from margin_risk.stress import stress_table, worst_scenario

T0 = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)
_ids = count(1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def margin_calc(
    account: str,
    seconds: float,
    cash: float,
    book: list[Holding],
    *,
    event_id: str | None = None,
    correlation_id: str | None = None,
    **extra: Any,
) -> MarginCalc:
    """A margin.calc.v1 record computed from a real book with the reference rules."""
    r = compute_margin(cash, book)
    n = next(_ids)
    return MarginCalc(
        event_id=event_id or f"mc-{account}-{n}",
        account_id=account,
        timestamp=at(seconds),
        equity=r.equity,
        maintenance_req=r.maintenance_req,
        excess=r.excess,
        deficiency=r.deficiency,
        long_market_value=r.long_market_value,
        short_market_value=r.short_market_value,
        correlation_id=correlation_id or f"corr-{n}",
        **extra,
    )


def long_book(price: float, qty: float = 1000.0, symbol: str = "AAPL") -> list[Holding]:
    return [Holding(symbol, qty, price, 1.2)]


def stress_result(
    account: str,
    seconds: float,
    cash: float,
    book: list[Holding],
    *,
    event_id: str | None = None,
    correlation_id: str | None = None,
) -> StressResult:
    rows = stress_table(cash, book)
    w = worst_scenario(rows)
    n = next(_ids)
    return StressResult(
        event_id=event_id or f"st-{account}-{n}",
        account_id=account,
        timestamp=at(seconds),
        scenarios=[
            {
                "scenario": r.scenario,
                "stressed_equity": r.result.equity,
                "stressed_maintenance_req": r.result.maintenance_req,
                "stressed_deficiency": r.result.deficiency,
            }
            for r in rows
        ],
        worst_scenario=w.scenario,
        worst_deficiency=w.result.deficiency,
        correlation_id=correlation_id or f"corr-{n}",
    )


def desk_action(
    account: str,
    seconds: float,
    action: str,
    *,
    until: datetime | None = None,
    action_id: str | None = None,
    operator: str = "arn:aws:sts::123456789012:assumed-role/RiskDesk/jane",
    reason: str = "client wiring funds",
) -> DeskAction:
    """A desk.actions.v1 record as the desk command publishes it."""
    n = next(_ids)
    return DeskAction(
        action_id=action_id or f"da-{account}-{n}",
        account_id=account,
        action=action,
        until=until,
        operator=operator,
        reason=reason,
        timestamp=at(seconds),
        correlation_id=f"corr-desk-{n}",
    )
