"""Each file in examples/ through the command line, as the README shows it, with the spec's numbers.

The numbers are worked by hand from spec sections 1-3 (see examples/README.md).
"""

import io
import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from margin_risk.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(capsys, *argv, stdin: bytes | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def exact(text: str):
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def test_snapshot_example_margin_and_stress_to_the_cent(capsys):
    code, out, err = run(capsys, "what-if", str(EXAMPLES / "snapshot.json"))
    assert (code, err) == (0, "")
    doc = exact(out)
    # shorts: 755 x 33.59 x 0.30 = 7,608.135 and 605 x 138.26 x 0.30 = 25,094.19; long 12,500
    assert {k: doc[k] for k in list(doc)[1:7]} == {
        "long_market_value": Decimal("50000.00"),
        "short_market_value": Decimal("109007.75"),
        "equity": Decimal("90992.25"),
        "maintenance_req": Decimal("45202.33"),  # 45,202.325 half-up
        "excess": Decimal("45789.93"),  # 45,789.925 half-up
        "deficiency": Decimal("0"),
    }
    rows = {r["scenario"]: r for r in doc["stress"]}
    assert len(rows) == 8
    # SPY -8%: AAPL 45.20, XYZ 31.17152, QRS 121.6688 (price x (1 + beta x move))
    assert rows[Decimal("-0.08")] == {
        "scenario": Decimal("-0.08"),
        "equity": Decimal("98055.88"),
        "maintenance_req": Decimal("40443.24"),
        "deficiency": Decimal("0"),
    }
    # SPY +6% hurts the shorts: requirement 13,400 + 8,018.97429 + 27,352.6671
    assert rows[Decimal("0.06")]["equity"] == Decimal("85694.53")
    assert rows[Decimal("0.06")]["maintenance_req"] == Decimal("48771.64")


def test_snapshot_example_with_given_scenarios_and_from_standard_input(capsys, monkeypatch):
    data = (EXAMPLES / "snapshot.json").read_bytes()
    code, out, err = run(
        capsys, "what-if", "-", "--scenarios", "-0.05,-0.10", stdin=data, monkeypatch=monkeypatch
    )
    assert (code, err) == (0, "")
    doc = exact(out)
    assert doc["account_id"] == "ACC_EXAMPLE_001"
    assert [(r["scenario"], r["equity"], r["maintenance_req"]) for r in doc["stress"]] == [
        (Decimal("-0.05"), Decimal("95407.02"), Decimal("42227.89")),
        (Decimal("-0.10"), Decimal("99821.79"), Decimal("39253.46")),
    ]


def test_house_example_holds_valid_section_7_entries():
    entries = exact((EXAMPLES / "house.json").read_text(encoding="utf-8"))
    assert [e["symbol"] for e in entries] == ["TQQQ", "QRS", "UVXY"]
    for e in entries:
        assert set(e) == {
            "symbol", "long_rate", "short_rate", "non_marginable", "as_of", "updated_by",
        }  # fmt: skip
        assert e["as_of"].endswith("Z") and isinstance(e["non_marginable"], bool)
    # spec section 7: long 100 TQQQ at $50 with long_rate 0.75 needs 3,750
    assert entries[0]["long_rate"] * 100 * 50 == Decimal("3750.00")


def replay_example(capsys):
    code, out, err = run(capsys, "replay", str(EXAMPLES / "events.jsonl"))
    assert code == 0
    return [exact(line) for line in out.splitlines()], err


def test_events_example_walks_the_whole_ladder(capsys):
    decisions, err = replay_example(capsys)
    assert [(d["event_id"], d["account_id"]) for d in decisions] == [
        ("m-002:MARGIN_CALL_ISSUED", "ACC_EXAMPLE_001"),
        ("m-101:MARGIN_WARNING", "ACC_EXAMPLE_002"),
        ("s-201:STRESS_BREACH", "ACC_EXAMPLE_003"),
        ("m-003:ACCOUNT_RESTRICTED", "ACC_EXAMPLE_001"),
        ("m-004:LIQUIDATION_TRIGGERED", "ACC_EXAMPLE_001"),
        ("m-005:MARGIN_CALL_MET", "ACC_EXAMPLE_001"),
    ]
    call, warning, breach, restricted, liquidation, met = decisions
    assert call["details"]["deficiency"] == Decimal("1250")
    assert warning["details"]["excess"] == Decimal("625")
    assert breach["details"]["scenario"] == Decimal("-0.08")
    assert breach["details"]["deficiency"] == Decimal("2100")
    assert restricted["timestamp"] == "2026-02-16T15:02:00Z"
    assert liquidation["details"]["deficiency"] == Decimal("3500")
    assert met["details"]["reason"] == "deficiency cured; restriction lifted"
    assert err == "replay: 10 events, 8 applied, 1 stale, 1 duplicate" + (
        " (stale and duplicate events change nothing)\n"
    )


def test_replay_output_rebuilds_the_state_from_standard_input(capsys, monkeypatch):
    _, out, _ = run(capsys, "replay", str(EXAMPLES / "events.jsonl"))
    code, views, err = run(
        capsys, "rebuild-state", "-", stdin=out.encode(), monkeypatch=monkeypatch
    )
    assert (code, err) == (0, "")
    v = exact(views)
    assert v["ACC_EXAMPLE_001"]["call_open"] is False
    assert v["ACC_EXAMPLE_001"]["restricted"] is False
    assert v["ACC_EXAMPLE_001"]["decisions"] == 4
    assert v["ACC_EXAMPLE_001"]["last_decision"] == "MARGIN_CALL_MET"
    assert v["ACC_EXAMPLE_003"]["last_decision"] == "STRESS_BREACH"


@pytest.mark.parametrize("name", ["snapshot.json", "house.json", "events.jsonl"])
def test_every_example_is_utf8_json(name):
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    lines = text.splitlines() if name.endswith(".jsonl") else [text]
    assert all(json.loads(line) is not None for line in lines)
