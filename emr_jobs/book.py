"""The job's state as the driver holds it between micro-batches: plain Python, no Spark.

The book itself (every account's cash and positions) lives in Spark as a cached base snapshot
(``emr_jobs.state``); the driver holds what changed since that snapshot, which is small and
bounded by compaction, plus the per-symbol facts (one entry per symbol, small at any scale):

- ``positions``: (account, symbol) -> signed quantity applied since the base;
- ``cash``: account -> cash moved since the base;
- ``own_ts``: account -> newest event time (epoch microseconds) of the account's own inputs and
  of the price changes of the symbols its fills touched, since the base;
- ``symbols``: symbol -> its latest facts (tick, tick beta, fill price, betas.v1 override, each
  the latest record by (event time, partition, offset)), its house.requirements.v1 entries, and
  ``changed_ts``, the event time of the newest input that changed its effective price, beta or
  house entry;
- ``seen``: applied fill/cash ids since the base, by event hour (the base's ids are in Spark).

Every change a batch makes is a ``BatchChanges``; it is written to the batch's change log and
applied to the book only after the batch committed, so a failed batch leaves the book as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

# A fact: (event time us, partition, offset, value). Tuples order like the Spark structs did.
Fact = Tuple[int, int, int, Decimal]
FACT_KINDS = ("tick", "tick_beta", "fill", "override")
ONE = Decimal(1)
# A house entry: (as_of us, partition, offset, long_rate, short_rate, non_marginable, Kafka us).
HouseFact = Tuple[int, int, int, Decimal, Decimal, bool, int]
# The rates of an entry: (long_rate, short_rate, non_marginable).
Rates = Tuple[Decimal, Decimal, bool]


def _house_merged(a: Tuple[HouseFact, ...], b: Tuple[HouseFact, ...]) -> Tuple[HouseFact, ...]:
    """Both lists, one entry per as_of (of two with the same as_of the later read wins, as a
    correction: margin_risk.house), oldest as_of first."""
    by_as_of: Dict[int, HouseFact] = {}
    for e in (*a, *b):
        cur = by_as_of.get(e[0])
        if cur is None or e[1:3] > cur[1:3]:
            by_as_of[e[0]] = e
    return tuple(by_as_of[t] for t in sorted(by_as_of))


@dataclass
class SymbolFacts:
    tick: Optional[Fact] = None
    tick_beta: Optional[Fact] = None
    fill: Optional[Fact] = None
    override: Optional[Fact] = None
    changed_ts: Optional[int] = None
    # Every house entry (one per as_of, oldest first): a calculation uses the one in force at
    # its own event time, so entries are kept rather than only the latest.
    house: Tuple[HouseFact, ...] = ()

    def effective(self) -> Tuple[Optional[Decimal], Decimal]:
        """(price, beta) in force: the latest tick prices the symbol, else the latest fill; a
        betas.v1 override applies from its as_of on, else the latest tick beta, else 1."""
        price = self.tick[3] if self.tick else (self.fill[3] if self.fill else None)
        ov = self.override
        if ov is not None and (self.tick is None or ov[0] <= self.tick[0]):
            beta = ov[3]
        else:
            beta = self.tick_beta[3] if self.tick_beta else ONE
        return price, beta

    def merged(self, other: "SymbolFacts") -> "SymbolFacts":
        """The later fact of each kind (``other``'s facts are this batch's)."""

        def later(a: Optional[Fact], b: Optional[Fact]) -> Optional[Fact]:
            if a is None or b is None:
                return a or b
            return max(a, b, key=lambda f: f[:3])

        ts = [t for t in (self.changed_ts, other.changed_ts) if t is not None]
        return SymbolFacts(
            later(self.tick, other.tick),
            later(self.tick_beta, other.tick_beta),
            later(self.fill, other.fill),
            later(self.override, other.override),
            max(ts) if ts else None,
            _house_merged(self.house, other.house),
        )

    def house_at(self, at: Optional[int]) -> Optional[Rates]:
        """The rates of the entry with the latest as_of not after ``at`` (None: no entry)."""
        rates = None
        for e in self.house:
            if at is None or e[0] > at:
                break
            rates = (e[3], e[4], e[5])
        return rates

    def clock(self) -> Optional[int]:
        """The symbol's own event time: its newest tick or fill, or house entry that was not
        dated ahead of its arrival. An entry dated ahead (a scheduled change) takes effect for
        each calculation at or after its as_of, and re-margins the symbol's holders with the
        first tick or fill at or after it."""
        times = [f[0] for f in (self.tick, self.fill) if f is not None]
        times += [e[0] for e in self.house if e[0] <= e[6]]
        return max(times) if times else None

    def in_force_now(self) -> Optional[Rates]:
        """The entry in force at the symbol's clock: when it changes, the holders re-margin."""
        return self.house_at(self.clock())

    def house_columns(self) -> Tuple[Optional[Decimal], Optional[Decimal], Optional[bool], Any]:
        """The symbol table's house columns: the rates in force at ``changed_ts`` (every holder's
        calculation is at or after it), and, only when an entry is dated after ``changed_ts``
        (so holders' calculations may differ), every entry as ``(as_of, long, short, nm)``."""
        rates = self.house_at(self.changed_ts)
        ahead = bool(self.house) and (
            self.changed_ts is None or self.house[-1][0] > self.changed_ts
        )
        entries = [(e[0], e[3], e[4], e[5]) for e in self.house] if ahead else None
        if rates is None:
            return None, None, None, entries
        return rates[0], rates[1], rates[2], entries

    def house_ahead(self) -> bool:
        return self.house_columns()[3] is not None

    def to_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            k: [f[0], f[1], f[2], str(f[3])]
            for k in FACT_KINDS
            if (f := getattr(self, k)) is not None
        }
        if self.changed_ts is not None:
            out["changed_ts"] = self.changed_ts
        if self.house:
            out["house"] = [
                [e[0], e[1], e[2], str(e[3]), str(e[4]), e[5], e[6]] for e in self.house
            ]
        return out

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "SymbolFacts":
        facts = {
            k: (int(v[0]), int(v[1]), int(v[2]), Decimal(v[3]))
            for k, v in raw.items()
            if k in FACT_KINDS
        }
        house = tuple(
            (int(a), int(p), int(o), Decimal(lr), Decimal(sr), bool(nm), int(k))
            for a, p, o, lr, sr, nm, k in raw.get("house", [])
        )
        return cls(**facts, changed_ts=raw.get("changed_ts"), house=house)


