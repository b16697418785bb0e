"""`EnforcementService` on in-memory ports: the batch logic without any endpoint (fast tier)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

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
from margin_risk.enforcement import AccountState, replay
from margin_risk.usecase.records import CommitInfo
from margin_risk.usecase.service import EnforcementService
from tests.factories import desk_action

from .harness import Feed, book, calc


def make(
    repo: MemoryStateRepository | None = None,
) -> tuple[EnforcementService, MemoryStateRepository, MemoryObjectStore, MemoryPublisher]:
    repo = repo or MemoryStateRepository()
    store, pub = MemoryObjectStore(), MemoryPublisher()
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


def test_a_waiver_that_lifts_a_restriction_reaches_order_management_and_one_that_does_not_not():
    # Given two accounts with a call for 10,000 at t=0 (1,000 AAPL at $50, $40,000 debit); W is
    # restricted at t=1,900 (open 1,900 s > 1,800 s), V is waived before that
    svc, repo, _, pub = make()
    events = [
        calc("W", 0, -40_000, book(50), "w1"),
        calc("V", 0, -40_000, book(50), "v1"),
        calc("W", 1_900, -40_000, book(50), "w2"),
        desk_action("W", 2_000, names.DESK_ACTION_WAIVE, action_id="waive-w"),
        desk_action("V", 600, names.DESK_ACTION_WAIVE, action_id="waive-v"),
    ]
    res = svc.process(inbound_records(build_msk_event(Feed().records(events))))
    assert res.failed == [] and res.accounts_committed == 2
    # Then both waivers are on margin.calls.v1, and only W's (which lifted its restriction) goes
    # to restrictions.v1, after the restriction itself
    by_topic = {
        t: [(p.decision.account_id, p.decision.event_type) for p in pub.sent if p.topic == t]
        for t in (names.TOPIC_MARGIN_CALLS, names.TOPIC_RESTRICTIONS)
    }
    assert by_topic[names.TOPIC_RESTRICTIONS] == [
        ("W", names.EVENT_ACCOUNT_RESTRICTED),
        ("W", names.EVENT_MARGIN_CALL_WAIVED),
    ]
    assert ("V", names.EVENT_MARGIN_CALL_WAIVED) in by_topic[names.TOPIC_MARGIN_CALLS]
    waived = {d.account_id: d for d in res.decisions if d.event_type == "MARGIN_CALL_WAIVED"}
    assert waived["W"].details.restriction_lifted is True  # type: ignore[attr-defined]
    assert waived["V"].details.restriction_lifted is False  # type: ignore[attr-defined]
    assert not repo.heads["W"].margin.restricted and not repo.heads["W"].margin.call_open


def test_batches_on_fakes_read_state_once_each_and_commit_every_account():
    # 2,000 records over 200 accounts in batches of 100: the pure batch logic, no I/O (its speed
    # is measured by `python -m bench`, not here)
    svc, repo, _, _ = make()
    feed = Feed()
    events = [
        calc(f"ACC-{i % 200:03d}", i, -40_000 + (i % 7) * 5_000, book(50), f"e{i}")
        for i in range(2_000)
    ]
    batches = [events[i : i + 100] for i in range(0, len(events), 100)]
    for b in batches:
        assert svc.process(inbound_records(build_msk_event(feed.records(b)))).failed == []
    assert repo.calls["state.load_many"] == 20 and len(repo.heads) == 200
    assert {a: h.version for a, h in repo.heads.items()} == {f"ACC-{i:03d}": 10 for i in range(200)}


@dataclass
class MeetingRepository(MemoryStateRepository):
    """Its first ``meet`` commits wait for each other at a barrier: they can only all return if
    the service really has that many commits in flight at once."""

    meet: int = 4
    peak: int = 0
    _inflight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _barrier: threading.Barrier | None = None

    def commit(
        self, state: AccountState, expected_version: int, info: CommitInfo
    ) -> AccountState | None:
        with self._lock:
            self._inflight += 1
            self.peak = max(self.peak, self._inflight)
            first = self.calls["state.commit"] < self.meet
            stored = super().commit(state, expected_version, info)
        if first:
            if self._barrier is None:
                raise AssertionError("barrier not set")
            self._barrier.wait(timeout=10)  # BrokenBarrierError: the commits ran one by one
        with self._lock:
            self._inflight -= 1
        return stored


def test_state_commits_run_in_parallel_up_to_the_repository_limit_with_the_same_result():
    repo = MeetingRepository(max_concurrent_commits=4)
    repo._barrier = threading.Barrier(4)
    svc, _, _, _ = make(repo)
    # 12 accounts, each going into a call (price 19: equity < 0 also triggers a liquidation)
    events = [calc(f"P{i:02d}", 60, -40_000, book(19), f"p{i}") for i in range(12)]
    res = svc.process(inbound_records(build_msk_event(Feed().records(events))))
    assert res.failed == [] and res.accounts_committed == 12
    assert repo.peak == 4  # four at once (they met at the barrier), never more than the limit
    clean = replay(events)
    for a, st in clean.states.items():
        assert repo.heads[a].model_dump(exclude={"version"}) == st.model_dump(exclude={"version"})
    assert sorted(d.event_id for d in res.decisions) == sorted(d.event_id for d in clean.decisions)
