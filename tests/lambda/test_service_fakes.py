"""`EnforcementService` on in-memory ports: the batch logic without any endpoint (fast tier)."""

from __future__ import annotations

import time

from lambdas.enforcement.local_invoke import build_msk_event
from margin_risk import names
from margin_risk.adapters.memory import (
    MemoryMetrics,
    MemoryNotifier,
    MemoryObjectStore,
    MemoryPublisher,
    MemoryStateRepository,
)
from margin_risk.adapters.msk_event import inbound_records
from margin_risk.enforcement import replay
from margin_risk.service import EnforcementService

from .harness import Feed, book, calc


def make() -> tuple[EnforcementService, MemoryStateRepository, MemoryObjectStore, MemoryPublisher]:
    repo, store, pub = MemoryStateRepository(), MemoryObjectStore(), MemoryPublisher()
    svc = EnforcementService(
        repo=repo,
        audit_sink=store,
        rejected_sink=store,
        publisher=pub,
        notifier=MemoryNotifier(),
        metrics=MemoryMetrics(),
    )
    return svc, repo, store, pub


def test_restricted_cure_goes_to_restrictions_topic_and_state_matches_replay():
    svc, repo, store, pub = make()
    events = [
        calc("A", 0, -40_000, book(50), "a1"),
        calc("A", 1_900, -40_000, book(50), "a2"),
        calc("A", 2_000, -40_000, book(60), "a3"),
    ]
    res = svc.process(inbound_records(build_msk_event(Feed().records(events))))
    assert res.failed == [] and res.accounts_committed == 1
    routed = sorted((p.topic, p.decision.event_type) for p in pub.sent)
    assert routed == [
        (names.TOPIC_MARGIN_CALLS, "ACCOUNT_RESTRICTED"),
        (names.TOPIC_MARGIN_CALLS, "MARGIN_CALL_ISSUED"),
        (names.TOPIC_MARGIN_CALLS, "MARGIN_CALL_MET"),
        (names.TOPIC_RESTRICTIONS, "ACCOUNT_RESTRICTED"),
        (names.TOPIC_RESTRICTIONS, "MARGIN_CALL_MET"),
    ]
    clean = replay(events).states["A"]
    assert repo.heads["A"].model_dump(exclude={"version"}) == clean.model_dump(exclude={"version"})
    assert repo.heads["A"].version == 1 and repo.history == {}  # nothing committed before
    lines = [line for body in store.objects.values() for line in body.splitlines()]
    assert len(store.objects) == 2 and len(lines) == 3  # hours 14 and 15, one line a decision


def test_throughput_on_fakes_is_far_above_the_msk_batch_rate():
    # 2,000 records over 200 accounts in batches of 100: the pure batch logic, no I/O
    svc, repo, _, _ = make()
    feed = Feed()
    events = [
        calc(f"ACC-{i % 200:03d}", i, -40_000 + (i % 7) * 5_000, book(50), f"e{i}")
        for i in range(2_000)
    ]
    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    msk = [inbound_records(build_msk_event(feed.records(b))) for b in batches]
    t = time.perf_counter()
    for recs in msk:
        assert svc.process(recs).failed == []
    elapsed = time.perf_counter() - t
    assert repo.calls["load_many"] == 20 and len(repo.heads) == 200
    rate = 2_000 / elapsed
    print(
        f"\nservice on in-memory ports: {rate:,.0f} records/s ({elapsed * 1000 / 20:.1f} ms per 100)"
    )
    assert rate > 1_000
