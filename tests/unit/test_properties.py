"""Properties that must hold for every book and every event stream (hypothesis)."""

import itertools
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal, localcontext

from hypothesis import given, settings
from hypothesis import strategies as st

from margin_risk.enforcement import replay
from margin_risk.params import DEFAULT_SCENARIOS, MarginParams
from margin_risk.rules import Holding, cents, compute_margin
from margin_risk.stress import stress_table, worst_scenario
from tests.factories import margin_calc


def decimals(lo: str, hi: str, places: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(Decimal(lo), Decimal(hi), places=places, allow_nan=False)


money = decimals("-1000000", "1000000", 2)
# Cent prices, clustered around the $5 short threshold (exactly 5.00 included) and a wide range.
prices = st.one_of(decimals("4.90", "5.10", 2), st.just(Decimal("5.00")), decimals("0", "2000", 2))
quantities = st.one_of(
    st.integers(-50_000, 50_000).map(Decimal), decimals("-500", "500", 4)
)  # shares and fractional shares
betas = decimals("-3", "15", 2)
SYMBOLS = ("A", "B", "C", "D", "E")


@st.composite
def books(draw: st.DrawFn) -> list[Holding]:
    """Up to 12 rows over five symbols; rows of one symbol share its mark (price, beta), so a
    symbol split over rows is netted (disagreeing rows are invalid input, tested elsewhere)."""
    marks = {s: (draw(prices), draw(betas)) for s in SYMBOLS}
    rows = draw(st.lists(st.tuples(st.sampled_from(SYMBOLS), quantities), max_size=12))
    return [Holding(s, q, *marks[s]) for s, q in rows]


house = st.sampled_from(
    [MarginParams(), MarginParams(concentration_addon=Decimal("0.10"), long_rate=Decimal("0.3"))]
)


def oracle(cash: Decimal, book: list[Holding], p: MarginParams, move: Decimal | None = None):
    """Spec sections 1-2 written out directly with unbounded exact decimals (no shared code)."""
    with localcontext() as ctx:
        ctx.prec = 200
        qty: dict[str, Decimal] = defaultdict(Decimal)
        mark: dict[str, tuple[Decimal, Decimal]] = {}
        for h in book:
            qty[h.symbol] += h.quantity
            mark[h.symbol] = (h.price, h.beta)
        lmv = smv = req = Decimal(0)
        values = []
        for sym, q in qty.items():
            if q == 0:
                continue
            price, beta = mark[sym]
            if move is not None:
                price = max(Decimal(0), price * (1 + beta * move))
            mv = q * price
            values.append(abs(mv))
            if q > 0:
                lmv += mv
                req += p.long_rate * mv
            else:
                smv += -mv
                floor, rate = (
                    (p.short_per_share, p.short_rate)
                    if price >= p.low_price_threshold
                    else (p.low_price_short_per_share, p.low_price_short_rate)
                )
                req += max(floor * -q, rate * -mv)
        if p.concentration_addon > 0:
            req += sum(
                (p.concentration_addon * v for v in values
                 if v > p.concentration_threshold * (lmv + smv)),
                Decimal(0),
            )  # fmt: skip
        equity = cash + lmv - smv
        return lmv, smv, equity, req, equity - req, max(Decimal(0), req - equity)


def half_up(x: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 200
        return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@settings(max_examples=400)
@given(money, books(), house)
def test_core_equals_the_decimal_oracle_exactly(cash, book, p):
    # Given any book of cent prices, whole and fractional shares and shorts around $5
    # When the core computes margin and every stress scenario
    r = compute_margin(cash, book, p)
    rows = stress_table(cash, book, p)
    # Then every figure is the oracle's exact decimal, and presents as its half-up cents
    got = (r.long_market_value, r.short_market_value, r.equity, r.maintenance_req, r.excess)
    assert (*got, r.deficiency) == oracle(cash, book, p)
    assert [cents(x) for x in got] == [half_up(x) for x in oracle(cash, book, p)[:5]]
    for row, move in zip(rows, DEFAULT_SCENARIOS, strict=True):
        x = row.result
        want = oracle(cash, book, p, move)
        assert (x.equity, x.maintenance_req, x.deficiency) == (want[2], want[3], want[5])
    worst = worst_scenario(rows)
    assert worst.result.deficiency == max(oracle(cash, book, p, m)[5] for m in DEFAULT_SCENARIOS)


def test_half_cent_amounts_present_half_up():
    # Given short 755 @ 33.59 and short 605 @ 138.26: 30% of SMV is exactly 32,702.325
    book = [Holding("X", -755, Decimal("33.59")), Holding("Y", -605, Decimal("138.26"))]
    r = compute_margin(Decimal("200000"), book)
    # Then the requirement is that exact decimal and presents as 32,702.33 (half-up)
    assert r.short_market_value == Decimal("109007.75")
    assert r.maintenance_req == Decimal("32702.325")
    assert cents(r.maintenance_req) == Decimal("32702.33")
    assert cents(Decimal("-0.005")) == Decimal("-0.01")


@given(money, books())
def test_equity_identity_and_deficiency_definition(cash, book):
    r = compute_margin(cash, book)
    assert r.equity == cash + r.long_market_value - r.short_market_value
    assert r.deficiency >= 0
    assert r.deficiency == max(Decimal(0), r.maintenance_req - r.equity)
    assert r.excess == r.equity - r.maintenance_req
    assert r.maintenance_req >= 0


@given(
    money,
    st.lists(
        st.builds(Holding, st.just("L"), st.integers(1, 50_000).map(Decimal), prices, betas),
        max_size=1,
    ),
    decimals("0", "20", 2),
)
def test_long_book_requirement_scales_linearly_with_price(cash, book, k):
    scaled = [Holding(h.symbol, h.quantity, h.price * k, h.beta) for h in book]
    base = compute_margin(cash, book).maintenance_req
    assert compute_margin(cash, scaled).maintenance_req == k * base


@given(money, books())
def test_stress_at_shock_zero_equals_the_base_result(cash, book):
    (zero,) = stress_table(cash, book, scenarios=[Decimal(0)])
    assert zero.result == compute_margin(cash, book)


# Event streams: one account's price path; the debit makes some paths breach.
paths = st.lists(decimals("15", "60", 2), min_size=1, max_size=30)


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
