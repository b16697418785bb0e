"""MSK-shaped enforcement input: margin.calc.v1 and stress.beta_spy.v1 records over N accounts.

Each account's excess follows a mean-reverting walk around a healthy cushion, so a steady share of
records opens, escalates or cures calls (every decision type of the ladder appears) while most
records change nothing but the state's timestamps. Coordinates follow the keyed producer of the
Spark job (account -> partition by CRC32), offsets and event times only grow, so no record is stale
or a duplicate and every batch is new to the idempotency layer.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from bench.books import SCENARIOS
from lambdas.enforcement.local_invoke import LocalRecord
from margin_risk import names
from margin_risk.models import MarginCalc, StressResult

T0 = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)
PARTITIONS = 3


class Workload:
    def __init__(
        self,
        accounts: int = 200,
        seed: int = 11,
        step_seconds: float = 0.01,
        stress_share: float = 0.3,
    ) -> None:
        self.rng = random.Random(seed)
        self.accounts = [f"ACC{i:05d}" for i in range(accounts)]
        self.walk = {a: self.rng.gauss(0.15, 0.1) for a in self.accounts}
        self.gross = {a: self.rng.uniform(50_000, 2_000_000) for a in self.accounts}
        self.offsets: dict[tuple[str, int], int] = defaultdict(int)
        self.seq = 0
        self.step = timedelta(seconds=step_seconds)
        self.stress_share = stress_share

    def _value(self, account: str, topic: str, ts: datetime) -> bytes:
        self.seq += 1
        eid = f"bench-{self.seq:09d}"
        gross = self.gross[account]
        w = 0.85 * self.walk[account] + 0.15 * 0.15 + self.rng.gauss(0.0, 0.06)
        self.walk[account] = w
        req = 0.25 * gross
        equity = req * (1.0 + w)
        if topic == names.TOPIC_MARGIN_CALC:
            return (
                MarginCalc(
                    event_id=eid,
                    account_id=account,
                    timestamp=ts,
                    equity=equity,
                    maintenance_req=req,
                    excess=equity - req,
                    deficiency=max(0.0, req - equity),
                    long_market_value=gross,
                    short_market_value=0.0,
                    correlation_id=f"corr-{eid}",
                )
                .to_json()
                .encode()
            )
        rows = []
        for s in SCENARIOS:
            se = equity + gross * s * 1.2
            sr = req * (1.0 + s)
            rows.append(
                {
                    "scenario": s,
                    "stressed_equity": se,
                    "stressed_maintenance_req": sr,
                    "stressed_deficiency": max(0.0, sr - se),
                }
            )
        worst = max(rows, key=lambda r: (r["stressed_deficiency"], -(r["stressed_equity"])))
        return (
            StressResult.model_validate(
                {
                    "event_id": eid,
                    "account_id": account,
                    "timestamp": ts,
                    "scenarios": rows,
                    "worst_scenario": worst["scenario"],
                    "worst_deficiency": worst["stressed_deficiency"],
                    "correlation_id": f"corr-{eid}",
                }
            )
            .to_json()
            .encode()
        )

    def batch(self, size: int) -> list[LocalRecord]:
        """The next ``size`` records, on random accounts."""
        out = []
        for _ in range(size):
            account = self.rng.choice(self.accounts)
            stress = self.rng.random() < self.stress_share
            topic = names.TOPIC_STRESS if stress else names.TOPIC_MARGIN_CALC
            ts = T0 + self.step * self.seq
            value = self._value(account, topic, ts)
            p = zlib.crc32(account.encode()) % PARTITIONS
            off = self.offsets[(topic, p)]
            self.offsets[(topic, p)] += 1
            ms = int(ts.timestamp() * 1000)
            out.append(LocalRecord(topic, p, off, value, account.encode(), ms))
        return out
