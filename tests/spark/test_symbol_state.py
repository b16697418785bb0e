"""Latest price and beta per symbol: ordered by event time, betas.v1 overrides from as_of on."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from emr_jobs.book import Fact, SymbolFacts


def us(minute: int) -> int:
    return int(datetime(2026, 2, 16, 14, minute, tzinfo=UTC).timestamp()) * 1_000_000


def fact(minute: int, value: str, offset: int = 0) -> Fact:
    return (us(minute), 0, offset, Decimal(value))


def test_override_applies_from_as_of_and_ticks_beat_fill_prices() -> None:
    facts = {
        # tick, tick_beta, fill, override
        "OVR": SymbolFacts(fact(31, "30"), fact(31, "1.5"), fact(30, "50"), fact(30, "3")),
        "LATE": SymbolFacts(fact(31, "30"), fact(31, "1.5"), None, fact(35, "3")),
        "NOTICK": SymbolFacts(None, None, fact(30, "4"), fact(29, "2")),  # fill price, override
        "PLAIN": SymbolFacts(fact(31, "7")),  # no beta anywhere -> 1
        "KEEP": SymbolFacts(fact(33, "8"), fact(31, "1.8")),  # a later tick w/o beta keeps 1.8
    }
    got = {s: f.effective() for s, f in facts.items()}
    assert got == {
        "OVR": (Decimal(30), Decimal(3)),
        "LATE": (Decimal(30), Decimal("1.5")),
        "NOTICK": (Decimal(4), Decimal(2)),
        "PLAIN": (Decimal(7), Decimal(1)),
        "KEEP": (Decimal(8), Decimal("1.8")),
    }


def test_latest_fact_is_ordered_by_event_time_then_offset_not_arrival() -> None:
    # Given ticks for one symbol merged in arrival order, two at the same event time
    facts = SymbolFacts()
    for minute, offset, price in ((32, 5, "11"), (33, 3, "12"), (33, 4, "13"), (31, 9, "10")):
        facts = facts.merged(SymbolFacts(tick=fact(minute, price, offset)))
    # Then the newest event wins, ties go to the later offset
    assert facts.tick == fact(33, "13", 4)
    assert facts.effective()[0] == Decimal(13)


def test_facts_round_trip_through_the_change_log_form() -> None:
    f = SymbolFacts(fact(31, "30.25"), None, fact(30, "50"), None, us(31))
    assert SymbolFacts.from_json(f.to_json()) == f