@dataclass
class Horizon:
    """The dedupe horizon: the oldest event hour whose applied ids are still remembered.

    ``cutoff`` only moves forward. Records of an hour below it are rejected, and only hours below
    it are forgotten, so a record accepted now was either never applied or is still remembered."""

    cutoff: Optional[int] = None
    max_arrival_hour: Optional[int] = None  # newest Kafka-timestamp hour of a valid fill/cash

    def advance(
        self, batch_hours: Iterable[int], arrival_hour: Optional[int], horizon_hours: int
    ) -> "Horizon":
        """The horizon after a batch whose valid fill/cash records fall in ``batch_hours``.

        The newest event hour counts only up to an hour past the newest arrival, so one record
        stamped in the future cannot push the horizon past the records that follow it."""
        hours = list(batch_hours)
        arrivals = [a for a in (self.max_arrival_hour, arrival_hour) if a is not None]
        arrival = max(arrivals) if arrivals else None
        cutoff = self.cutoff
        if hours and arrival is not None:
            candidate = min(max(hours), arrival + 1) - horizon_hours
            cutoff = candidate if cutoff is None else max(cutoff, candidate)
        return Horizon(cutoff, arrival)

    def remembers(self, hour: int) -> bool:
        return self.cutoff is None or hour >= self.cutoff


@dataclass
class BatchChanges:
    """Everything one micro-batch changes in the book (its change log's content)."""

    positions: Dict[Tuple[str, str], Decimal] = field(default_factory=dict)
    cash: Dict[str, Decimal] = field(default_factory=dict)
    own_ts: Dict[str, int] = field(default_factory=dict)
    symbols: Dict[str, SymbolFacts] = field(default_factory=dict)  # merged facts after the batch
    applied: List[Tuple[str, str, int]] = field(default_factory=list)  # kind, id, event hour
    horizon: Horizon = field(default_factory=Horizon)

    def to_json(self) -> Dict[str, Any]:
        return {
            "positions": [[a, s, str(q)] for (a, s), q in sorted(self.positions.items())],
            "cash": [[a, str(c)] for a, c in sorted(self.cash.items())],
            "own_ts": [[a, t] for a, t in sorted(self.own_ts.items())],
            "symbols": {s: f.to_json() for s, f in sorted(self.symbols.items())},
            "applied": [list(x) for x in self.applied],
            "cutoff": self.horizon.cutoff,
            "max_arrival_hour": self.horizon.max_arrival_hour,
        }

    @classmethod
    def from_json(cls, raw: Dict[str, Any]) -> "BatchChanges":
        return cls(
            positions={(a, s): Decimal(q) for a, s, q in raw["positions"]},
            cash={a: Decimal(c) for a, c in raw["cash"]},
            own_ts={a: int(t) for a, t in raw["own_ts"]},
            symbols={s: SymbolFacts.from_json(f) for s, f in raw["symbols"].items()},
            applied=[(k, i, int(h)) for k, i, h in raw["applied"]],
            horizon=Horizon(raw.get("cutoff"), raw.get("max_arrival_hour")),
        )


@dataclass
class DriverBook:
    """What changed since the base snapshot, and every symbol's facts (see module docstring)."""

    positions: Dict[Tuple[str, str], Decimal] = field(default_factory=dict)
    cash: Dict[str, Decimal] = field(default_factory=dict)
    own_ts: Dict[str, int] = field(default_factory=dict)
    symbols: Dict[str, SymbolFacts] = field(default_factory=dict)
    seen: Dict[Tuple[str, str], int] = field(default_factory=dict)  # (kind, id) -> event hour
    horizon: Horizon = field(default_factory=Horizon)
    batches_since_base: int = 0
    # Symbols whose effective price, beta or change time moved since the cached symbol table.
    symbols_since_table: Set[str] = field(default_factory=set)

    def apply(self, ch: BatchChanges) -> None:
        for k, q in ch.positions.items():
            self.positions[k] = self.positions.get(k, Decimal(0)) + q
        for a, c in ch.cash.items():
            self.cash[a] = self.cash.get(a, Decimal(0)) + c
        for a, t in ch.own_ts.items():
            self.own_ts[a] = max(t, self.own_ts.get(a, t))
        for s, f in ch.symbols.items():
            self.symbols[s] = f
            self.symbols_since_table.add(s)
        self.horizon = ch.horizon
        for kind, i, h in ch.applied:
            self.seen[(kind, i)] = h
        self.seen = {k: h for k, h in self.seen.items() if self.horizon.remembers(h)}
        self.batches_since_base += 1

    def is_seen(self, kind: str, ident: str, horizon: Horizon) -> bool:
        h = self.seen.get((kind, ident))
        return h is not None and horizon.remembers(h)

    def delta_rows(self) -> int:
        return len(self.positions) + len(self.cash)
