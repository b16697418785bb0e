"""A reproducible trading session for the local demo: books, a calm morning, a sell-off, cures,
and the risk desk acting on two calls.

Every account is given a *role* (strong, near-edge, weak-and-cures, weak-and-defaults, wipe-out,
short seller) whose leverage is chosen so the sell-off plays out the way the role says. The
simulator also carries its own reference of positions and cash, so `expected_margin_events` can
replay the session through `margin_risk.rules` and `margin_risk.enforcement` independently of
Spark and the Lambda: the integration test compares the two.

Two steps carry no market records but a desk plan (`DeskPlan`): after the sell-off the desk
extends a call whose liquidation the extension postpones, and after the first afternoon tick it
waives a call (a restricted one when there is one). The accounts are chosen from the reference
replay, so a seed fixes them too; the demo publishes the actions through the desk command's code
path, signed by its STS identity, and `expected_inputs` puts them into the reference.

A 3x leveraged ETF (`LEVERAGED_ETF`) carries a house requirement (spec section 7): its entry is
published on ``house.requirements.v1`` at the open, some strong books hold the ETF, and it falls
three times the market in the sell-off. The reference applies the entries in force at each
step's time through the core (`margin_risk.house.HouseBook`), as the Spark job does.
"""

from __future__ import annotations

import heapq
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from margin_risk import names
from margin_risk.enforcement import AccountState, replay
from margin_risk.house import HouseBook, HouseEntry
from margin_risk.models import DeskAction, DeskActionType, EnforcementInput, MarginCalc
from margin_risk.money import to_decimal
from margin_risk.params import PolicyParams
from margin_risk.rules import Holding, compute_margin

SESSION_OPEN = datetime(2026, 2, 16, 14, 30, tzinfo=UTC)
# The house deadline of two days, shortened so the session shows it (the demo runs with it).
DEMO_DEADLINE_SECONDS = 3600
DEMO_POLICY = PolicyParams(call_deadline_seconds=DEMO_DEADLINE_SECONDS)
# Who the reference's planning actions claim to be (the demo signs the real ones with STS).
PLANNER = "planner"

ROLES = ("strong", "near_edge", "weak_cures", "weak_defaults", "wipe_out", "short_seller")
ROLE_WEIGHTS = (0.50, 0.10, 0.12, 0.10, 0.04, 0.14)
# Equity as a fraction of long market value at the open, per role (see module docstring).
EQUITY_RATIO = {
    "strong": (0.60, 0.90),
    "near_edge": (0.36, 0.40),
    "weak_cures": (0.27, 0.29),
    "weak_defaults": (0.27, 0.29),
}
SQUEEZE_MOVE = 0.80  # the meme stock's gap up, after the sell-off
SELL_OFF_MOVE = -0.0233  # SPY per sell-off step
# The leveraged ETF: three times SPY, with the house's 3x rate (spec section 7's example).
LEVERAGED_ETF = "TQQQ"
ETF_BETA = 3.0
ETF_OPEN = 50.0
ETF_LONG_RATE = 0.75
ETF_SHARE = 0.2  # of a holder's long market value
ETF_HOLDER_EVERY = 3  # strong books whose account number is a multiple of this hold it


@dataclass(frozen=True)
class Record:
    """One Kafka record to produce: topic, key, value (bytes, may be deliberately malformed)."""

    topic: str
    key: str
    value: bytes


@dataclass(frozen=True)
class DeskPlan:
    """An action the desk takes at its step's time; the demo builds and signs the record."""

    account_id: str
    action: DeskActionType
    reason: str
    until: datetime | None = None

    def action_at(self, at: datetime, operator: str) -> DeskAction:
        """The record the desk command builds for this plan (`tools.desk.build_action`)."""
        from margin_risk.tools.desk import build_action

        return build_action(
            self.account_id,
            self.action,
            operator=operator,
            reason=self.reason,
            until=self.until,
            now=at,
        )


@dataclass
class Step:
    """Records that share one event time; the demo lets the pipeline settle between steps.

    ``desk``: actions the risk desk takes at ``at`` (published by the demo, not by producers).
    """

    name: str
    at: datetime
    records: list[Record] = field(default_factory=list)
    desk: list[DeskPlan] = field(default_factory=list)

    def add(self, topic: str, key: str, value: dict[str, Any]) -> None:
        self.records.append(Record(topic, key, json.dumps(value).encode()))


