"""Generated books for the kernel benchmark, as flat NumPy arrays (one row per position).

Positions are grouped by account and sorted by symbol inside each account (the order the Spark job
folds in). Prices cluster partly around the $5.00 short threshold (so shocks move positions across
it), betas go up to 15 (so some shocked prices floor at zero), about 30% of positions are short.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from margin_risk.money import to_decimal
from margin_risk.rules import Holding

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

SCENARIOS: tuple[float, ...] = (-0.08, -0.04, 0.04, 0.06)
N_SYMBOLS = 2000


def symbol_name(i: int) -> str:
    return f"S{i:04d}"


def account_name(i: int) -> str:
    return f"A{i:07d}"


@dataclass(frozen=True)
class Books:
    """``offsets[a]`` is the first position of account ``a``; every account has >= 1 position."""

    cash: F64
    offsets: I64
    symbol: I64
    quantity: F64
    price: F64
    beta: F64

    @property
    def accounts(self) -> int:
        return int(self.cash.shape[0])

    @property
    def positions(self) -> int:
        return int(self.quantity.shape[0])

    @property
    def account_of(self) -> I64:
        counts = np.diff(np.append(self.offsets, self.positions))
        return np.repeat(np.arange(self.accounts, dtype=np.int64), counts)

    def holdings(self, a: int) -> list[Holding]:
        """Account ``a`` as reference ``Holding`` objects (symbol order)."""
        end = self.offsets[a + 1] if a + 1 < self.accounts else self.positions
        return [
            Holding(
                symbol_name(int(self.symbol[i])),
                to_decimal(float(self.quantity[i])),
                to_decimal(float(self.price[i])),
                to_decimal(float(self.beta[i])),
            )
            for i in range(int(self.offsets[a]), int(end))
        ]

    def head(self, n: int) -> Books:
        """The first ``n`` accounts."""
        end = int(self.offsets[n]) if n < self.accounts else self.positions
        return Books(
            self.cash[:n].copy(),
            self.offsets[:n].copy(),
            self.symbol[:end].copy(),
            self.quantity[:end].copy(),
            self.price[:end].copy(),
            self.beta[:end].copy(),
        )


def generate_books(accounts: int, positions_per_account: int | None = 10, seed: int = 8) -> Books:
    """``accounts`` books of ``positions_per_account`` distinct symbols each (None: 1 to 12)."""
    rng = np.random.default_rng(seed)
    # The symbol universe: 15% below $5, 15% within 50 cents of it (a few exactly $5.00), rest
    # log-uniform $5-$500; prices in whole cents.
    kind = rng.random(N_SYMBOLS)
    sym_price = np.where(
        kind < 0.15,
        rng.uniform(0.05, 5.0, N_SYMBOLS),
        np.where(
            kind < 0.30,
            rng.uniform(4.5, 5.5, N_SYMBOLS),
            np.exp(rng.uniform(np.log(5.0), np.log(500.0), N_SYMBOLS)),
        ),
    )
    sym_price[kind < 0.02] = 5.0
    sym_price = np.maximum(np.round(sym_price, 2), 0.01)
    bkind = rng.random(N_SYMBOLS)
    sym_beta = np.where(
        bkind < 0.2,
        1.0,
        np.where(
            bkind < 0.95, rng.uniform(-0.5, 2.5, N_SYMBOLS), rng.uniform(5.0, 15.0, N_SYMBOLS)
        ),
    )
    sym_beta = np.round(sym_beta, 2)

    if positions_per_account is None:
        counts = rng.integers(1, 13, accounts)
    else:
        counts = np.full(accounts, positions_per_account, dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    n = int(counts.sum())
    # Distinct, ascending symbols per account: a random start and a stride short enough not to wrap
    # onto itself, then sorted within the account.
    acct = np.repeat(np.arange(accounts), counts)
    rank = np.arange(n) - offsets[acct]
    start = rng.integers(0, N_SYMBOLS, accounts)
    stride = rng.integers(1, N_SYMBOLS // 12, accounts)
    symbol = (start[acct] + rank * stride[acct]) % N_SYMBOLS
    order = np.lexsort((symbol, acct))
    symbol = symbol[order].astype(np.int64)

    sign = np.where(rng.random(n) < 0.3, -1.0, 1.0)
    quantity = sign * rng.integers(1, 5000, n).astype(np.float64)
    cash = np.round(rng.uniform(-200_000.0, 400_000.0, accounts), 2)
    return Books(
        cash=cash,
        offsets=offsets,
        symbol=symbol,
        quantity=quantity,
        price=sym_price[symbol],
        beta=sym_beta[symbol],
    )
