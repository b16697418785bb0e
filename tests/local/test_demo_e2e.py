"""The main job end to end on a small session: real broker, Spark job, handler, moto server.

One run (about a minute and a half) serves every assertion: the Spark job is killed in the
middle of a sell-off micro-batch and restarted, and still every call and liquidation the
session scripts happens exactly once, as the reference rules replaying the same inputs say; the
desk's extension and waiver (published through the desk command's code path) are applied as the
reference applies them; the leveraged ETF's house requirement is applied by the job as the
reference applies it; the history the job archived backtests to the same decisions, plus the
warnings a stricter cushion adds.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from margin_risk import names
from margin_risk.audit import read_audit_dir
from margin_risk.enforcement import replay
from margin_risk.models import AuditEvent, DeskAction, MarginCalc
from margin_risk.params import PolicyParams
from margin_risk.rules import compute_margin
from margin_risk.tools.history import LocalHistory, iter_history
from margin_risk.tools.local.demo import (
    Demo,
    DemoOptions,
    Summary,
    print_summary,
    write_summary_json,
)
from margin_risk.tools.local.simulator import (
    ETF_LONG_RATE,
    LEVERAGED_ETF,
    MarketSimulator,
    expected_inputs,
    expected_margin_events,
)

ACCOUNTS, SYMBOLS, SEED, CRASH_STEP = 40, 8, 3, 5
SUMMARY_KEYS = {
    "events_in", "margin_results", "margin_calls_issued", "margin_calls_met", "liquidations",
    "rejected_records", "audit_objects", "latency_ms_p50", "latency_ms_p99",
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Summary, Path, list[AuditEvent]]:
    mp = pytest.MonkeyPatch()
    mp.delenv("AWS_ENDPOINT_URL", raising=False)  # the demo starts its own moto server
    run_dir = tmp_path_factory.mktemp("demo")
    try:
        opts = DemoOptions(
            accounts=ACCOUNTS, symbols=SYMBOLS, seed=SEED, run_dir=run_dir, quiet=True,
            crash_spark_at_step=CRASH_STEP, warm_up_spark=False,
        )  # fmt: skip
        summary = Demo(opts, io.StringIO()).run()
    finally:
        mp.undo()
    trail = read_audit_dir(run_dir / "s3" / names.AUDIT_PREFIX)
    return summary, run_dir, trail


def _by_account(events: list[AuditEvent]) -> dict[str, Counter[tuple[str, str]]]:
    out: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for e in events:
        if e.event_type != names.EVENT_STRESS_BREACH:  # the reference replays margin results only
            out[e.account_id][(e.event_type, e.timestamp.isoformat())] += 1
    return dict(out)


def published_actions(summary: Summary) -> list[DeskAction]:
    return [
        DeskAction.model_validate({k: v for k, v in a.items() if k != "decision"})
        for a in summary.desk_actions
    ]


def test_scripted_calls_and_liquidations_happen_exactly_once_despite_a_spark_crash(run):
    summary, _, trail = run
    sim = MarketSimulator(ACCOUNTS, SYMBOLS, SEED)
    actions = published_actions(summary)
    ref = replay(expected_inputs(sim, actions), PolicyParams(call_deadline_seconds=3600))
    assert summary.spark_restarts == 1
    assert _by_account(trail) == _by_account(ref.decisions)
    kinds = Counter(e.event_type for e in ref.decisions)
    assert kinds[names.EVENT_LIQUIDATION_TRIGGERED] > 0 and kinds[names.EVENT_MARGIN_CALL_MET] > 0
    assert summary.margin_calls_issued == kinds[names.EVENT_MARGIN_CALL_ISSUED]
    assert summary.margin_calls_met == kinds[names.EVENT_MARGIN_CALL_MET]
    assert summary.liquidations == kinds[names.EVENT_LIQUIDATION_TRIGGERED]
    assert summary.margin_warnings == kinds[names.EVENT_MARGIN_WARNING]
    ids = [e.event_id for e in trail]
    assert len(ids) == len(set(ids)), "a decision was written twice"


def test_dynamodb_state_equals_the_state_rebuilt_from_the_audit_trail(run):
    summary, _, _ = run
    assert summary.state_matches_audit_rebuild is True


def test_summary_agrees_with_the_audit_trail_and_the_named_queries(run, tmp_path):
    summary, run_dir, trail = run
    sim = MarketSimulator(ACCOUNTS, SYMBOLS, SEED)
    by_type = Counter(e.event_type for e in trail)
    assert summary.named_queries["events_by_type_for_day"] == dict(by_type)
    assert summary.audit_events == len(trail)
    objects = list((run_dir / "s3" / names.AUDIT_PREFIX).rglob("*.jsonl"))
    assert summary.audit_objects == len(objects) > 0
    liquidated = {e.account_id for e in trail if e.event_type == names.EVENT_LIQUIDATION_TRIGGERED}
    assert summary.named_queries["accounts_with_liquidations_in_month"] == len(liquidated)
    assert summary.events_in == sim.events_in()
    assert summary.rejected_records == sim.expected_rejections
    assert summary.latency_ms_p50 is not None and summary.latency_ms_p99 is not None
    assert 0 < summary.latency_ms_p50 <= summary.latency_ms_p99
    path = tmp_path / "summary.json"
    write_summary_json(summary, path)
    assert set(json.loads(path.read_text())) >= SUMMARY_KEYS


def test_the_desk_extends_one_call_and_waives_another_signed_by_the_sts_identity(run):
    summary, _, trail = run
    sim = MarketSimulator(ACCOUNTS, SYMBOLS, SEED)
    actions = published_actions(summary)
    # The planned actions, built by the desk command's code (same content, same id), signed by
    # the caller's identity as the embedded endpoint's STS reports it
    assert summary.operator.startswith("arn:aws:")
    planned = sim.planned_actions(summary.operator)
    assert [a.action for a in planned] == [names.DESK_ACTION_EXTEND, names.DESK_ACTION_WAIVE]
    assert actions == planned
    assert [a["decision"] for a in summary.desk_actions] == [
        names.EVENT_MARGIN_CALL_EXTENDED,
        names.EVENT_MARGIN_CALL_WAIVED,
    ]
    assert (summary.calls_extended, summary.calls_waived, summary.desk_actions_rejected) == (
        1,
        1,
        0,
    )
    # The extension kept its account from the liquidation the policy's deadline would have
    # brought (the reference without the desk liquidates it), the restriction unchanged
    extended, waived = actions[0].account_id, actions[1].account_id
    without_desk = replay(expected_margin_events(sim), PolicyParams(call_deadline_seconds=3600))

    def kinds(decisions: list[AuditEvent], account: str) -> list[str]:
        return [d.event_type for d in decisions if d.account_id == account]

    assert names.EVENT_LIQUIDATION_TRIGGERED in kinds(without_desk.decisions, extended)
    assert names.EVENT_LIQUIDATION_TRIGGERED not in kinds(trail, extended)
    assert names.EVENT_ACCOUNT_RESTRICTED in kinds(trail, extended)
    # The waiver closed a restricted call, and lifted the restriction (so order management
    # heard of it on restrictions.v1)
    (waiver,) = [d for d in trail if d.event_type == names.EVENT_MARGIN_CALL_WAIVED]
    assert waiver.account_id == waived
    assert waiver.details.restriction_lifted is True  # type: ignore[attr-defined]
    assert waiver.details.operator == summary.operator  # type: ignore[attr-defined]


def test_the_archived_history_backtests_a_stricter_cushion_beside_the_decisions_taken(run):
    summary, run_dir, trail = run
    sim = MarketSimulator(ACCOUNTS, SYMBOLS, SEED)
    # The Spark job archived every result it emitted, once (the micro-batch killed mid-way was
    # archived by its replay only)
    h = summary.history
    assert h["written_by"] == "the Spark margin job (--history-dir)"
    assert h["results"] == h["rows"] == summary.margin_results + summary.stress_results
    assert len(list((run_dir / "history").rglob("*.parquet"))) == h["files"] > 0
    archived = [r for r in iter_history(LocalHistory(run_dir / "history"))]
    margin = [r for r in archived if isinstance(r, MarginCalc)]
    assert len(margin) == summary.margin_results
    b: dict[str, Any] = summary.backtest
    assert b["policy"]["warning_cushion"] == 0.10
    assert b["actual_decisions"] == dict(sorted(Counter(e.event_type for e in trail).items()))
    # The stricter cushion, independently: the reference inputs and the same desk actions
    stricter = PolicyParams(call_deadline_seconds=3600, warning_cushion=0.10)
    ref = Counter(
        d.event_type
        for d in replay(expected_inputs(sim, published_actions(summary)), stricter).decisions
    )
    would = dict(b["decisions"])
    assert would.pop(names.EVENT_STRESS_BREACH) == summary.stress_breaches  # not in the reference
    assert would == dict(ref)
    # It warns more (an account can also warn less often: a wider cushion re-arms less), and
    # changes nothing else
    taken = b["actual_decisions"]
    more = would[names.EVENT_MARGIN_WARNING] - taken[names.EVENT_MARGIN_WARNING]
    assert more > 0
    for kind in set(would) - {names.EVENT_MARGIN_WARNING}:
        assert would[kind] == taken[kind], kind
    assert b["diff"]["added"] - b["diff"]["removed"] == more
    assert len(b["differing_accounts"]) == b["diff"]["accounts_differing"] > 0
    # And the summary prints it, with the desk's actions and where the history came from
    out = io.StringIO()
    print_summary(summary, out)
    text = out.getvalue()
    assert "== backtest: warning cushion 0.1 x gross" in text
    assert "(written by the Spark margin job (--history-dir))" in text
    assert f"EXTEND_CALL {published_actions(summary)[0].account_id} until" in text
    q = summary.named_queries
    assert q["account_margin_over_day"]["results"] > 0
    assert q["accounts_nearest_call_now"]


def test_the_leveraged_etf_carries_its_house_requirement_in_the_jobs_results(run):
    summary, run_dir, _ = run
    sim = MarketSimulator(ACCOUNTS, SYMBOLS, SEED)
    # Given the house entry published at the open, on books that hold the 3x ETF
    [entry] = summary.house
    assert (entry["symbol"], entry["long_rate"]) == (LEVERAGED_ETF, ETF_LONG_RATE)
    holders = sorted(a.account_id for a in sim.accounts if a.positions.get(LEVERAGED_ETF))
    assert entry["holders"] == len(holders) > 0
    # Then every margin result the job emitted for them (read back from the history it wrote)
    # is the reference's, which applies the entry through the core: at each holder's last
    # calculation, requirement and excess equal the reference's to the last digit
    ref = {e.account_id: e for e in expected_margin_events(sim) if e.account_id in holders}
    last: dict[str, MarginCalc] = {}
    for r in iter_history(LocalHistory(run_dir / "history")):
        if isinstance(r, MarginCalc) and r.account_id in holders:
            last[r.account_id] = r
    assert sorted(last) == holders
    for acct, got in last.items():
        want = ref[acct]
        assert (got.timestamp, got.maintenance_req, got.excess) == (
            want.timestamp,
            want.maintenance_req,
            want.excess,
        ), acct
    # and it is the 75% rule: without the entry each requirement is lower by 50% of the ETF's
    # market value at the last price
    for a in sim.accounts:
        if a.account_id in holders:
            held = sim._holdings(a)
            plain = compute_margin(0, held).maintenance_req
            etf = next(h for h in held if h.symbol == LEVERAGED_ETF)
            assert ref[a.account_id].maintenance_req - plain == Decimal("0.5") * (
                etf.quantity * etf.price
            )
    text = io.StringIO()
    print_summary(summary, text)
    assert f"  {LEVERAGED_ETF}: long_rate {ETF_LONG_RATE}" in text.getvalue()
