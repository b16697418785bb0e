"""The audit trail: equal to `replay`'s output, enough to rebuild DynamoDB's state after a long run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from margin_risk import audit, names
from margin_risk.enforcement import replay
from margin_risk.models import MarginCalc, StressResult

from .harness import Deployment, Feed, book, calc, count_calls, fault, stress

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "margin_risk", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_audit_equals_what_replay_prints(deployment: Deployment, feed: Feed, tmp_path: Path):
    # Given a scripted sequence over three accounts: warning, call, restriction, cure, a
    # liquidation, a stress breach and clear, a duplicate and an out-of-order record
    events: list[MarginCalc | StressResult] = [
        calc("ACC-1", 0, -36_000, book(50), "a1"),  # warning
        calc("ACC-2", 0, -60_000, book(50), "b1"),  # call + liquidation
        stress("ACC-3", 0, -35_000, book(50), "s1"),  # stress breach
        calc("ACC-1", 300, -40_000, book(50), "a2"),  # call
        calc("ACC-1", 300, -40_000, book(50), "a2"),  # duplicate
        calc("ACC-1", 2_400, -40_000, book(50), "a3"),  # restricted
        calc("ACC-1", 2_100, -90_000, book(50), "a4"),  # out of order: stale
        stress("ACC-3", 600, -10_000, book(50), "s2"),  # clears the stress path
        stress("ACC-3", 900, -35_000, book(50), "s3"),  # breach again
        calc("ACC-2", 3_600, 0, book(50), "b2"),  # cured
        calc("ACC-1", 4_000, -40_000, book(70), "a5"),  # cured, restriction lifted
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(e.to_json() + "\n" for e in events))
    printed = run_cli("replay", str(path)).splitlines()

    # When the same events go through the handler, four records a batch, in the same order
    records = feed.records(events)
    written: list[str] = []
    for i in range(0, len(records), 4):
        before = set(deployment.keys(names.AUDIT_PREFIX))
        assert deployment.send(records[i : i + 4]) == {"batchItemFailures": []}
        for key in sorted(set(deployment.keys(names.AUDIT_PREFIX)) - before):
            written.extend(deployment.body(key).splitlines())

    # Then the audit lines are byte-for-byte what replay printed, in the same order per account
    assert sorted(written) == sorted(printed)
    assert len(printed) == 9  # warning, 2 calls, liquidation, restriction, 2 cures, 2 breaches

    def per_account(lines: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for line in lines:
            out[json.loads(line)["account_id"]].append(line)
        return dict(out)

    assert per_account(written) == per_account(printed)


def _random_events(
    rng: random.Random, accounts: int, steps: int
) -> list[MarginCalc | StressResult]:
    books = {
        f"ACC-{i:03d}": {"cash": -rng.uniform(10_000, 45_000), "price": 50.0, "t": 0.0}
        for i in range(accounts)
    }
    events: list[MarginCalc | StressResult] = []
    for n in range(steps):
        a = rng.choice(sorted(books))
        b = books[a]
        b["t"] += rng.uniform(60, 1_500)
        b["price"] = max(1.0, b["price"] * (1 + rng.gauss(0, 0.08)))
        if rng.random() < 0.1:
            b["cash"] += rng.uniform(-10_000, 20_000)
        if rng.random() < 0.3:
            events.append(stress(a, b["t"], b["cash"], book(b["price"]), f"st{n}"))
        else:
            events.append(calc(a, b["t"], b["cash"], book(b["price"]), f"mc{n}"))
        if rng.random() < 0.05:
            events.append(events[-1])  # producer duplicate
        if rng.random() < 0.05 and len(events) > 3:
            j = rng.randrange(len(events) - 3, len(events) - 1)
            events[j], events[-1] = events[-1], events[j]  # late delivery
    return events


def test_long_random_run_with_faults_rebuilds_from_the_audit_trail(
    deployment: Deployment, feed: Feed
):
    rng = random.Random(20260216)
    events = _random_events(rng, accounts=25, steps=400)
    records = feed.records(events)
    rt = deployment.runtime
    table = deployment.config.state_table_name
    injected: dict[str, int] = defaultdict(int)
    i = 0
    while i < len(records):
        batch = records[i : i + rng.randint(1, 15)]
        i += len(batch)
        roll = rng.random()
        pending = batch
        for attempt in range(10):  # the event source mapping's retries
            kind = (
                None
                if attempt
                else "s3"
                if roll < 0.1
                else "sns"
                if roll < 0.2
                else "commit"
                if roll < 0.3
                else None
            )
            try:
                if kind == "s3":
                    with fault(rt.s3, "s3.PutObject"):
                        resp = deployment.send(pending)
                elif kind == "sns":
                    with fault(rt.sns, "sns.PublishBatch"):
                        resp = deployment.send(pending)
                elif kind == "commit":
                    with fault(
                        rt.dynamodb, "dynamodb.PutItem", when=lambda p: p["TableName"] == table
                    ):
                        resp = deployment.send(pending)
                else:
                    resp = deployment.send(pending)
            except BatchProcessingError:
                resp = {"batchItemFailures": [{"itemIdentifier": "all"}]}
                injected[f"{kind}-whole"] += 1
                continue
            failed = {
                (f["itemIdentifier"]["partition"], f["itemIdentifier"]["offset"])
                for f in resp["batchItemFailures"]
            }
            if not failed:
                break
            injected[str(kind)] += 1
            pending = [r for r in pending if (f"{r.topic_}-{r.partition_}", r.offset_) in failed]
        else:
            pytest.fail("a batch never succeeded")

    # Then DynamoDB equals a clean in-memory run of the same deliveries, account by account
    clean = replay(events)
    states = deployment.states()
    assert set(states) == set(clean.states)
    for a, s in clean.states.items():
        assert states[a].model_dump(exclude={"version"}) == s.model_dump(exclude={"version"}), a
    trail = deployment.audit()
    assert len({e.event_id for e in trail}) == len(trail) == len(clean.decisions)
    assert {e.event_id for e in trail} == {e.event_id for e in clean.decisions}
    assert sum(injected.values()) >= 4  # faults really happened along the way
    kinds = {e.event_type for e in trail}
    assert {"MARGIN_CALL_ISSUED", "MARGIN_CALL_MET", "STRESS_BREACH"} <= kinds

    # And `rebuild-state s3://...` (the CLI, from the audit trail alone) equals DynamoDB's view
    uri = f"s3://{deployment.config.audit_bucket}/{names.AUDIT_PREFIX}"
    rebuilt: dict[str, Any] = json.loads(run_cli("rebuild-state", uri))
    views = {a: audit.EnforcementView.model_validate(v) for a, v in rebuilt.items()}
    for a, st in states.items():
        got = views.get(a, audit.EnforcementView(account_id=a))
        assert audit.comparable(got) == audit.comparable(audit.view_of(st)), a


def test_dynamodb_and_s3_calls_per_batch(deployment: Deployment, feed: Feed):
    # Given 40 known accounts, and then a full default MSK batch: 100 records over those 40
    seed = [calc(f"ACC-{i:02d}", 0, -10_000, book(50), f"seed{i}") for i in range(40)]
    assert deployment.send(feed.records(seed)) == {"batchItemFailures": []}
    events = [
        calc(f"ACC-{i % 40:02d}", 60 + i, -40_000 - (i % 3) * 10_000, book(50), f"m{i}")
        for i in range(100)
    ]
    records = feed.records(events)
    rt = deployment.runtime
    with count_calls(rt.dynamodb) as ddb, count_calls(rt.s3) as s3, count_calls(rt.sns) as sns:
        assert deployment.send(records) == {"batchItemFailures": []}
    # Then: state read once, the 40 loaded heads archived to history in 25-item chunks, one
    # conditional write per account, plus Powertools' idempotency record (PutItem, UpdateItem)
    assert ddb["BatchGetItem"] == 1
    assert ddb["BatchWriteItem"] == 2
    assert ddb["PutItem"] == 40 + 1
    assert ddb["UpdateItem"] == 1
    assert ddb["GetItem"] == 0 and ddb["Query"] == 0
    assert s3["PutObject"] == 1  # one audit object (one hour); nothing rejected
    assert sns["PublishBatch"] >= 1
    print(
        f"\nper batch of 100 records / 40 accounts: dynamodb={dict(ddb)} s3={dict(s3)} sns={dict(sns)}"
    )

    # And 250 new accounts need three BatchGetItem calls (100 keys each) and no history yet
    more = [calc(f"BIG-{i:03d}", 0, -10_000, book(50), f"big{i}") for i in range(250)]
    with count_calls(rt.dynamodb) as ddb2:
        assert deployment.send(feed.records(more)) == {"batchItemFailures": []}
    assert ddb2["BatchGetItem"] == 3 and ddb2["PutItem"] == 250 + 1
    assert ddb2["BatchWriteItem"] == 0
    print(f"per batch of 250 new accounts: dynamodb={dict(ddb2)}")
