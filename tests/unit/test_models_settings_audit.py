"""Event models (spec section 4), house settings, and the audit trail's keys and rebuild (section 5)."""

import json
import random
from decimal import Decimal

import pytest
from pydantic import ValidationError

from margin_risk.audit import (
    audit_objects,
    batch_id,
    comparable,
    parse_jsonl,
    partition_prefix,
    rebuild_state,
    view_of,
)
from margin_risk.enforcement import replay
from margin_risk.models import CashTxn, Fill, PriceTick, describe_error, reason_code
from margin_risk.rules import Holding
from margin_risk.settings import HouseSettings
from tests.factories import at, margin_calc

FILL = {
    "fill_id": "f1", "account_id": "A", "symbol": "AAPL", "side": "BUY", "quantity": 100,
    "price": 50.25, "timestamp": "2026-02-16T14:30:00Z", "correlation_id": "c1",
}  # fmt: skip


def test_fill_keeps_unknown_fields_and_round_trips():
    f = Fill.model_validate(dict(FILL, venue="XNAS"))
    out = json.loads(f.to_json())
    assert out["venue"] == "XNAS"
    assert out["timestamp"] == "2026-02-16T14:30:00Z"


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"quantity": 0}, "quantity", "out_of_range"),
        ({"quantity": -5}, "quantity", "out_of_range"),
        ({"price": -0.01}, "price", "out_of_range"),
        ({"price": float("nan")}, "price", "non_finite_number"),
        ({"price": float("inf")}, "price", "non_finite_number"),
        ({"price": "50"}, "price", "wrong_type"),
        ({"side": "HOLD"}, "side", "wrong_type"),
        ({"timestamp": "2026-02-16T14:30:00"}, "timestamp", "wrong_type"),
        ({"fill_id": None}, "fill_id", "wrong_type"),
    ],
)
def test_fill_rejections_name_the_field(change, field, code):
    with pytest.raises(ValidationError) as e:
        Fill.model_validate(dict(FILL, **change))
    assert describe_error(e.value).startswith(f"{field}:")
    assert reason_code(e.value) == code


def test_missing_field_is_reported():
    raw = dict(FILL)
    del raw["account_id"]
    with pytest.raises(ValidationError) as e:
        Fill.model_validate(raw)
    assert "account_id: Field required" in describe_error(e.value)
    assert reason_code(e.value) == "missing_field"


def test_price_beta_optional_and_cash_sign_free():
    p = PriceTick.model_validate(
        {"symbol": "X", "price": 4.99, "timestamp": "2026-02-16T14:30:00Z"}
    )
    assert p.beta is None
    c = CashTxn.model_validate(
        {"txn_id": "t", "account_id": "A", "amount": -500, "timestamp": "2026-02-16T14:30:00+01:00",
         "correlation_id": "c"}
    )  # fmt: skip
    assert json.loads(c.to_json())["timestamp"] == "2026-02-16T13:30:00Z"


def test_house_settings_override_from_environment(monkeypatch):
    monkeypatch.setenv("MR_MARGIN__LONG_RATE", "0.30")
    monkeypatch.setenv("MR_MARGIN__SCENARIOS", "[-0.05, -0.10]")
    monkeypatch.setenv("MR_POLICY__CALL_DEADLINE_SECONDS", "600")
    s = HouseSettings()
    assert s.margin.to_params().long_rate == Decimal("0.30")
    assert s.margin.to_params().scenarios == (Decimal("-0.05"), Decimal("-0.10"))
    assert s.policy.to_params().call_deadline_seconds == 600
    monkeypatch.setenv("MR_MARGIN__LONG_RATE", "-1")
    with pytest.raises(ValidationError):
        HouseSettings()


def test_partition_prefix_is_unpadded_utc():
    assert partition_prefix(at(0)) == "audit/year=2026/month=2/day=16/hour=14/"


def test_audit_keys_are_deterministic_and_split_by_hour():
    events = [
        margin_calc("A", 0, -20_000.0, [Holding("X", 1000, 19.0)]),
        margin_calc("B", 3600, -20_000.0, [Holding("X", 1000, 19.0)]),
    ]
    decisions = replay(events).decisions
    bid = batch_id(["margin.calc.v1/0/10", "margin.calc.v1/0/11"])
    assert bid == batch_id(["margin.calc.v1/0/11", "margin.calc.v1/0/10"])
    objs = audit_objects(decisions, bid)
    assert sorted(objs) == [
        f"audit/year=2026/month=2/day=16/hour=14/batch-{bid}.jsonl",
        f"audit/year=2026/month=2/day=16/hour=15/batch-{bid}.jsonl",
    ]
    assert audit_objects(decisions, bid) == objs
    lines = [x for body in objs.values() for x in parse_jsonl(body.decode())]
    assert lines == decisions


def test_rebuild_from_the_audit_trail_equals_live_state_after_a_long_random_run():
    rng = random.Random(4210)
    accounts = [f"ACC{i:03d}" for i in range(40)]
    t = {a: 0 for a in accounts}
    events = []
    for _ in range(3_000):
        a = rng.choice(accounts)
        t[a] += rng.choice([5, 60, 600, 1900, 90_000])
        price = rng.uniform(17.0, 45.0)
        events.append(margin_calc(a, t[a], -20_000.0, [Holding("X", 1000, price)]))
    result = replay(events)
    trail = []
    for n in range(0, len(result.decisions), 97):  # written in batches, shuffled like S3 listing
        objs = audit_objects(result.decisions[n : n + 97], f"b{n}")
        trail.extend(x for body in objs.values() for x in parse_jsonl(body.decode()))
    rng.shuffle(trail)
    rebuilt = rebuild_state(trail + trail[:50])  # and some lines delivered twice
    live = {a: view_of(s) for a, s in result.states.items()}
    assert {a for a in live if live[a].call_open or rebuilt.get(a)} == set(rebuilt)
    for a, v in rebuilt.items():
        assert comparable(v) == comparable(live[a])
    assert sum(v.call_open for v in rebuilt.values()) > 0
    assert sum(v.liquidation_triggered for v in rebuilt.values()) > 0
