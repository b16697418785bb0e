"""Margin (spec section 1) and the stress table (section 2), vectorized with NumPy.

The practical limit of this machine for the kernel. Every position gets exactly the IEEE-754
operations of ``margin_risk.rules`` (so each per-position value is bit-identical to the reference),
and the per-account sums add positions one after the other in symbol order, as the reference does,
so the account totals are bit-identical too (``np.add.reduce`` along a contiguous axis would use
pairwise partial sums and differ in the last bit, which matters at exact half-cents).

Layout: positions are processed in chunks of whole accounts small enough to stay in the CPU cache.
Inside a chunk the book is transposed to ``(rank, account)`` (zero-quantity padding for accounts
with fewer positions: it adds exact zeros), and every price row ``g`` (0: unshocked, 1..S: the
scenarios) is one more leading axis, so each NumPy call covers the whole chunk and every scenario.

Per position and price ``P`` (USD), with ``q+ = max(q, 0)`` and ``q- = max(-q, 0)`` shares::

    P_s      = max(0, price * (1 + beta * s))        shocked price of scenario s
    lmv_i    = q+ * P          smv_i = q- * P        (one of the two is zero)
    req_i    = long_rate * lmv_i
             + (max($5.00 * q-, 30% * smv_i) if P >= $5.00 else max($2.50 * q-, 100% * smv_i))

For a long ``q- = 0`` and the short term is ``+0.0``; for a short ``lmv_i = 0``: so ``req_i`` is
exactly the reference's branch. ``q+ * P`` equals ``q * P`` and ``q- * P`` equals ``-(q * P)``
bit for bit (negation is exact), which saves the max/negate passes of the obvious formulation.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.books import F64, I64, Books
from margin_risk.params import MarginParams

DEFAULT_CHUNK_POSITIONS = 16384


@dataclass(frozen=True)
class KernelResult:
    """Row 0 of the (1 + S, accounts) arrays is the unshocked margin, rows 1.. the scenarios."""

    scenarios: tuple[float, ...]
    long_market_value: F64
    short_market_value: F64
    equity: F64
    maintenance_req: F64
    worst_index: npt.NDArray[np.intp]  # into ``scenarios``
    worst_deficiency: F64

    @property
    def excess(self) -> F64:
        return self.equity - self.maintenance_req

    @property
    def deficiency(self) -> F64:
        return np.maximum(self.maintenance_req - self.equity, 0.0)


def chunk_bounds(offsets: I64, positions: int, chunk_positions: int) -> list[tuple[int, int]]:
    """Account ranges [a0, a1) of about ``chunk_positions`` positions each (whole accounts)."""
    cuts = np.searchsorted(offsets, np.arange(0, positions, chunk_positions), side="right") - 1
    starts = sorted({max(int(c), 0) for c in cuts})
    ends = [*starts[1:], int(offsets.shape[0])]
    return list(zip(starts, ends, strict=True))


def worst_of(eq: F64, req: F64) -> tuple[npt.NDArray[np.intp], F64]:
    """Largest stressed deficiency; ties: lowest stressed excess, then grid order (as stress.py)."""
    deficiency = np.maximum(req - eq, 0.0)
    excess = eq - req
    best = np.zeros(eq.shape[1], dtype=np.intp)
    bd = deficiency[0].copy()
    bx = excess[0].copy()
    for j in range(1, eq.shape[0]):
        d, x = deficiency[j], excess[j]
        better = (d > bd) | ((d == bd) & (x < bx))
        best[better] = j
        bd = np.where(better, d, bd)
        bx = np.where(better, x, bx)
    return best, bd


@dataclass(frozen=True)
class _FloatParams:
    long_rate: float
    short_rate: float
    short_per_share: float
    low_price_threshold: float
    low_price_short_rate: float
    low_price_short_per_share: float
    concentration_addon: float
    concentration_threshold: float


class NumpyKernel:
    """``run(books)`` computes margin and the stress grid of every account (>= 1 position each)."""

    def __init__(
        self,
        params: MarginParams,
        scenarios: Sequence[Any],
        chunk_positions: int = DEFAULT_CHUNK_POSITIONS,
        threads: int = 1,
    ) -> None:
        # The float hardware limit: the same rules in binary floats (not exact; see the exact
        # reference and the Spark kernel for the figures the product presents).
        self.p = _FloatParams(**{k: float(v) for k, v in vars(params).items() if k != "scenarios"})
        self.scenarios = tuple(float(s) for s in scenarios)
        self.moves = np.asarray(self.scenarios, dtype=np.float64).reshape(-1, 1, 1)
        self.chunk_positions = chunk_positions
        self.threads = threads
        self._local = threading.local()

    def run(self, books: Books) -> KernelResult:
        g = 1 + len(self.scenarios)
        sums = np.empty((3, g, books.accounts))  # lmv | smv | requirement
        chunks = chunk_bounds(books.offsets, books.positions, self.chunk_positions)
        if self.threads <= 1:
            for a0, a1 in chunks:
                self._chunk(books, a0, a1, sums)
        else:
            with ThreadPoolExecutor(self.threads) as pool:
                for f in [pool.submit(self._chunk, books, a0, a1, sums) for a0, a1 in chunks]:
                    f.result()
        lmv, smv, req = sums
        equity = books.cash + lmv - smv
        best, worst_def = worst_of(equity[1:], req[1:])
        return KernelResult(self.scenarios, lmv, smv, equity, req, best, worst_def)

    @staticmethod
    def _transposed(books: Books, a0: int, a1: int) -> tuple[F64, F64, F64]:
        """quantity, price, beta of accounts [a0, a1) as (rank, account) arrays, zero-padded."""
        s0 = int(books.offsets[a0])
        s1 = int(books.offsets[a1]) if a1 < books.accounts else books.positions
        n = a1 - a0
        local = books.offsets[a0:a1] - s0
        counts = np.diff(np.append(local, s1 - s0))
        k = int(counts.max())
        cols = (books.quantity[s0:s1], books.price[s0:s1], books.beta[s0:s1])
        if int(counts.min()) == k:  # every account has k positions: a transposed copy
            q, pr, b = (np.ascontiguousarray(c.reshape(n, k).T) for c in cols)
            return q, pr, b
        acct = np.repeat(np.arange(n), counts)
        slot = (np.arange(s1 - s0) - local[acct]) * n + acct
        out = []
        for c in cols:
            z = np.zeros(k * n)
            z[slot] = c
            out.append(z.reshape(k, n))
        return out[0], out[1], out[2]

    def _buffers(self, g: int, k: int, n: int) -> dict[str, Any]:
        """Per-thread scratch arrays, reused across chunks: a fresh multi-megabyte array per call
        would be mmap'ed and page-faulted every time, which costs more than the arithmetic."""
        cache: dict[tuple[int, int, int], dict[str, Any]] = getattr(self._local, "cache", {})
        self._local.cache = cache
        b = cache.get((g, k, n))
        if b is None:
            b = {
                "prices": np.empty((g, k, n)),
                "terms": np.empty((3, g, k, n)),
                "low": np.empty((g, k, n)),
                "tmp": np.empty((g, k, n)),
                "mask": np.empty((g, k, n), dtype=bool),
                "q_long": np.empty((k, n)),
                "q_short": np.empty((k, n)),
                "floor_low": np.empty((k, n)),
                "floor_high": np.empty((k, n)),
                "acc": np.empty((3, g, n)),
            }
            cache[(g, k, n)] = b
        return b

    def _chunk(self, books: Books, a0: int, a1: int, sums: F64) -> None:
        p = self.p
        q, price, beta = self._transposed(books, a0, a1)
        k, n = q.shape
        g = 1 + self.moves.shape[0]
        b = self._buffers(g, k, n)

        prices = b["prices"]  # (price row, rank, account)
        prices[0] = price
        shocked = prices[1:]
        np.multiply(self.moves, beta, out=shocked)
        shocked += 1.0
        shocked *= price
        np.maximum(shocked, 0.0, out=shocked)

        q_long = np.maximum(q, 0.0, out=b["q_long"])
        q_short = np.negative(q, out=b["q_short"])
        np.maximum(q_short, 0.0, out=q_short)
        floor_low = np.multiply(q_short, p.low_price_short_per_share, out=b["floor_low"])
        floor_high = np.multiply(q_short, p.short_per_share, out=b["floor_high"])
        terms = b["terms"]  # lmv_i | smv_i | req_i
        lmv, smv, req = terms
        np.multiply(prices, q_long, out=lmv)
        np.multiply(prices, q_short, out=smv)
        low = b["low"]
        if p.low_price_short_rate != 1.0:
            np.multiply(smv, p.low_price_short_rate, out=low)
            np.maximum(low, floor_low, out=low)
        else:
            np.maximum(smv, floor_low, out=low)
        np.multiply(smv, p.short_rate, out=req)
        np.maximum(req, floor_high, out=req)
        mask = np.less(prices, p.low_price_threshold, out=b["mask"])
        np.copyto(req, low, where=mask)
        req += np.multiply(lmv, p.long_rate, out=b["tmp"])

        acc = b["acc"]  # add rank by rank: the reference's summation order
        np.copyto(acc, terms[:, :, 0, :])
        for r in range(1, k):
            acc += terms[:, :, r, :]
        if p.concentration_addon > 0:
            value = lmv + smv
            big = value > p.concentration_threshold * (acc[0] + acc[1])[:, None, :]
            addon = np.where(big, p.concentration_addon * value, 0.0)
            for r in range(k):
                acc[2] += addon[:, r, :]
        sums[:, :, a0:a1] = acc


def compute(books: Books, params: MarginParams, scenarios: Sequence[Any]) -> KernelResult:
    return NumpyKernel(params, scenarios).run(books)
