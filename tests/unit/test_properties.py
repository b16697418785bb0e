"""Properties that must hold for every book and every event stream (hypothesis)."""

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from margin_risk.enforcement import replay
from margin_risk.rules import Holding, compute_margin
from margin_risk.stress import stress_table
from tests.factories import margin_calc

money = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
prices = st.floats(min_value=0.0, max_value=2_000.0, allow_nan=False)
quantities = st.integers(min_value=-50_000, max_value=50_000).map(float)
betas = st.floats(min_value=-3.0, max_value=15.0, allow_nan=False)
holdings = st.builds(Holding, st.sampled_from(["A", "B", "C", "D", "E"]), quantities, prices, betas)
books = st.lists(holdings, max_size=12)


@given(money, books)
def test_equity_identity_and_deficiency_definition(cash, book):
    r = compute_margin(cash, book)
    assert math.isclose(
        r.equity, cash + r.long_market_value - r.short_market_value, rel_tol=1e-12, abs_tol=1e-6
    )
    assert r.deficiency >= 0
    assert r.deficiency == max(0.0, r.maintenance_req - r.equity)
    assert r.excess == r.equity - r.maintenance_req
    assert r.maintenance_req >= 0


@given(
    money,
    st.lists(
        st.builds(Holding, st.just("L"), st.integers(1, 50_000).map(float), prices, betas),
        max_size=8,
    ),
    st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
)
def test_long_book_requirement_scales_linearly_with_price(cash, book, k):
    scaled = [Holding(h.symbol, h.quantity, h.price * k, h.beta) for h in book]
    base = compute_margin(cash, book).maintenance_req
    assert math.isclose(
        compute_margin(cash, scaled).maintenance_req, k * base, rel_tol=1e-9, abs_tol=1e-6
    )


@given(money, books)
def test_stress_at_shock_zero_equals_the_base_result(cash, book):
    (zero,) = stress_table(cash, book, scenarios=[0.0])
    assert zero.result == compute_margin(cash, book)


# Event streams: one account's price path; the debit makes some paths breach.
paths = st.lists(
    st.floats(min_value=15.0, max_value=60.0, allow_nan=False), min_size=1, max_size=30
)


def stream(path, gaps):
    return [
        margin_calc(
            "P",
            sum(gaps[: i + 1]),
            -20_000.0,
            [Holding("AAPL", 1000, p, 1.0)],
            event_id=f"e{i}",
            correlation_id=f"c{i}",
        )
        for i, p in enumerate(path)
    ]


@settings(max_examples=60)
@given(paths, st.lists(st.integers(0, 3_000), min_size=30, max_size=30), st.data())
def test_replay_is_deterministic_and_duplicates_change_nothing(path, gaps, data):
    events = stream(path, gaps)
    once = replay(events).decisions
    assert replay(events).decisions == once
    # Insert duplicates of already-seen events at random later positions
    noisy = list(events)
    for _ in range(data.draw(st.integers(0, 10))):
        i = data.draw(st.integers(0, len(events) - 1))
        first = noisy.index(events[i])  # a re-delivery comes after the original
        noisy.insert(data.draw(st.integers(first + 1, len(noisy))), events[i])
    assert replay(noisy).decisions == once
    # And the whole stream delivered twice
    assert replay(events + events).decisions == once


@settings(max_examples=60)
@given(paths, st.lists(st.integers(1, 3_000), min_size=30, max_size=30))
def test_at_most_one_call_open_and_calls_alternate_with_cures(path, gaps):
    decisions = replay(stream(path, gaps)).decisions
    ladder = [
        d.event_type for d in decisions if d.event_type in ("MARGIN_CALL_ISSUED", "MARGIN_CALL_MET")
    ]
    for a, b in itertools.pairwise(ladder):
        assert a != b
    if ladder:
        assert ladder[0] == "MARGIN_CALL_ISSUED"
