"""Backtest: archived results (the margin history's Parquet layout) through another policy, with
a per-account diff against the audit trail. Book: 1,000 AAPL long, $20,000 debit (see
test_enforcement): at $28 the excess is 1,000 against a 5% cushion of 1,400 (a warning), at $30
it is 2,500 against 1,500 (none) but below a 10% cushion of 3,000; at $25 a call for 1,250."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import boto3
import pytest

from margin_risk import archive, names
from margin_risk.audit import to_jsonl
from margin_risk.enforcement import replay
from margin_risk.params import PolicyParams
from margin_risk.tools.backtest import Backtest
from margin_risk.tools.cli import main
from margin_risk.tools.history import LocalHistory, S3History, iter_history, write_history
from tests.factories import at, desk_action, long_book, margin_calc, stress_result

DEBIT = -20_000.0


def session():
    a, b = "ACC_1", "ACC_2"
    return [
        margin_calc(a, 0, DEBIT, long_book(50.0)),
        margin_calc(a, 600, DEBIT, long_book(30.0)),  # 10% cushion: warning; 5%: none
        margin_calc(a, 1_200, DEBIT, long_book(25.0)),  # call
        margin_calc(b, 60, DEBIT, long_book(28.0)),  # warning under both
        stress_result(b, 90, DEBIT, long_book(28.0)),
        margin_calc(b, 3_700, DEBIT, long_book(25.0)),  # call, in the next hour
        margin_calc(b, 5_600, DEBIT, long_book(25.0)),  # restricted 1,900 s after
    ]


@pytest.fixture
def archived(tmp_path):
    results = session()
    write_history(tmp_path / "history", results)
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "batch-1.jsonl").write_bytes(to_jsonl(replay(results).decisions))
    return tmp_path, results


def test_the_archive_layout_is_the_one_archive_module_describes(archived):
    root, _ = archived
    files = sorted(
        str(p.relative_to(root / "history")) for p in (root / "history").rglob("*.parquet")
    )
    assert files == [
        "margin_calc/event_date=2026-02-16/hour=14/part-0.parquet",
        "margin_calc/event_date=2026-02-16/hour=15/part-0.parquet",
        "margin_calc/event_date=2026-02-16/hour=16/part-0.parquet",
        "stress/event_date=2026-02-16/hour=14/part-0.parquet",
    ]
    assert archive.parse_partition("stress/event_date=2026-02-16/hour=14/") == (
        "stress", "2026-02-16", 14,
    )  # fmt: skip
    with pytest.raises(ValueError):
        archive.parse_partition("margin_calc/date=2026-02-16/hour=14")


def test_history_reads_back_exactly_in_event_time_order_once_per_event_id(archived):
    root, results = archived
    # a retried micro-batch wrote the first hour's margin results a second time
    write_history(root / "history", results[:3], name="part-retry")
    got = list(iter_history(LocalHistory(root / "history")))
    assert got == sorted(results, key=lambda r: (r.timestamp, r.event_id))


def test_same_policy_same_decisions_no_diff(archived):
    root, results = archived
    trail = replay(sorted(results, key=lambda r: (r.timestamp, r.event_id))).decisions
    bt = Backtest(PolicyParams(), trail)
    assert list(bt.run(iter_history(LocalHistory(root / "history")))) == trail
    assert bt.report.totals() == {
        "added": 0, "removed": 0, "earlier": 0, "later": 0, "same": len(trail),
        "accounts_differing": 0,
    }  # fmt: skip


def test_a_stricter_cushion_adds_a_warning_and_a_shorter_restriction_moves_one_earlier(archived):
    root, results = archived
    trail = replay(results).decisions
    bt = Backtest(PolicyParams(warning_cushion="0.10", restrict_after_seconds=600), trail)
    decisions = list(bt.run(iter_history(LocalHistory(root / "history"))))
    diffs = {a: d.to_dict(a) for a, d in bt.report.diffs.items()}
    # ACC_1's excess of 2,500 at $30 is inside 10% x 30,000 = 3,000: a warning the trail lacks
    assert diffs["ACC_1"]["added"] == [
        {"event_type": "MARGIN_WARNING", "timestamp": "2026-02-16T14:40:00Z"}
    ]
    # ACC_2's call was restricted at 16:03:20 (1,900 s); after 600 s it would have been too, but
    # the next result is that same 16:03:20 one: same time, no diff
    assert "ACC_2" not in diffs
    assert bt.report.totals()["added"] == 1
    assert len(decisions) == len(trail) + 1


def test_desk_actions_in_the_trail_are_applied_again(archived):
    root, results = archived
    waiver = desk_action("ACC_2", 4_000, names.DESK_ACTION_WAIVE)
    trail = replay(sorted([*results, waiver], key=lambda e: e.timestamp)).decisions
    assert "MARGIN_CALL_WAIVED" in [d.event_type for d in trail]
    bt = Backtest(PolicyParams(), trail)
    decisions = list(bt.run(iter_history(LocalHistory(root / "history"))))
    assert sorted(decisions, key=lambda d: d.event_id) == sorted(trail, key=lambda d: d.event_id)
    assert bt.report.totals()["accounts_differing"] == 0


def test_removed_and_later_decisions(archived):
    root, results = archived
    trail = replay(results).decisions
    # a call deadline so short that nothing changes, a restriction after 2,000 s: ACC_2's
    # restriction (1,900 s after its call) is not taken at all
    bt = Backtest(PolicyParams(restrict_after_seconds=2_000), trail)
    list(bt.run(iter_history(LocalHistory(root / "history"))))
    assert bt.report.diffs["ACC_2"].to_dict("ACC_2")["removed"] == [
        {"event_type": "ACCOUNT_RESTRICTED", "timestamp": "2026-02-16T16:03:20Z"}
    ]


def test_the_command_prints_decisions_diffs_and_totals(archived, capsys):
    root, _ = archived
    policy = root / "policy.json"
    policy.write_text(json.dumps({"MR_POLICY__WARNING_CUSHION": 0.10}))
    code = main(
        ["backtest", str(root / "history"), "--policy", str(policy), "--audit", str(root / "audit")]
    )
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    lines = [json.loads(x, parse_float=Decimal) for x in out.splitlines()]
    summary = lines[-1]["backtest"]
    assert summary["policy"]["warning_cushion"] == Decimal("0.10")
    assert summary["diff"]["added"] == 1 and summary["results"] == 7 and summary["accounts"] == 2
    assert summary["period"] == {"start": "2026-02-16T14:30:00Z", "end": "2026-02-16T16:03:20Z"}
    assert [x["account_id"] for x in lines if "added" in x] == ["ACC_1"]


@pytest.mark.parametrize(
    ("policy", "why"),
    [
        ({"warning_cushion": -1}, "warning_cushion"),
        ({"call_deadline": 5}, "call_deadline is not a policy setting"),
    ],
)
def test_a_bad_policy_file_is_one_line(archived, capsys, policy, why):
    root, _ = archived
    path = root / "p.json"
    path.write_text(json.dumps(policy))
    code = main(["backtest", str(root / "history"), "--policy", str(path)])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert why in err and err.count("\n") == 1


def test_an_empty_history_is_an_error(tmp_path, capsys):
    code = main(["backtest", str(tmp_path)])
    assert code == 1
    assert "no history partitions" in capsys.readouterr().err


@pytest.mark.integration
def test_backtest_reads_an_s3_prefix(archived, aws_endpoint):
    root, results = archived
    s3 = boto3.client("s3")
    bucket = f"history-{uuid.uuid4().hex[:12]}"  # its own bucket: the audit bucket is write-once
    s3.create_bucket(Bucket=bucket)
    for p in (root / "history").rglob("*.parquet"):
        key = f"{names.HISTORY_PREFIX}{p.relative_to(root / 'history')}"
        s3.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())
    source = S3History(f"s3://{bucket}/{names.HISTORY_PREFIX}")
    assert [h.hour for h in source.hours()] == [14, 15, 16]
    got = list(iter_history(source, start=at(3_600)))
    assert got == sorted(
        [r for r in results if r.timestamp >= at(3_600)], key=lambda r: r.timestamp
    )
