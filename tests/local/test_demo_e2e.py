"""The main job end to end on a small session: real broker, Spark job, handler, moto server.

One run (about a minute and a half) serves every assertion: the Spark job is killed in the
middle of a sell-off micro-batch and restarted, and still every call and liquidation the
session scripts happens exactly once, as the reference rules replaying the same inputs say.
"""

from __future__ import annotations

import io
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from margin_risk import names
from margin_risk.audit import read_audit_dir
from margin_risk.enforcement import replay
from margin_risk.models import AuditEvent
from margin_risk.params import PolicyParams
from margin_risk.tools.local.demo import Demo, DemoOptions, Summary, write_summary_json
from margin_risk.tools.local.simulator import MarketSimulator, expected_margin_events

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


def test_scripted_calls_and_liquidations_happen_exactly_once_despite_a_spark_crash(run):
    summary, _, trail = run
    sim = MarketSimulator(ACCOUNTS, SYMBOLS, SEED)
    ref = replay(expected_margin_events(sim), PolicyParams(call_deadline_seconds=3600))
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
