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


def entry(minute: int, long_rate: str, nm: bool = False, offset: int = 0, arrived: int = 59):
    """A house entry as of ``minute``, read at ``arrived`` (its Kafka time)."""
    return (us(minute), 0, offset, Decimal(long_rate), Decimal(0), nm, us(arrived))


def test_house_entries_in_force_by_as_of_and_a_correction_at_the_same_as_of_wins() -> None:
    f = SymbolFacts(tick=fact(31, "50"))
    for e in (entry(40, "0.75"), entry(35, "0.50"), entry(40, "0.90", offset=7)):
        f = f.merged(SymbolFacts(house=(e,)))
    assert [e[0] for e in f.house] == [us(35), us(40)]
    assert f.house_at(us(34)) is None
    assert f.house_at(us(35)) == (Decimal("0.50"), Decimal(0), False)
    assert f.house_at(us(45)) == (Decimal("0.90"), Decimal(0), False)
    assert SymbolFacts.from_json(f.to_json()) == f


def test_an_entry_dated_ahead_of_its_arrival_waits_for_the_symbol_and_is_carried_whole() -> None:
    # Given a symbol last changed at 14:31 and an entry for 14:50 published at 14:36
    f = SymbolFacts(tick=fact(31, "50"), changed_ts=us(31))
    f = f.merged(SymbolFacts(house=(entry(50, "0.75", arrived=36),)))
    # Then it is not in force at the symbol's clock, and the table carries every entry
    assert f.clock() == us(31) and f.in_force_now() is None
    assert f.house_columns() == (None, None, None, [(us(50), Decimal("0.75"), Decimal(0), False)])
    # When a tick at 14:51 arrives, it is in force at the clock (the holders re-margin)
    g = f.merged(SymbolFacts(tick=fact(51, "50"), changed_ts=us(51)))
    assert g.in_force_now() == (Decimal("0.75"), Decimal(0), False)
    assert g.house_columns() == (Decimal("0.75"), Decimal(0), False, None)
    # An entry published after its as_of moves the clock itself
    h = f.merged(SymbolFacts(house=(entry(33, "0.50", arrived=34),)))
    assert h.clock() == us(33) and h.in_force_now() == (Decimal("0.50"), Decimal(0), False)
