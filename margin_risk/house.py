"""House requirements per symbol (spec section 7): the ``house.requirements.v1`` entry and which
entry is in force at a calculation's event time.

The rule an entry applies lives in `margin_risk.params.HouseRates` and
`margin_risk.rules.position_requirement`; this module only validates entries and picks, per
symbol, the one with the latest ``as_of`` not after the event time. Two entries of one symbol
with the same ``as_of``: the later one read (file order, topic offset) wins, as a correction.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StrictBool, TypeAdapter

from margin_risk.models import Id, Move, Timestamp, _Event
from margin_risk.params import HouseRates

# Rates are exact decimals within the bounds of every house rate (RATE_PLACES, MAX_ABS_RATE).
# A long rate is a share of the position's value: above 100% there is nothing more to lend against.
LongRate = Annotated[Move, Field(ge=0, le=1)]
ShortRate = Annotated[Move, Field(ge=0)]


class HouseEntry(_Event):
    """``house.requirements.v1`` (key = symbol): a symbol's house requirement from ``as_of`` on."""

    symbol: Id
    long_rate: LongRate
    short_rate: ShortRate
    non_marginable: StrictBool
    as_of: Timestamp
    updated_by: Id

    def rates(self) -> HouseRates:
        return HouseRates(self.long_rate, self.short_rate, self.non_marginable)


HOUSE_FILE = TypeAdapter(list[HouseEntry])


def parse_house_entries(raw: Any) -> list[HouseEntry]:
    """A house file: a JSON list of entries (raises pydantic's ``ValidationError``)."""
    return HOUSE_FILE.validate_python(raw)


class HouseBook:
    """Every entry of every symbol, to answer "which entries are in force at time t"."""

    def __init__(self, entries: Iterable[HouseEntry] = ()) -> None:
        by_symbol: dict[str, list[tuple[datetime, int, HouseEntry]]] = {}
        for n, e in enumerate(entries):
            by_symbol.setdefault(e.symbol, []).append((e.as_of, n, e))
        # Sorted by (as_of, arrival): the last one at or before t is the one in force.
        self._times: dict[str, list[datetime]] = {}
        self._entries: dict[str, list[HouseEntry]] = {}
        for symbol, rows in by_symbol.items():
            rows.sort(key=lambda r: (r[0], r[1]))
            self._times[symbol] = [r[0] for r in rows]
            self._entries[symbol] = [r[2] for r in rows]

    def __len__(self) -> int:
        return sum(len(v) for v in self._entries.values())

    def entry_at(self, symbol: str, at: datetime) -> HouseEntry | None:
        """The entry of ``symbol`` with the latest ``as_of`` not after ``at`` (None: no entry)."""
        times = self._times.get(symbol)
        if not times:
            return None
        i = bisect.bisect_right(times, at)
        return self._entries[symbol][i - 1] if i else None

    def in_force(self, at: datetime, symbols: Sequence[str] | None = None) -> dict[str, HouseRates]:
        """The rates in force at ``at`` for ``symbols`` (default: every symbol with an entry)."""
        out: dict[str, HouseRates] = {}
        for s in self._entries if symbols is None else symbols:
            e = self.entry_at(s, at)
            if e is not None:
                out[s] = e.rates()
        return out
