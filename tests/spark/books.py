"""Generated books for the parity tests: longs and shorts around the $5 threshold, high betas."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from margin_risk.rules import Holding


@dataclass(frozen=True)
class Book:
    account_id: str
    cash: Decimal
    holdings: tuple[Holding, ...]


SYMBOLS = [f"S{i:03d}" for i in range(60)]


def generate_books(n: int, seed: int = 4) -> list[Book]:
    """n accounts; ~5% cash-only; cent prices cluster around $5.00 (exactly 5.00 included);
    whole and fractional shares; betas up to 15 so scenario prices floor at zero; one row per
    symbol (the job's positions are netted by symbol)."""
    rng = random.Random(seed)
    books = []
    for i in range(n):
        k = 0 if rng.random() < 0.05 else rng.randint(1, 8)
        syms = rng.sample(SYMBOLS, k)
        holdings = []
        for sym in syms:
            r = rng.random()
            if r < 0.2:
                price = 5.00
            elif r < 0.6:
                price = round(rng.uniform(4.50, 5.50), 2)
            else:
                price = round(rng.uniform(0.05, 400.0), 2)
            shares = (
                Decimal(rng.randint(1, 5000))
                if rng.random() < 0.85
                else Decimal(rng.randint(1, 5_000_000)) / 10_000  # fractional shares
            )
            qty = shares * (1 if rng.random() < 0.6 else -1)
            beta = rng.choice([1.0, round(rng.uniform(-2.0, 3.0), 2), round(rng.uniform(5, 15), 2)])
            holdings.append(Holding(sym, qty, Decimal(repr(price)), Decimal(repr(beta))))
        cash = Decimal(repr(round(rng.uniform(-200_000, 300_000), 2)))
        books.append(Book(f"ACC{i:05d}", cash, tuple(holdings)))
    return books
