"""Spec section 6: the command line, its output and every kind of invalid input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from margin_risk.tools.cli import main
from tests.factories import long_book, margin_calc, stress_result

SNAPSHOT = {
    "account_id": "ACC_DEMO_001",
    "cash": -20000.0,
    "positions": [{"symbol": "AAPL", "quantity": 1000, "price": 50.0, "beta": 1.2}],
}


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_what_if_prints_margin_and_default_stress_grid(tmp_path, capsys):
    path = write(tmp_path, "snap.json", json.dumps(SNAPSHOT))
    code, out, err = run(capsys, "what-if", path)
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert list(doc) == [
        "account_id", "long_market_value", "short_market_value", "equity",
        "maintenance_req", "excess", "deficiency", "stress",
    ]  # fmt: skip
    assert (doc["equity"], doc["maintenance_req"], doc["excess"], doc["deficiency"]) == (
        30_000.0, 12_500.0, 17_500.0, 0.0,
    )  # fmt: skip
    assert [s["scenario"] for s in doc["stress"]] == [
        -0.08, -0.06, -0.04, -0.02, 0.0, 0.02, 0.04, 0.06,
    ]  # fmt: skip
    worst = doc["stress"][0]
    assert worst == {"scenario": -0.08, "equity": 25_200.0, "maintenance_req": 11_300.0,
                     "deficiency": 0.0}  # fmt: skip


def test_what_if_with_given_scenarios_and_cents_rounding(tmp_path, capsys):
    snap = {"account_id": "S", "cash": 10_000.0,
            "positions": [{"symbol": "NEAR5", "quantity": -1000, "price": 5.10}]}  # fmt: skip
    path = write(tmp_path, "snap.json", json.dumps(snap))
    code, out, _ = run(capsys, "what-if", path, "--scenarios", "-0.05,-0.10")
    assert code == 0
    doc = json.loads(out)
    # 5.10 x 0.95 = 4.845 -> below $5: max(2,500, 4,845) = 4,845; equity 10,000 - 4,845
    assert doc["stress"] == [
        {"scenario": -0.05, "equity": 5_155.0, "maintenance_req": 4_845.0, "deficiency": 0.0},
        {"scenario": -0.1, "equity": 5_410.0, "maintenance_req": 4_590.0, "deficiency": 0.0},
    ]


def test_what_if_runs_as_a_module():
    # The real entry point, as a user types it
    proc = subprocess.run(
        [sys.executable, "-m", "margin_risk", "what-if", "/nonexistent/snap.json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "cannot read" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "invalid JSON"),
        ('{"account_id": "A", "cash": NaN, "positions": []}', "NaN is not allowed"),
        ('{"account_id": "A", "cash": Infinity, "positions": []}', "Infinity is not allowed"),
        ('{"account_id": "A", "cash": 1e999, "positions": []}', "cash: Input should be less than 1000000000000000"),
        ('{"account_id": "A", "positions": []}', "cash: Field required"),
        ('{"account_id": "A", "cash": "100", "positions": []}', "cash: Input should be a number"),
        ('{"account_id": "", "cash": 1, "positions": []}', "account_id"),
        ('{"account_id": "A", "cash": 1, "positions": [{"symbol": "X", "quantity": 1, "price": -2}]}',
         "positions.0.price: Input should be greater than or equal to 0"),
        ('{"account_id": "A", "cash": 1, "positions": [{"symbol": "X", "price": 2}]}',
         "positions.0.quantity: Field required"),
        ("[1, 2]", "expected a JSON object, got an array"),
    ],
)  # fmt: skip
def test_what_if_rejects_bad_snapshots_with_one_line(tmp_path, capsys, text, needle):
    path = write(tmp_path, "bad.json", text)
    code, out, err = run(capsys, "what-if", path)
    assert code != 0
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert needle in err


@pytest.mark.parametrize("bad", ["-0.05,abc", "nan", "-1.5", "inf"])
def test_what_if_rejects_bad_scenarios(tmp_path, capsys, bad):
    path = write(tmp_path, "snap.json", json.dumps(SNAPSHOT))
    code, out, err = run(capsys, "what-if", path, "--scenarios", bad)
    assert code != 0 and out == ""
    assert "--scenarios" in err


def test_replay_prints_the_audit_events_in_decision_order(tmp_path, capsys):
    events = [
        margin_calc("A1", 0, -20_000.0, long_book(50.0)),
        margin_calc("A1", 60, -20_000.0, long_book(19.0), correlation_id="corr-crash"),
        stress_result("A2", 30, -45_000.0, long_book(50.0)),
        margin_calc("A1", 120, -20_000.0, long_book(40.0)),
    ]
    text = "\n".join(e.to_json() for e in events) + "\n"
    code, out, err = run(capsys, "replay", write(tmp_path, "events.jsonl", text))
    assert code == 0 and err.startswith("replay: 4 events, 4 applied, 0 stale, 0 duplicate")
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["event_type"] for x in lines] == [
        "MARGIN_CALL_ISSUED", "LIQUIDATION_TRIGGERED", "STRESS_BREACH", "MARGIN_CALL_MET",
    ]  # fmt: skip
    assert set(lines[0]) == {
        "event_id", "event_type", "account_id", "timestamp", "details", "correlation_id",
    }  # fmt: skip
    assert set(lines[0]["details"]) == {
        "deficiency", "excess", "equity", "maintenance_req", "scenario", "reason",
    }  # fmt: skip
    assert lines[0]["correlation_id"] == "corr-crash"
    assert lines[0]["timestamp"] == "2026-02-16T14:31:00Z"
    assert lines[2]["details"]["scenario"] == -0.08


def test_replay_keeps_unknown_fields_and_rejects_bad_lines_without_output(tmp_path, capsys):
    good = margin_calc("A1", 0, -20_000.0, long_book(19.0), origin_ts="2026-02-16T14:30:00Z")
    raw = json.loads(good.to_json())
    assert raw["origin_ts"] == "2026-02-16T14:30:00Z"
    bad = dict(raw, event_id="e2", equity=float("nan"))
    text = good.to_json() + "\n" + json.dumps(bad) + "\n"
    code, out, err = run(capsys, "replay", write(tmp_path, "e.jsonl", text))
    assert code != 0
    assert out == ""
    assert ":2:" in err and "NaN" in err


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{oops", "invalid JSON"),
        ("[]", "expected a JSON object"),
        ('{"event_id": "x", "account_id": "A"}', "Field required"),
        ('{"event_id": "x", "account_id": "A", "timestamp": "2026-02-16T14:30:00Z", "scenarios": [],'
         ' "worst_scenario": 0, "worst_deficiency": 0, "correlation_id": "c"}', "scenarios"),
    ],
)  # fmt: skip
def test_replay_rejects_each_kind_of_bad_line(tmp_path, capsys, line, needle):
    code, out, err = run(capsys, "replay", write(tmp_path, "e.jsonl", line + "\n"))
    assert code != 0 and out == ""
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_rebuild_state_from_a_local_audit_dir(tmp_path, capsys):
    from margin_risk.audit import audit_objects
    from margin_risk.enforcement import replay

    events = [
        margin_calc("A1", 0, -20_000.0, long_book(25.0)),
        margin_calc("A1", 1801, -20_000.0, long_book(25.0)),
        margin_calc("A2", 10, -20_000.0, long_book(25.0)),
        margin_calc("A2", 20, -20_000.0, long_book(40.0)),
    ]
    result = replay(events)
    for key, body in audit_objects(result.decisions, "b1").items():
        p = tmp_path / key
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(body)
    code, out, _ = run(capsys, "rebuild-state", str(tmp_path / "audit"))
    assert code == 0
    views = json.loads(out)
    assert views["A1"]["call_open"] is True and views["A1"]["restricted"] is True
    assert views["A1"]["call_amount"] == 1_250.0
    assert views["A2"]["call_open"] is False and views["A2"]["decisions"] == 2


def test_rebuild_state_rejects_a_missing_dir(capsys):
    code, _, err = run(capsys, "rebuild-state", "/nonexistent/dir")
    assert code != 0 and "not a directory" in err


@pytest.mark.parametrize("command", ["what-if", "replay"])
def test_a_file_that_is_not_utf8_text_gets_one_line(tmp_path, capsys, command):
    p = tmp_path / "latin1.json"
    p.write_bytes('{"account_id": "Zürich"}'.encode("latin-1"))
    code, out, err = run(capsys, command, str(p))
    assert code != 0 and out == ""
    assert "not UTF-8 text" in err and len(err.strip().splitlines()) == 1


def test_rebuild_state_rejects_an_audit_dir_with_a_binary_file(tmp_path, capsys):
    part = tmp_path / "audit" / "year=2026"
    part.mkdir(parents=True)
    (part / "batch-1.jsonl").write_bytes(b"\xff\xfe\x00")
    code, out, err = run(capsys, "rebuild-state", str(tmp_path / "audit"))
    assert code != 0 and out == ""
    assert "not UTF-8 text" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("s3://", "expected s3://bucket/prefix"),
        ("s3://no-such-audit-bucket/audit/", "NoSuchBucket"),
    ],
)
def test_rebuild_state_reports_an_unreadable_s3_prefix_in_one_line(
    aws_endpoint, capsys, uri, needle
):
    code, out, err = run(capsys, "rebuild-state", uri)
    assert code != 0 and out == ""
    assert needle in err and len(err.strip().splitlines()) == 1


def test_demo_refuses_a_summary_path_it_cannot_write_before_starting(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    code, out, err = run(capsys, "demo", "--summary-json", str(blocker / "summary.json"))
    assert code == 1 and out == ""  # nothing started: no progress lines
    assert err.startswith("error: --summary-json") and len(err.strip().splitlines()) == 1
    code, out, err = run(capsys, "demo", "--summary-json", str(tmp_path))
    assert code == 1 and "is a directory" in err


def test_dashboard_reports_an_output_dir_it_cannot_create(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    code, out, err = run(capsys, "dashboard", "--out", str(blocker / "page"))
    assert code == 1 and out == ""
    assert "cannot write the page" in err and len(err.strip().splitlines()) == 1


# --- Hardened edges: every probe is one line on stderr and a non-zero exit, never a traceback ---
def one_line_error(code, out, err, needle):
    assert code == 1, err
    assert out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert needle in err, err


def snapshot_with(**changes):
    return json.dumps({**SNAPSHOT, **changes})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        pytest.param(snapshot_with(cash=1e26), "cash"),
        pytest.param('{"account_id": "A", "cash": 0, "positions": [{"symbol": "X", "quantity": 1e200, "price": 1e200}]}',
         "positions.0.quantity"),
        ('{"account_id": "A", "cash": 0, "positions": [{"symbol": "X", "quantity": 1, "price": 1e400}]}',
         "positions.0.price"),
        ('{"account_id": "A", "cash": ' + "9" * 5_000 + ', "positions": []}', "a number of 5000 characters"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
        ('{"account_id": "A", "cash": 1, "x": ' + "{" * 5_000 + "}" * 5_000 + "}", "nested deeper"),
        ("[1, 2]", "expected a JSON object, got an array"),
    ],
    ids=["cash-1e26", "qty-x-price-1e400", "price-1e400", "5000-digits", "100000-deep",
         "5000-deep-extra", "array"],
)  # fmt: skip
def test_what_if_probes_are_one_line_errors(tmp_path, capsys, text, needle):
    one_line_error(*run(capsys, "what-if", write(tmp_path, "p.json", text)), needle)


@pytest.mark.parametrize(
    ("moves", "needle"),
    [
        ("1e308", "--scenarios"),
        ("11", "--scenarios"),  # the settings' grid stops at +10 (1,000%)
        ("", "--scenarios: '' is not a number"),
        ("-0.05,", "--scenarios: '' is not a number"),
        ("9" * 5_000, "--scenarios: a move of 5000 characters"),
    ],
)
def test_scenarios_are_held_to_the_settings_limits(tmp_path, capsys, moves, needle):
    path = write(tmp_path, "snap.json", json.dumps(SNAPSHOT))
    one_line_error(*run(capsys, "what-if", path, "--scenarios", moves), needle)


@pytest.mark.parametrize("value", ["[1e308", "[-0.05, 11]", "not json", "[" * 5_000])
def test_a_malformed_scenarios_setting_is_one_line(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("MR_MARGIN__SCENARIOS", value)
    path = write(tmp_path, "snap.json", json.dumps(SNAPSHOT))
    one_line_error(*run(capsys, "what-if", path), "invalid settings")


def test_what_if_nets_rows_of_one_symbol(tmp_path, capsys):
    # long 100 and short 100 of one stock are no position: nothing to margin, not $750
    snap = {"account_id": "N", "cash": 10_000,
            "positions": [{"symbol": "XYZ", "quantity": 100, "price": 20},
                          {"symbol": "XYZ", "quantity": -100, "price": 20}]}  # fmt: skip
    code, out, err = run(capsys, "what-if", write(tmp_path, "n.json", json.dumps(snap)))
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert (doc["maintenance_req"], doc["equity"], doc["long_market_value"]) == (0, 10_000, 0)


def test_what_if_rejects_one_symbol_at_two_prices_in_one_line(tmp_path, capsys):
    snap = {"account_id": "N", "cash": 10_000,
            "positions": [{"symbol": "XYZ", "quantity": 100, "price": 20},
                          {"symbol": "XYZ", "quantity": 50, "price": 21}]}  # fmt: skip
    one_line_error(*run(capsys, "what-if", write(tmp_path, "n.json", json.dumps(snap))), "XYZ")


def event_line(**changes):
    e = json.loads(margin_calc("A1", 0, -20_000.0, long_book(19.0)).to_json())
    return json.dumps({**e, **changes})


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (event_line(timestamp="9999-12-31T23:00:00-05:00"), ":1: timestamp: "),
        (event_line(timestamp=1_771_252_200), "ISO-8601"),
        (event_line(timestamp="2026-02-16T14:30:00"), "ISO-8601 with a zone"),
        pytest.param(event_line(equity=1e26), "equity"),
        (event_line().replace('"equity": ', '"equity": ' + "1" * 5_000 + ", \"e2\": "), "5000 characters"),
        ("[" * 100_000, "nested deeper than 32 levels"),
    ],
    ids=["year-9999-negative-offset", "epoch", "no-zone", "amount-1e26", "5000-digits", "100000-deep"],
)  # fmt: skip
def test_replay_probes_are_one_line_errors(tmp_path, capsys, line, needle):
    one_line_error(*run(capsys, "replay", write(tmp_path, "e.jsonl", line + "\n")), needle)


def test_replay_splits_lines_on_newline_only_and_rebuild_reads_its_output(tmp_path, capsys):
    # U+2028 and U+0085 are valid inside a JSON string; str.splitlines() would cut the line there.
    e = margin_calc("A\u20281", 0, -20_000.0, long_book(19.0), event_id="e\u00851")
    code, out, _ = run(capsys, "replay", write(tmp_path, "e.jsonl", e.to_json() + "\n"))
    assert code == 0
    decisions = [json.loads(x) for x in out.split("\n") if x]
    assert [d["event_id"] for d in decisions] == [
        "e\u00851:MARGIN_CALL_ISSUED", "e\u00851:LIQUIDATION_TRIGGERED",
    ]  # fmt: skip
    assert {d["account_id"] for d in decisions} == {"A\u20281"}
    trail = tmp_path / "audit" / "year=2026"
    trail.mkdir(parents=True)
    (trail / "batch-1.jsonl").write_text(out, encoding="utf-8")
    code, views, err = run(capsys, "rebuild-state", str(tmp_path / "audit"))
    assert (code, err) == (0, "")
    assert json.loads(views)["A\u20281"]["call_open"] is True


def test_replay_counts_stale_and_duplicate_events_on_stderr(tmp_path, capsys):
    first = margin_calc("A1", 60, -20_000.0, long_book(19.0), event_id="e1")
    stale = margin_calc("A1", 0, -20_000.0, long_book(50.0), event_id="e0")
    lines = [first, first, stale, first]
    text = "".join(e.to_json() + "\n" for e in lines)
    code, out, err = run(capsys, "replay", write(tmp_path, "e.jsonl", text))
    assert code == 0 and len(out.splitlines()) == 2  # the call and the liquidation, once
    assert err == (
        "replay: 4 events, 1 applied, 1 stale, 2 duplicate"
        " (stale and duplicate events change nothing)\n"
    )


def test_rebuild_state_on_a_directory_without_audit_files_is_an_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an audit file", encoding="utf-8")
    one_line_error(*run(capsys, "rebuild-state", str(tmp_path)), "no audit files (*.jsonl)")


def test_rebuild_state_names_the_file_and_line_of_a_bad_record(tmp_path, capsys):
    (tmp_path / "batch-1.jsonl").write_text('{"event_id": "x"}\n', encoding="utf-8")
    one_line_error(
        *run(capsys, "rebuild-state", str(tmp_path)), "batch-1.jsonl:1: bad audit record"
    )


def with_stdin(monkeypatch, data: bytes):
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_every_file_argument_reads_standard_input_as_dash(capsys, monkeypatch):
    with_stdin(monkeypatch, json.dumps(SNAPSHOT).encode())
    code, out, _ = run(capsys, "what-if", "-")
    assert code == 0 and json.loads(out)["equity"] == 30_000
    e = margin_calc("A1", 0, -20_000.0, long_book(19.0))
    with_stdin(monkeypatch, e.to_json().encode() + b"\n")
    code, decisions, _ = run(capsys, "replay", "-")
    assert code == 0 and len(decisions.splitlines()) == 2
    with_stdin(monkeypatch, decisions.encode())
    code, views, _ = run(capsys, "rebuild-state", "-")
    assert code == 0 and json.loads(views)["A1"]["liquidation_triggered"] is True


def test_bad_standard_input_is_named_in_the_one_line(capsys, monkeypatch):
    with_stdin(monkeypatch, b"{oops")
    one_line_error(*run(capsys, "what-if", "-"), "<stdin>: invalid JSON")
    with_stdin(monkeypatch, b"")
    one_line_error(*run(capsys, "rebuild-state", "-"), "<stdin>: no audit events")


@pytest.mark.parametrize("command", ["what-if", "replay"])
def test_a_closed_output_pipe_ends_quietly(command):
    examples = Path(__file__).resolve().parents[2] / "examples"
    arg = examples / ("snapshot.json" if command == "what-if" else "events.jsonl")
    proc = subprocess.Popen(
        [sys.executable, "-m", "margin_risk", command, str(arg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # the reader is gone before the first write, like `| head -0`
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait() == 141
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err


def test_replay_memory_does_not_grow_with_the_file(tmp_path):
    """Streaming: four times the lines (same ten accounts) must not need four times the memory."""
    import tracemalloc

    import margin_risk.enforcement  # noqa: F401 - imported before measuring

    def peak(lines: int) -> int:
        path = tmp_path / f"e{lines}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for i in range(lines):
                e = margin_calc(f"A{i % 10}", i, -20_000.0, long_book(50.0), event_id=f"e{i}")
                f.write(e.to_json() + "\n")
        tracemalloc.start()
        try:
            assert main(["replay", str(path)]) == 0
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(200)  # first use fills caches (pydantic validators, the decimal context): not per line
    small, large = peak(1_000), peak(4_000)
    assert large < 1.5 * small, (small, large)