@dataclass
class Account:
    account_id: str
    role: str
    cash: float = 0.0
    positions: dict[str, float] = field(default_factory=dict)


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


class MarketSimulator:
    """Builds the steps of one session for a given size and seed (same seed, same session)."""

    def __init__(self, accounts: int = 300, symbols: int = 40, seed: int = 7) -> None:
        if accounts < 1 or symbols < 2:
            raise ValueError("need at least 1 account and 2 symbols")
        self.rng = random.Random(seed)
        self.symbols = [f"S{i:03d}" for i in range(symbols)]
        self.beta = {s: round(self.rng.uniform(0.8, 2.0), 2) for s in self.symbols}
        self.price: dict[str, float] = {}
        for i, s in enumerate(self.symbols):
            # a few low-priced names so the short rules around $5 are exercised
            lo, hi = (4.0, 7.0) if i % 8 == 0 else (15.0, 250.0)
            self.price[s] = round(self.rng.uniform(lo, hi), 2)
        # the meme stock: mid-priced, not one of the low-priced names
        self.meme = next(s for s in self.symbols[1:] if self.price[s] >= 15.0)
        # the leveraged ETF: priced apart from the symbols' random walk (same seed, same session)
        self.etf = LEVERAGED_ETF
        self.price[self.etf] = ETF_OPEN
        self.beta[self.etf] = ETF_BETA
        self.accounts = [
            Account(f"ACC{n:05d}", self.rng.choices(ROLES, ROLE_WEIGHTS)[0])
            for n in range(accounts)
        ]
        self._ids = 0
        self.steps: list[Step] = []
        self.expected_rejections = 0
        self.duplicates_sent = 0
        self._build()

    # -- helpers -----------------------------------------------------------------------------
    def _next(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids:07d}"

    def _margin(self, a: Account) -> tuple[float, float, float]:
        """Planning figures only (the roles' leverage): floats are fine here."""
        r = compute_margin(a.cash, self._holdings(a))
        return float(r.equity), float(r.maintenance_req), float(r.deficiency)

    def _holdings(self, a: Account) -> list[Holding]:
        return [
            Holding(s, to_decimal(q), to_decimal(self.price[s]), to_decimal(self.beta[s]))
            for s, q in a.positions.items()
            if q
        ]

    def _ticks(self, step: Step, moves: dict[str, float], spy: float | None = None) -> None:
        """A tick per symbol; with ``spy`` (the market's move) the ETF ticks too, at 3x it."""
        symbols = list(self.symbols)
        if spy is not None:
            symbols.append(self.etf)
            moves = {**moves, self.etf: ETF_BETA * spy}
        for s in symbols:
            self.price[s] = round(max(0.01, self.price[s] * (1.0 + moves[s])), 2)
            step.add(
                names.TOPIC_PRICES,
                s,
                {
                    "symbol": s,
                    "price": self.price[s],
                    "timestamp": _iso(step.at),
                    "beta": self.beta[s],
                },
            )

    def _fill(self, step: Step, a: Account, symbol: str, side: str, qty: float) -> dict[str, Any]:
        px = self.price[symbol]
        fill = {
            "fill_id": self._next("F"),
            "account_id": a.account_id,
            "symbol": symbol,
            "side": side,
            "quantity": qty,
            "price": px,
            "timestamp": _iso(step.at),
            "correlation_id": self._next("corr-fill"),
        }
        signed = qty if side in ("BUY", "COVER") else -qty
        a.positions[symbol] = a.positions.get(symbol, 0.0) + signed
        a.cash -= signed * px
        step.add(names.TOPIC_FILLS, a.account_id, fill)
        return fill

    def _deposit(self, step: Step, a: Account, amount: float) -> None:
        a.cash += amount
        step.add(
            names.TOPIC_CASH,
            a.account_id,
            {
                "txn_id": self._next("T"),
                "account_id": a.account_id,
                "amount": round(amount, 2),
                "timestamp": _iso(step.at),
                "correlation_id": self._next("corr-cash"),
            },
        )

    # -- the session ---------------------------------------------------------------------------
    def _build(self) -> None:
        # Ten steps: each is one Spark micro-batch in the demo, and on two cores a micro-batch
        # costs seconds, so the session is told in few, meaningful moves.
        t = SESSION_OPEN
        books = Step("opening: house entry, prices, deposits, fills", t)
        books.add(
            names.TOPIC_HOUSE_REQUIREMENTS,
            self.etf,
            {
                "symbol": self.etf,
                "long_rate": ETF_LONG_RATE,
                "short_rate": 0,
                "non_marginable": False,
                "as_of": _iso(t),
                "updated_by": "risk-desk",
            },
        )
        self._ticks(books, dict.fromkeys(self.symbols, 0.0), spy=0.0)
        high_beta = sorted(self.symbols, key=lambda s: -self.beta[s])
        for a in self.accounts:
            self._open_book(books, a, high_beta)
        # a broker re-sends some fills: they must never move a position twice
        fills = [r for r in books.records if r.topic == names.TOPIC_FILLS]
        for r in self.rng.sample(fills, k=max(1, len(fills) // 50)):
            books.records.append(r)
            self.duplicates_sent += 1
        self.steps.append(books)

        for k in range(2):  # a calm morning: +/-0.4% noise every 45 minutes
            step = Step(f"morning {k + 1}", t + timedelta(minutes=45 * (k + 1)))
            self._ticks(step, {s: self.rng.uniform(-0.004, 0.004) for s in self.symbols})
            self.steps.append(step)

        self._bad_records(self.steps[-1])

        sell_start = t + timedelta(minutes=95)
        for k in range(3):  # the sell-off: SPY -2.33% per step, beta-weighted, some noise
            step = Step(f"sell-off {k + 1}", sell_start + timedelta(minutes=7 * k))
            self._ticks(
                step,
                {
                    s: self.beta[s] * SELL_OFF_MOVE + self.rng.uniform(-0.002, 0.002)
                    for s in self.symbols
                },
                spy=SELL_OFF_MOVE,
            )
            self.steps.append(step)

        squeeze = Step("short squeeze", sell_start + timedelta(minutes=25))
        moves = dict.fromkeys(self.symbols, 0.0)
        moves[self.meme] = SQUEEZE_MOVE
        self._ticks(squeeze, moves)
        self.steps.append(squeeze)

        cures = Step("cure deposits", sell_start + timedelta(minutes=30))
        for a in self.accounts:
            if a.role == "weak_cures":
                _, _, deficiency = self._margin(a)
                if deficiency > 0:
                    self._deposit(cures, a, round(deficiency * 1.5 + 1_000.0, 2))
        self.steps.append(cures)

        for k, minutes in enumerate((70, 160)):  # the afternoon drifts sideways
            step = Step(f"afternoon {k + 1}", sell_start + timedelta(minutes=minutes))
            self._ticks(step, {s: self.rng.uniform(-0.002, 0.002) for s in self.symbols})
            self.steps.append(step)

        # The desk acts after the sell-off (before the squeeze) and after the first afternoon tick.
        self._plan_desk(
            Step("desk: extend a call", sell_start + timedelta(minutes=20)),
            Step("desk: waive a call", sell_start + timedelta(minutes=85)),
            until=sell_start + timedelta(minutes=180),  # after the session's last tick
        )

    # -- the desk's two actions (chosen on the reference, so the seed fixes them) ---------------
    def planned_actions(self, operator: str = PLANNER) -> list[DeskAction]:
        """Every planned action as the desk command would build it, in time order."""
        return [p.action_at(s.at, operator) for s in self.steps for p in s.desk]

    def _states_at(self, at: datetime) -> dict[str, AccountState]:
        """Every account's enforcement state at ``at``: the reference and the desk's actions."""
        inputs = [e for e in expected_inputs(self, self.planned_actions()) if e.timestamp <= at]
        return replay(inputs, DEMO_POLICY).states

    def _plan_desk(self, extend: Step, waive: Step, until: datetime) -> None:
        """Insert the two desk steps in time order and choose their accounts on the reference
        of the whole session: the first open call (by account) whose liquidation the extension
        postpones, then an open call not extended, a restricted one first."""
        for step in (extend, waive):
            at = next((i for i, s in enumerate(self.steps) if s.at > step.at), len(self.steps))
            self.steps.insert(at, step)
        full = expected_margin_events(self)
        for acct, st in sorted(self._states_at(extend.at).items()):
            if not st.margin.call_open or st.margin.liquidation_triggered:
                continue
            plan = DeskPlan(acct, "EXTEND_CALL", "client wiring funds", until)
            own = [e for e in full if e.account_id == acct]
            if _postpones_liquidation(own, plan.action_at(extend.at, PLANNER)):
                extend.desk.append(plan)
                break
        extended = {p.account_id for p in extend.desk}
        open_calls = sorted(
            (not st.margin.restricted, acct)
            for acct, st in self._states_at(waive.at).items()
            if st.margin.call_open and acct not in extended
        )
        if open_calls:
            reason = "fee booked in error"
            waive.desk.append(DeskPlan(open_calls[0][1], "WAIVE_CALL", reason))

    def _open_book(self, step: Step, a: Account, high_beta: list[str]) -> None:
        rng = self.rng
        if a.role in ("short_seller", "wipe_out"):
            equity = round(rng.uniform(20_000, 80_000), 2)
            self._deposit(step, a, equity)
            if a.role == "wipe_out":  # all in on shorting the meme stock: 2x equity short
                self._fill(
                    step, a, self.meme, "SHORT", float(int(2.0 * equity / self.price[self.meme]))
                )
                return
            for s in rng.sample(high_beta[: max(2, len(high_beta) // 3)], k=2):
                # low-priced shorts carry a 100% requirement: size them smaller
                size = (0.2, 0.4) if self.price[s] < 5.0 else (0.5, 1.0)
                qty = float(max(10, int(equity * rng.uniform(*size) / self.price[s])))
                self._fill(step, a, s, "SHORT", qty)
            return
        lo, hi = EQUITY_RATIO[a.role]
        ratio = rng.uniform(lo, hi)
        # long books never hold the meme stock, so the squeeze only hits its shorts
        longs = [s for s in high_beta if s != self.meme]
        pool = longs[: max(3, len(longs) // 2)] if a.role != "strong" else longs
        picks = rng.sample(pool, k=min(len(pool), rng.randint(3, 6)))
        target_lmv = rng.uniform(50_000, 400_000)
        self._deposit(step, a, round(target_lmv * ratio, 2))
        for s in picks:
            qty = float(max(1, int(target_lmv / len(picks) / self.price[s])))
            self._fill(step, a, s, "BUY", qty)
        if a.role == "strong" and int(a.account_id[3:]) % ETF_HOLDER_EVERY == 0:
            etf_qty = float(int(ETF_SHARE * target_lmv / self.price[self.etf]))
            self._fill(step, a, self.etf, "BUY", etf_qty)

    def _bad_records(self, step: Step) -> None:
        """Malformed or invalid input the pipeline must reject with a reason, changing nothing."""
        victim = self.accounts[0].account_id
        when = _iso(step.at)
        s0, s1 = self.symbols[0], self.symbols[1]
        bad = [
            Record(names.TOPIC_FILLS, victim, b'{"fill_id": "bad-1", "account_id": '),
            Record(names.TOPIC_PRICES, s0,
                   f'{{"symbol": "{s0}", "price": NaN, "timestamp": "{when}"}}'.encode()),
            Record(names.TOPIC_FILLS, victim, json.dumps({
                "fill_id": "bad-3", "account_id": victim, "symbol": s1, "side": "BUY",
                "quantity": -100, "price": 10.0, "timestamp": when, "correlation_id": "c-bad",
            }).encode()),
            Record(names.TOPIC_PRICES, s1, json.dumps(
                {"symbol": s1, "price": -3.0, "timestamp": when}).encode()),
        ]  # fmt: skip
        step.records.extend(bad)
        self.expected_rejections += len(bad)

    # -- the independent reference ---------------------------------------------------------------
    def events_in(self) -> int:
        return sum(len(s.records) for s in self.steps)

    def iter_records(self) -> Iterator[tuple[Step, Record]]:
        for s in self.steps:
            for r in s.records:
                yield s, r


def expected_margin_events(sim: MarketSimulator) -> list[MarginCalc]:
    """Replay the session's valid records step by step through the reference rules.

    One margin result per account whose inputs changed in a step, at the step's event time:
    what the Spark job produces when each step is one micro-batch.
    """
    prices: dict[str, Decimal] = {}
    betas: dict[str, Decimal] = {}
    cash: dict[str, Decimal] = defaultdict(Decimal)
    pos: dict[str, dict[str, Decimal]] = defaultdict(dict)
    seen: set[str] = set()
    entries: list[HouseEntry] = []
    out: list[MarginCalc] = []
    for step in sim.steps:
        touched: set[str] = set()
        changed_symbols: set[str] = set()
        house_before = HouseBook(entries).in_force(step.at)
        for r in step.records:
            try:
                v = json.loads(r.value, parse_float=Decimal, parse_int=Decimal)
            except ValueError:
                continue
            if r.topic == names.TOPIC_PRICES:
                px = v.get("price")
                if not isinstance(px, Decimal) or not px.is_finite() or px < 0:
                    continue
                prices[v["symbol"]] = px
                betas[v["symbol"]] = v.get("beta", Decimal(1))
                changed_symbols.add(v["symbol"])
            elif r.topic == names.TOPIC_FILLS:
                if v["quantity"] <= 0 or v["fill_id"] in seen:
                    continue
                seen.add(v["fill_id"])
                signed = v["quantity"] if v["side"] in ("BUY", "COVER") else -v["quantity"]
                pos[v["account_id"]][v["symbol"]] = (
                    pos[v["account_id"]].get(v["symbol"], Decimal(0)) + signed
                )
                cash[v["account_id"]] -= signed * v["price"]
                touched.add(v["account_id"])
            elif r.topic == names.TOPIC_CASH:
                if v["txn_id"] in seen:
                    continue
                seen.add(v["txn_id"])
                cash[v["account_id"]] += v["amount"]
                touched.add(v["account_id"])
            elif r.topic == names.TOPIC_HOUSE_REQUIREMENTS:
                entries.append(HouseEntry.model_validate(v))
        # the entries in force at the step's time; a change re-margins the symbol's holders
        house = HouseBook(entries).in_force(step.at)
        changed_symbols |= {
            s for s in set(house) | set(house_before) if house.get(s) != house_before.get(s)
        }
        for acct, book in pos.items():
            if set(book) & changed_symbols:
                touched.add(acct)
        for acct in sorted(touched):
            holdings = [
                Holding(s, q, prices[s], betas.get(s, Decimal(1)))
                for s, q in pos[acct].items()
                if q
            ]
            m = compute_margin(cash[acct], holdings, house=house)
            out.append(
                MarginCalc(
                    event_id=f"ref-{acct}-{step.at.isoformat()}",
                    account_id=acct,
                    timestamp=step.at,
                    equity=m.equity,
                    maintenance_req=m.maintenance_req,
                    excess=m.excess,
                    deficiency=m.deficiency,
                    long_market_value=m.long_market_value,
                    short_market_value=m.short_market_value,
                    correlation_id=f"ref-{acct}",
                )
            )
    return out


def expected_inputs(sim: MarketSimulator, actions: Sequence[DeskAction]) -> list[EnforcementInput]:
    """The reference's margin results and the desk's actions, in event-time order."""
    ordered = sorted(actions, key=lambda a: a.timestamp)
    merged: Iterable[EnforcementInput] = heapq.merge(
        expected_margin_events(sim), ordered, key=lambda e: e.timestamp
    )
    return list(merged)


def _postpones_liquidation(own: Sequence[MarginCalc], action: DeskAction) -> bool:
    """Whether ``action`` moves its account's first liquidation later (or past the session);
    ``own``: the account's margin results over the whole session."""
    everything: list[EnforcementInput] = list(own)
    with_action = sorted([*everything, action], key=lambda e: e.timestamp)

    def first_liquidation(events: Sequence[EnforcementInput]) -> datetime | None:
        for d in replay(events, DEMO_POLICY).decisions:
            if d.event_type == names.EVENT_LIQUIDATION_TRIGGERED:
                return d.timestamp
        return None

    before, after = first_liquidation(everything), first_liquidation(with_action)
    return before is not None and (after is None or after > before)
