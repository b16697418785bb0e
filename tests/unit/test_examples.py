"""Each file in examples/ through the command line, as the README shows it, with the spec's numbers.

The numbers are worked by hand from spec sections 1-3 (see examples/README.md).
"""

import io
import json
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from margin_risk.tools.cli import main

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


def test_house_example_in_what_if_raises_the_requirement(capsys):
    # Given 100 TQQQ at $50 (3x ETF, long_rate 0.75), 100 QRS short at $120 (short_rate 0.50)
    # and 200 UVXY at $20 (non-marginable), $10,000 cash, every entry in force at 15:00
    argv = [
        "what-if",
        str(EXAMPLES / "house-snapshot.json"),
        "--house",
        str(EXAMPLES / "house.json"),
    ]
    code, out, err = run(capsys, *argv, "--at", "2026-02-16T15:00:00Z", "--scenarios", "-0.08")
    assert (code, err) == (0, "")
    doc = exact(out)
    # Then TQQQ 0.75 x 5,000 = 3,750 (spec section 7), QRS max(3,600, 0.50 x 12,000) = 6,000,
    # UVXY 100% of 4,000: 13,750 against equity 10,000 + 9,000 - 12,000 = 7,000
    assert (doc["equity"], doc["maintenance_req"], doc["deficiency"]) == (
        Decimal("7000.00"), Decimal("13750.00"), Decimal("6750.00"),
    )  # fmt: skip
    # At SPY -8% the entries apply to the shocked prices: TQQQ 38 -> 2,850, QRS 109.44 ->
    # 0.50 x 10,944 = 5,472, UVXY 23.20 (beta -2) -> 4,640
    (row,) = doc["stress"]
    assert (row["equity"], row["maintenance_req"], row["deficiency"]) == (
        Decimal("7496.00"), Decimal("12962.00"), Decimal("5466.00"),
    )  # fmt: skip
    assert [e["symbol"] for e in doc["house"]["in_force"]] == ["QRS", "TQQQ", "UVXY"]


def test_house_entries_not_yet_in_force_do_not_apply(capsys):
    house = ["--house", str(EXAMPLES / "house.json")]
    snapshot = str(EXAMPLES / "house-snapshot.json")
    # UVXY's entry is as of 02-12: on 02-11 only TQQQ and QRS are raised (3,750 + 6,000 + 1,000)
    _, out, _ = run(capsys, "what-if", snapshot, *house, "--at", "2026-02-11T00:00:00Z")
    assert exact(out)["maintenance_req"] == Decimal("10750.00")
    # Without a house file: the section 1 defaults, 1,250 + 3,600 + 1,000, and an excess
    _, out, _ = run(capsys, "what-if", snapshot)
    assert (exact(out)["maintenance_req"], exact(out)["excess"]) == (
        Decimal("5850.00"), Decimal("1150.00"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"symbol": "TQQQ"}', "expected a JSON list of house entries"),
        ('[{"symbol": "TQQQ", "long_rate": 2, "short_rate": 0.3, "non_marginable": false,'
         ' "as_of": "2026-02-01T00:00:00Z", "updated_by": "x"}]', "entry 0.long_rate"),
        ("[NaN]", "NaN is not allowed"),
    ],
)  # fmt: skip
def test_a_bad_house_file_is_one_line_and_no_output(capsys, tmp_path, content, why):
    bad = tmp_path / "house.json"
    bad.write_text(content)
    code, out, err = run(
        capsys, "what-if", str(EXAMPLES / "house-snapshot.json"), "--house", str(bad)
    )
    assert (code, out) == (1, "")
    assert why in err and err.count("\n") == 1


def test_a_bad_at_is_one_line(capsys):
    code, out, err = run(capsys, "what-if", str(EXAMPLES / "snapshot.json"), "--at", "yesterday")
    assert (code, out) == (1, "")
    assert err.startswith("error: --at: timestamp 'yesterday' is not ISO-8601")


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


def test_desk_actions_example_extends_waives_and_rejects(capsys, monkeypatch):
    code, out, err = run(capsys, "replay", str(EXAMPLES / "desk-events.jsonl"))
    assert code == 0
    decisions = [exact(line) for line in out.splitlines()]
    assert [d["event_id"] for d in decisions] == [
        "m-d01:MARGIN_CALL_ISSUED",
        "a-001:MARGIN_CALL_EXTENDED",  # the deadline 02-18 14:30 becomes 02-20 14:30
        "m-d11:MARGIN_CALL_ISSUED",
        "m-d12:ACCOUNT_RESTRICTED",
        "a-002:MARGIN_CALL_WAIVED",  # and the restriction lifted; its repeat changes nothing
        "a-003:DESK_ACTION_REJECTED",  # an account the enforcement never saw
        "m-d13:MARGIN_CALL_ISSUED",  # deficiency 500 after the waiver: a new breach
        "m-d02:ACCOUNT_RESTRICTED",  # past the policy's two days: no liquidation, extended
        "m-d03:LIQUIDATION_TRIGGERED",  # one second after the extended deadline
    ]
    extended, waived, rejected = decisions[1], decisions[4], decisions[5]
    assert extended["details"]["previous_deadline"] == "2026-02-18T14:30:00Z"
    assert extended["details"]["operator"].endswith("assumed-role/RiskDesk/jane")
    assert waived["details"]["deficiency"] == Decimal("500.00")
    assert waived["details"]["restriction_lifted"] is True
    assert waived["details"]["reason"] == "fee booked in error, refunded"
    assert rejected["details"]["rejection"] == "unknown account: no margin result"
    assert err.startswith("replay: 10 events, 9 applied, 0 stale, 1 duplicate")
    _, views, _ = run(capsys, "rebuild-state", "-", stdin=out.encode(), monkeypatch=monkeypatch)
    v = exact(views)
    assert v["ACC_DESK_001"]["call_deadline_extended_to"] == "2026-02-20T14:30:00Z"
    assert v["ACC_DESK_002"]["calls_waived"] == 1
    assert v["ACC_DESK_002"]["call_issued_at"] == "2026-02-16T15:30:00Z"


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


@pytest.mark.parametrize(
    "name",
    ["snapshot.json", "house.json", "house-snapshot.json", "events.jsonl", "desk-events.jsonl"],
)
def test_every_example_is_utf8_json(name):
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    lines = text.splitlines() if name.endswith(".jsonl") else [text]
    assert all(json.loads(line) is not None for line in lines)
