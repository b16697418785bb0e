"""MSK-shaped batches through the real handler: calls, cures, liquidations land in DynamoDB, S3, SNS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from lambdas.enforcement.local_invoke import build_msk_event
from margin_risk import names
from margin_risk.models import iso

from .harness import Deployment, Feed, book, calc, stress

pytestmark = pytest.mark.integration


def test_calls_cures_liquidations_and_stress_land_everywhere(deployment: Deployment, feed: Feed):
    # Given four accounts spread over partitions of both result topics
    first = [
        calc("ACC-CURE", 0, -40_000, book(50), "c1"),  # equity 10,000 < req 12,500: call 2,500
        calc("ACC-LIQ", 0, -60_000, book(50), "l1"),  # equity -10,000: call and liquidation
        calc("ACC-WARN", 0, -36_000, book(50), "w1"),  # excess 1,500 < cushion 2,500: warning
        calc("ACC-STRESS", 0, -35_000, book(50), "s0"),  # excess 2,500 = cushion: nothing
        stress("ACC-STRESS", 0, -35_000, book(50), "s1"),  # SPY -8%: stressed deficiency 1,100
    ]
    records = feed.records(first)
    event = build_msk_event(records)
    assert len(event["records"]) >= 3  # several topic-partitions in one batch
    assert all(
        r["value"] and not r["value"].startswith("{")
        for rs in event["records"].values()
        for r in rs
    )

    # When the first batch arrives, then the cure path 1,900 s and 2,000 s later
    assert deployment.send(records) == {"batchItemFailures": []}
    later = [
        calc("ACC-CURE", 1900, -40_000, book(50), "c2"),  # call open 1,900 s > 1,800: restricted
        calc("ACC-CURE", 2000, -40_000, book(60), "c3"),  # equity 20,000 >= req 15,000: cured
    ]
    assert deployment.send(feed.records(later)) == {"batchItemFailures": []}

    # Then the audit trail holds exactly the ladder steps of spec section 3, each once
    audit = deployment.audit()
    by_account: dict[str, list[str]] = {}
    for e in audit:
        by_account.setdefault(e.account_id, []).append(e.event_type)
    assert by_account == {
        "ACC-CURE": ["MARGIN_CALL_ISSUED", "ACCOUNT_RESTRICTED", "MARGIN_CALL_MET"],
        "ACC-LIQ": ["MARGIN_CALL_ISSUED", "LIQUIDATION_TRIGGERED"],
        "ACC-WARN": ["MARGIN_WARNING"],
        "ACC-STRESS": ["STRESS_BREACH"],
    }
    assert len({e.event_id for e in audit}) == len(audit) == 7
    call = next(e for e in audit if e.event_id == "c1:MARGIN_CALL_ISSUED")
    assert (call.details.deficiency, call.details.equity, call.details.maintenance_req) == (
        2_500.0,
        10_000.0,
        12_500.0,
    )
    assert call.correlation_id == "corr-c1"
    met = next(e for e in audit if e.event_type == "MARGIN_CALL_MET")
    assert met.event_id == "c3:MARGIN_CALL_MET" and "restriction lifted" in met.details.reason
    breach = next(e for e in audit if e.event_type == "STRESS_BREACH")
    assert breach.details.scenario == Decimal("-0.08") and breach.details.deficiency == 1_100
    liq = next(e for e in audit if e.event_type == "LIQUIDATION_TRIGGERED")
    assert liq.details.equity == -10_000.0 and "negative equity" in liq.details.reason

    # ... partitioned by the decisions' event hour, one object per batch and hour
    keys = deployment.keys(names.AUDIT_PREFIX)
    assert [k.split("/")[4] for k in keys] == ["hour=14", "hour=15"]
    assert all(k.startswith("audit/year=2026/month=2/day=16/") for k in keys)

    # And DynamoDB holds the state the ladder left, one version per batch that moved the account
    st = deployment.states()
    assert set(st) == {"ACC-CURE", "ACC-LIQ", "ACC-WARN", "ACC-STRESS"}
    cure, liq_state = st["ACC-CURE"], st["ACC-LIQ"]
    assert (cure.version, cure.margin.call_open, cure.margin.restricted) == (2, False, False)
    assert liq_state.margin.call_open and liq_state.margin.liquidation_triggered
    assert liq_state.margin.call_amount == 22_500.0
    assert st["ACC-WARN"].margin.warning_armed is False and not st["ACC-WARN"].margin.call_open
    assert st["ACC-STRESS"].stress.breached and not st["ACC-STRESS"].margin.call_open
    # ... with history below the head: a descending query returns LATEST (version 2), then
    # version 1 as the first batch committed it, with that batch's decision ids
    items = deployment.items("ACC-CURE")
    assert [(i["sk"]["S"], i["version"]["N"]) for i in items] == [
        ("LATEST", "2"),
        ("H#000000000001", "1"),
    ]
    assert [d["S"] for d in items[1]["decision_ids"]["L"]] == ["c1:MARGIN_CALL_ISSUED"]
    assert items[0]["batch_id"]["S"] != items[1]["batch_id"]["S"]
    assert [d["S"] for d in items[0]["decision_ids"]["L"]] == [
        "c2:ACCOUNT_RESTRICTED",
        "c3:MARGIN_CALL_MET",
    ]

    # And SNS told the operators about each new call and the liquidation, once each
    notes = deployment.notifications()
    assert sorted(n["event_id"] for n in notes) == [
        "c1:MARGIN_CALL_ISSUED",
        "l1:LIQUIDATION_TRIGGERED",
        "l1:MARGIN_CALL_ISSUED",
    ]

    # And the EMF metrics count the same
    assert deployment.metric_total(names.METRIC_MARGIN_CALLS_ISSUED) == 2
    assert deployment.metric_total(names.METRIC_LIQUIDATIONS) == 1
    assert deployment.metric_total(names.METRIC_MARGIN_CALLS_MET) == 1
    assert deployment.metric_total(names.METRIC_STRESS_BREACHES) == 1
    # the deficiencies of the two new calls: 2,500 (ACC-CURE) + 22,500 (ACC-LIQ)
    assert deployment.metric_total(names.METRIC_TOTAL_DEFICIENCY) == 25_000.0
    assert deployment.metric_total(names.METRIC_BATCH_SIZE) == 7
    blobs = deployment.metrics()
    assert all(
        b["_aws"]["CloudWatchMetrics"][0]["Namespace"] == names.METRICS_NAMESPACE for b in blobs
    )


def test_end_to_end_latency_is_measured_from_the_origin_timestamp(
    deployment: Deployment, feed: Feed
):
    # Given two calls whose inputs were produced 1.5 s and 3 s ago (value field / Kafka header)
    now = datetime.now(UTC)
    in_value = calc(
        "ACC-LAT1", 0, -40_000, book(50), "lat1", origin_ts=iso(now - timedelta(seconds=1.5))
    )
    rec_value = feed.record(in_value)
    in_header = calc("ACC-LAT2", 0, -40_000, book(50), "lat2")
    rec_header = feed.record(in_header)
    rec_header.headers_ = [(names.HEADER_ORIGIN_TS, iso(now - timedelta(seconds=3)).encode())]
    # When both are processed
    assert deployment.send([rec_value, rec_header]) == {"batchItemFailures": []}
    # Then EndToEndLatency holds one sample per decision: ~1,500 ms and ~3,000 ms
    samples = sorted(
        v
        for b in deployment.metrics()
        if names.METRIC_E2E_LATENCY in b
        for v in b[names.METRIC_E2E_LATENCY]
    )
    assert len(samples) == 2
    assert 1_500 <= samples[0] < 1_500 + 10_000 and 3_000 <= samples[1] < 3_000 + 10_000
    assert samples[1] - samples[0] >= 1_400
