"""Faults and bad input through the real handler; each test checks nothing is lost or duplicated.

"Clean run" is `margin_risk.enforcement.replay` of the same events in delivery order: the state
each account ends with and the decisions written must be exactly those, however the batch failed.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from lambdas.enforcement.local_invoke import build_msk_event
from lambdas.enforcement.runtime import build_runtime
from margin_risk import names
from margin_risk.adapters.msk_event import inbound_records
from margin_risk.enforcement import replay
from margin_risk.models import MarginCalc, StressResult
from margin_risk.usecase.decode import decode

from .harness import Deployment, Feed, book, calc, count_calls, fault, lost_response, stress

pytestmark = pytest.mark.integration


def failures(resp: dict[str, Any]) -> list[tuple[str, int]]:
    return sorted(
        (f["itemIdentifier"]["partition"], f["itemIdentifier"]["offset"])
        for f in resp["batchItemFailures"]
    )


def assert_clean(d: Deployment, events: list[MarginCalc | StressResult]) -> None:
    """DynamoDB and S3 hold exactly what a clean in-memory run of ``events`` produces."""
    clean = replay(events)
    audit = d.audit()
    assert [e.event_id for e in audit] == [e.event_id for e in clean.decisions] or sorted(
        e.event_id for e in audit
    ) == sorted(e.event_id for e in clean.decisions)
    assert len({e.event_id for e in audit}) == len(audit), "duplicate audit lines"
    # write-once: every audit object was written exactly once (the bucket keeps every version)
    assert set(d.versions().values()) <= {1}, d.versions()
    assert {e.event_id: e for e in audit} == {e.event_id: e for e in clean.decisions}
    states = d.states()
    assert set(states) == set(clean.states)
    for a, s in clean.states.items():
        assert states[a].model_dump(exclude={"version"}) == s.model_dump(exclude={"version"}), a


def test_duplicate_record_in_batch_and_later_changes_nothing(deployment: Deployment, feed: Feed):
    c1 = calc("ACC-D", 0, -40_000, book(50), "d1")  # call 2,500
    c2 = calc("ACC-D", 60, -40_000, book(50), "d2")  # still deficient, nothing new
    # Given the producer delivered d1 twice (a retried send) in the first batch
    assert failures(deployment.send(feed.records([c1, c1]))) == []
    # When d1 shows up again beside a new record, and then alone
    assert failures(deployment.send(feed.records([c1, c2]))) == []
    version_before = deployment.states()["ACC-D"].version
    keys_before = deployment.keys()
    with count_calls(deployment.runtime.dynamodb, deployment.runtime.s3) as calls:
        assert failures(deployment.send(feed.records([c1]))) == []
    # Then the call exists once, the duplicate batch wrote no state and no audit object
    assert [e.event_id for e in deployment.audit()] == ["d1:MARGIN_CALL_ISSUED"]
    assert deployment.states()["ACC-D"].version == version_before == 2
    assert deployment.keys() == keys_before
    assert calls["PutObject"] == 0 and calls["BatchWriteItem"] == 0
    # (the only PutItem/UpdateItem are the idempotency record's in-progress and completed writes)
    assert calls["PutItem"] == 1 and calls["UpdateItem"] == 1
    assert deployment.metric_total(names.METRIC_DUPLICATE_EVENTS) == 3
    assert len(deployment.notifications()) == 1
    assert_clean(deployment, [c1, c2])


def test_same_batch_delivered_twice_is_answered_from_the_idempotency_store(
    deployment: Deployment, feed: Feed
):
    events = [calc("ACC-R", 0, -60_000, book(50), "r1"), calc("ACC-S", 0, -40_000, book(50), "s1")]
    records = feed.records(events)
    first = deployment.send(records)
    audit_before = [(k, deployment.body(k)) for k in deployment.keys(names.AUDIT_PREFIX)]
    with count_calls(
        deployment.runtime.dynamodb, deployment.runtime.s3, deployment.runtime.sns
    ) as calls:
        second = deployment.send(records)  # the event source mapping redelivers the batch
    assert first == second == {"batchItemFailures": []}
    # Only the idempotency table was touched: one PutItem (refused: already completed)
    assert dict(calls) == {"PutItem": 1}
    assert [(k, deployment.body(k)) for k in deployment.keys(names.AUDIT_PREFIX)] == audit_before
    assert len(deployment.notifications()) == 3  # r1 call + liquidation, s1 call: once each
    assert_clean(deployment, events)


def test_out_of_order_record_is_stale_and_counted(deployment: Deployment, feed: Feed):
    c1 = calc("ACC-O", 0, -40_000, book(50), "o1")  # call
    c3 = calc("ACC-O", 120, -40_000, book(60), "o3")  # cured
    c2 = calc("ACC-O", 60, -60_000, book(50), "o2")  # older than o3, would liquidate
    assert failures(deployment.send(feed.records([c1, c3]))) == []
    assert failures(deployment.send(feed.records([c2]))) == []
    assert [e.event_type for e in deployment.audit()] == ["MARGIN_CALL_ISSUED", "MARGIN_CALL_MET"]
    assert deployment.metric_total(names.METRIC_STALE_EVENTS) == 1
    assert deployment.states()["ACC-O"].version == 1
    assert_clean(deployment, [c1, c3, c2])


def test_bad_records_are_rejected_with_a_reason_and_never_block_the_rest(
    deployment: Deployment, feed: Feed
):
    good = calc("ACC-G", 0, -40_000, book(50), "g1")
    valid = json.loads(good.to_json())
    negative = {**valid, "event_id": "neg", "deficiency": -5.0}
    missing = {k: v for k, v in valid.items() if k != "equity"} | {"event_id": "miss"}
    records = [
        feed.record(raw=b'{"event_id": "x", "account_id": ', account="ACC-G"),
        feed.record(raw=json.dumps(valid).replace("10000.0", "NaN").encode(), account="ACC-G"),
        feed.record(raw=json.dumps(negative).encode(), account="ACC-G"),
        feed.record(raw=json.dumps(missing).encode(), account="ACC-G"),
        feed.record(raw=b"\xff\xfe not utf-8", account="ACC-G"),
        feed.record(raw=b"[1, 2, 3]", account="ACC-G"),
        feed.record(good),
    ]
    assert b"NaN" in records[1].value_  # the equity 10,000 became NaN
    resp = deployment.send(records)
    # Then nothing is reported for retry (retrying never fixes bad input) ...
    assert failures(resp) == []
    # ... each bad record sits in the rejected sink with its reason, the good one was applied
    rejected = deployment.rejected()
    assert [(r["offset"], r["reason_code"]) for r in rejected] == [
        (0, "malformed_json"),
        (1, "non_finite_number"),
        (2, "out_of_range"),
        (3, "missing_field"),
        (4, "malformed_json"),
        (5, "malformed_json"),
    ]
    assert "deficiency" in rejected[2]["reason"] and "equity" in rejected[3]["reason"]
    assert rejected[2]["raw"] == json.dumps(negative)
    assert [e.event_id for e in deployment.audit()] == ["g1:MARGIN_CALL_ISSUED"]
    assert deployment.metric_total(names.METRIC_RECORDS_REJECTED, reason="malformed_json") == 3
    assert deployment.metric_total(names.METRIC_RECORDS_REJECTED, reason="missing_field") == 1
    assert deployment.metric_total(names.METRIC_RECORDS_REJECTED, reason="out_of_range") == 1
    assert deployment.metric_total(names.METRIC_RECORDS_REJECTED, reason="non_finite_number") == 1
    assert_clean(deployment, [good])


def test_every_record_invalid_rejects_all_and_changes_nothing(deployment: Deployment, feed: Feed):
    records = [feed.record(raw=b"not json", account=f"ACC-{i}") for i in range(4)]
    assert failures(deployment.send(records)) == []
    assert len(deployment.rejected()) == 4
    assert deployment.states() == {} and deployment.keys(names.AUDIT_PREFIX) == []


def test_unknown_extra_field_is_kept_and_unknown_account_is_created(
    deployment: Deployment, feed: Feed
):
    e = calc("ACC-NEW", 0, -40_000, book(50), "n1", desk="EQ-1", origin_ts="2026-02-16T14:29:59Z")
    rec = feed.record(e)
    decoded = decode(inbound_records(build_msk_event([rec]))[0])
    assert not hasattr(decoded, "reason_code")
    assert decoded.event.model_extra == {"desk": "EQ-1", "origin_ts": "2026-02-16T14:29:59Z"}  # type: ignore[union-attr]
    assert deployment.states() == {}
    assert failures(deployment.send([rec])) == []
    assert deployment.rejected() == []
    st = deployment.states()["ACC-NEW"]
    assert (st.version, st.margin.call_open, st.margin.call_amount) == (1, True, 2_500.0)


def test_every_record_failing_transiently_fails_the_invocation_then_retries_clean(
    deployment: Deployment, feed: Feed
):
    events = [calc(f"ACC-T{i}", 0, -40_000, book(50), f"t{i}") for i in range(5)]
    records = feed.records(events)
    rt = deployment.runtime
    with fault(rt.dynamodb, "dynamodb.BatchGetItem") as hits, pytest.raises(BatchProcessingError):
        deployment.send(records)  # every record failed: Lambda retries the whole batch
    assert hits["failed"] == 1
    assert deployment.states() == {} and deployment.keys() == []
    # The idempotency record was removed with the failure, so the retry really runs
    assert failures(deployment.send(records)) == []
    assert_clean(deployment, events)


def _three_accounts(feed: Feed) -> tuple[list[MarginCalc | StressResult], list[Any]]:
    events: list[MarginCalc | StressResult] = [
        calc("ACC-X", 0, -60_000, book(50), "x1"),  # call + liquidation
        calc("ACC-Y", 0, -40_000, book(50), "y1"),  # call
        calc("ACC-Z", 0, -10_000, book(50), "z1"),  # healthy: no decision
    ]
    return events, feed.records(events)


def _coords(records: list[Any]) -> list[tuple[str, int]]:
    return sorted((f"{r.topic_}-{r.partition_}", r.offset_) for r in records)


X_NOTES = ["x1:MARGIN_CALL_ISSUED", "x1:LIQUIDATION_TRIGGERED"]


def test_audit_write_failure_after_the_commit_is_finished_by_the_redelivery(
    deployment: Deployment, feed: Feed
):
    events, records = _three_accounts(feed)
    poison = feed.record(raw=b"{", account="ACC-X")  # rejected, so not every record fails

    def x_audit(p: dict[str, Any]) -> bool:
        return p["Key"].startswith(names.AUDIT_PREFIX) and "/ACC-X-" in p["Key"]

    with fault(deployment.runtime.s3, "s3.PutObject", when=x_audit) as hits:
        resp = deployment.send([*records, poison])
    assert hits["failed"] == 1
    # Only ACC-X's record is reported: its state is committed, its decisions are not yet in the
    # trail (nor published), and nothing in the trail claims a decision that was not committed
    x_records = [r for r in records if r.key_ == b"ACC-X"]
    assert failures(resp) == _coords(x_records)
    assert set(deployment.states()) == {"ACC-X", "ACC-Y", "ACC-Z"}
    assert [e.event_id for e in deployment.audit()] == ["y1:MARGIN_CALL_ISSUED"]
    assert [n["event_id"] for n in deployment.notifications()] == ["y1:MARGIN_CALL_ISSUED"]
    # When the event source mapping redelivers it, the record is a duplicate, and the
    # decisions its first delivery committed are written and published from the head's outbox
    assert failures(deployment.send(x_records)) == []
    assert deployment.metric_total(names.METRIC_DUPLICATE_EVENTS) == 1
    assert len(deployment.rejected()) == 1
    assert_clean(deployment, events)
    notes = Counter(n["event_id"] for n in deployment.notifications())
    assert notes == Counter([*X_NOTES, "y1:MARGIN_CALL_ISSUED"])


def test_publish_failure_after_the_audit_write_is_published_again_on_redelivery(
    deployment: Deployment, feed: Feed
):
    events, records = _three_accounts(feed)
    with fault(deployment.runtime.sns, "sns.PublishBatch") as hits:
        resp = deployment.send(records)
    assert hits["failed"] == 1
    # The accounts that decided are reported (their decisions are committed and audited)
    deciders = [r for r in records if r.key_ in (b"ACC-X", b"ACC-Y")]
    assert failures(resp) == _coords(deciders)
    assert len(deployment.audit()) == 3 and deployment.notifications() == []
    # The redelivery finds the objects already there (nothing is written twice) and publishes
    assert failures(deployment.send(deciders)) == []
    assert_clean(deployment, events)
    notes = Counter(n["event_id"] for n in deployment.notifications())
    assert notes == Counter([*X_NOTES, "y1:MARGIN_CALL_ISSUED"])


@pytest.mark.parametrize("where", ["dynamodb.PutItem", "s3.PutObject"])
def test_a_write_whose_answer_is_lost_is_neither_lost_nor_duplicated(
    deployment: Deployment, feed: Feed, where: str
):
    # Given ACC-X's commit (or its audit object) really happened but the function saw an error
    events, records = _three_accounts(feed)
    table = deployment.config.state_table_name
    rt = deployment.runtime
    if where.startswith("dynamodb"):
        client = rt.dynamodb

        def is_x(p: dict[str, Any]) -> bool:
            return p.get("TableName") == table and p["Item"]["account_id"]["S"] == "ACC-X"
    else:
        client = rt.s3

        def is_x(p: dict[str, Any]) -> bool:
            return "/ACC-X-" in p.get("Key", "")

    with lost_response(client, where, when=is_x) as hits:
        resp = deployment.send(records)
    assert hits["lost"] == 1
    x_records = [r for r in records if r.key_ == b"ACC-X"]
    assert failures(resp) == _coords(x_records)
    assert deployment.states()["ACC-X"].version == 1  # the write did happen
    # When the record is redelivered, it is a duplicate; the outbox finishes the job
    assert failures(deployment.send(x_records)) == []
    assert_clean(deployment, events)
    notes = Counter(n["event_id"] for n in deployment.notifications())
    assert notes == Counter([*X_NOTES, "y1:MARGIN_CALL_ISSUED"])


def test_a_deciding_commit_writes_the_outbox_it_replaces_first(deployment: Deployment, feed: Feed):
    # Given ACC-X's call was committed but its audit write failed, and its record then went to
    # the on-failure destination (retries exhausted), so no redelivery will finish it
    first = calc("ACC-X", 0, -40_000, book(50), "x1")  # call
    with fault(deployment.runtime.s3, "s3.PutObject"), pytest.raises(BatchProcessingError):
        deployment.send(feed.records([first]))
    assert deployment.states()["ACC-X"].margin.call_open
    assert deployment.audit() == []
    # When the account's next record decides again (cured), at a new offset
    cure = calc("ACC-X", 120, -40_000, book(60), "x2")
    assert failures(deployment.send(feed.records([cure]))) == []
    # Then the earlier call reaches the trail before the head that held it is replaced
    assert [e.event_id for e in deployment.audit()] == [
        "x1:MARGIN_CALL_ISSUED",
        "x2:MARGIN_CALL_MET",
    ]
    assert_clean(deployment, [first, cure])


def test_commit_failure_of_one_account_fails_only_its_records(deployment: Deployment, feed: Feed):
    events = [
        calc("ACC-P", 0, -40_000, book(50), "p1"),
        calc("ACC-Q", 0, -40_000, book(50), "q1"),
        calc("ACC-Q", 30, -60_000, book(50), "q2"),
    ]
    records = feed.records(events)
    table = deployment.config.state_table_name

    def q_head(params: dict[str, Any]) -> bool:
        return params.get("TableName") == table and params["Item"]["account_id"]["S"] == "ACC-Q"

    with fault(deployment.runtime.dynamodb, "dynamodb.PutItem", when=q_head):
        resp = deployment.send(records)
    q_records = [r for r in records if r.key_ == b"ACC-Q"]
    assert failures(resp) == sorted((f"{r.topic_}-{r.partition_}", r.offset_) for r in q_records)
    # The trail holds exactly what was committed: ACC-P's call, nothing of ACC-Q
    assert [e.event_id for e in deployment.audit()] == ["p1:MARGIN_CALL_ISSUED"]
    assert set(deployment.states()) == {"ACC-P"}
    # When Lambda redelivers the failed records (a new, smaller batch)
    assert failures(deployment.send(q_records)) == []
    assert_clean(deployment, events)


def test_conflicting_concurrent_writer_is_reapplied_not_overwritten(
    deployment: Deployment, feed: Feed
):
    # Given a margin batch and a stress batch for the same account, processed concurrently
    # (two topics, so two pollers can invoke two instances at once)
    m = calc("ACC-C", 0, -40_000, book(50), "cm1")
    s = stress("ACC-C", 0, -35_000, book(50), "cs1")
    margin_records, stress_records = feed.records([m]), feed.records([s])
    other = build_runtime()  # the other execution environment
    table = deployment.config.state_table_name
    fired: list[bool] = []

    def race(params: dict[str, Any], **_: Any) -> None:
        if fired or params.get("TableName") != table:
            return
        fired.append(True)  # the other invocation commits between our read and our write
        res = other.service.process(inbound_records(build_msk_event(stress_records)))
        assert res.failed == [] and res.accounts_committed == 1

    ddb = deployment.runtime.dynamodb
    ddb.meta.events.register("before-parameter-build.dynamodb.PutItem", race)
    try:
        assert failures(deployment.send(margin_records)) == []
    finally:
        ddb.meta.events.unregister("before-parameter-build.dynamodb.PutItem", race)
    assert fired
    # Then both updates survive: version 2, the call and the stress breach, each audited once
    st = deployment.states()["ACC-C"]
    assert st.version == 2 and st.margin.call_open and st.stress.breached
    assert sorted(e.event_id for e in deployment.audit()) == [
        "cm1:MARGIN_CALL_ISSUED",
        "cs1:STRESS_BREACH",
    ]
    assert deployment.metric_total(names.METRIC_STATE_CONFLICTS) == 1
    # ... and history holds the winner's committed version 1 (the stress batch), nothing invented
    items = deployment.items("ACC-C")
    assert [(i["sk"]["S"], i["version"]["N"]) for i in items] == [
        ("LATEST", "2"),
        ("H#000000000001", "1"),
    ]
    assert [d["S"] for d in items[1]["decision_ids"]["L"]] == ["cs1:STRESS_BREACH"]
    assert_clean(deployment, [m, s])


def test_conflict_with_the_same_records_leaves_one_audit_copy(deployment: Deployment, feed: Feed):
    # Given a redelivered batch racing its first delivery (different batch coordinates)
    e = calc("ACC-K", 0, -60_000, book(50), "k1")
    ours, theirs = feed.records([e]), feed.records([e])
    other = build_runtime()
    table = deployment.config.state_table_name
    fired: list[bool] = []

    def race(params: dict[str, Any], **_: Any) -> None:
        if fired or params.get("TableName") != table:
            return
        fired.append(True)
        assert other.service.process(inbound_records(build_msk_event(theirs))).failed == []

    ddb = deployment.runtime.dynamodb
    ddb.meta.events.register("before-parameter-build.dynamodb.PutItem", race)
    try:
        assert failures(deployment.send(ours)) == []
    finally:
        ddb.meta.events.unregister("before-parameter-build.dynamodb.PutItem", race)
    # Then the loser found the records applied and committed nothing: one copy in the trail
    assert deployment.states()["ACC-K"].version == 1
    audit = deployment.audit()
    assert sorted(x.event_id for x in audit) == [
        "k1:LIQUIDATION_TRIGGERED",
        "k1:MARGIN_CALL_ISSUED",
    ]
    assert len(deployment.keys(names.AUDIT_PREFIX)) == 1
    assert_clean(deployment, [e])


def test_history_write_failure_fails_the_batch_before_its_commit(
    deployment: Deployment, feed: Feed
):
    first = calc("ACC-H", 0, -40_000, book(50), "h1")  # call, version 1
    second = calc("ACC-H", 120, -40_000, book(60), "h2")  # cured, version 2
    assert failures(deployment.send(feed.records([first]))) == []
    records = feed.records([second])
    with (
        fault(deployment.runtime.dynamodb, "dynamodb.BatchWriteItem"),
        pytest.raises(BatchProcessingError),
    ):
        deployment.send(records)
    st = deployment.states()["ACC-H"]
    assert st.version == 1 and st.margin.call_open  # not committed
    assert [e.event_id for e in deployment.audit()] == ["h1:MARGIN_CALL_ISSUED"]
    assert failures(deployment.send(records)) == []
    assert [i["sk"]["S"] for i in deployment.items("ACC-H")] == ["LATEST", "H#000000000001"]
    assert_clean(deployment, [first, second])


def test_every_log_line_carries_a_correlation_id(
    deployment: Deployment, feed: Feed, capfd: pytest.CaptureFixture[str]
):
    import io
    import logging

    # Powertools binds its handler to the sys.stdout of import time, which depends on test
    # order under pytest's capture: point every log handler at a buffer for this test.
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    handlers = {h for lg in [*loggers, logging.getLogger()] for h in getattr(lg, "handlers", [])}
    streams = [(h, h.setStream(buf)) for h in handlers if isinstance(h, logging.StreamHandler)]
    e = calc("ACC-L", 0, -40_000, book(50), "l1")
    capfd.readouterr()
    try:
        deployment.send([*feed.records([e, e]), feed.record(raw=b"nope", account="ACC-L")])
    finally:
        for h, old in streams:
            if old is not None:
                h.setStream(old)
    out = buf.getvalue() + capfd.readouterr().out
    lines = [json.loads(x) for x in out.splitlines() if x.startswith('{"level"')]
    assert len(lines) >= 4
    assert all(x.get("correlation_id") for x in lines)
    dup = next(x for x in lines if x["message"] == "record not applied")
    assert dup["correlation_id"] == "corr-l1" and dup["outcome"] == "duplicate"
    # each decision is logged once under its own correlation id (the trace query's key)
    decided = {x["event_id"]: x for x in lines if x["message"] == "decision"}
    assert set(decided) == {"l1:MARGIN_CALL_ISSUED"}  # equity 10,000 < requirement 12,500
    call = decided["l1:MARGIN_CALL_ISSUED"]
    assert (call["correlation_id"], call["account_id"], call["deficiency"]) == (
        "corr-l1",
        "ACC-L",
        2_500.0,
    )
    assert all(x["function_name"] == names.ENFORCEMENT_FUNCTION for x in lines)
