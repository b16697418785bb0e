"""Streaming: fills, then prices, then cash in micro-batches (duplicates and bad records
included) through the local broker and the same process_batch the EMR job runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from emr_jobs.local_runner import LocalMarginJob
from emr_jobs.state import StateStore
from margin_risk import names
from margin_risk.models import MarginCalc, StressResult
from margin_risk.rules import Holding, cents
from margin_risk.stress import stress_table, worst_scenario
from margin_risk.tools.local.kafka_broker import start_broker
from tests.spark.kafka_helpers import produce_many, read_all

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def fill(fid: str, acc: str, sym: str, side: str, qty: Any, px: Any, ts: str) -> dict[str, Any]:
    return {
        "fill_id": fid,
        "account_id": acc,
        "symbol": sym,
        "side": side,
        "quantity": qty,
        "price": px,
        "timestamp": ts,
        "correlation_id": f"c-{fid}",
    }


F1 = fill("F1", "A", "AAPL", "BUY", 1000, 50.0, "2026-02-16T14:30:00Z")
F2 = fill("F2", "A", "PENNY", "SHORT", 100, 4.0, "2026-02-16T14:30:05Z")
FB = fill("FB", "B", "XYZ", "SHORT", 1000, 6.0, "2026-02-16T14:30:10Z")
NAN_PRICE = '{"fill_id": "F3", "account_id": "A", "symbol": "AAPL", "side": "BUY", "quantity": 5, "price": NaN, "timestamp": "2026-02-16T14:30:00Z", "correlation_id": "c"}'
NEG_QTY = fill("F4", "A", "AAPL", "BUY", -5, 50.0, "2026-02-16T14:30:00Z")
BAD_SIDE = fill("F5", "A", "AAPL", "HOLD", 5, 50.0, "2026-02-16T14:30:00Z")
MALFORMED = '{"fill_id": "F6", "account_id": "A", '
NO_ZONE = fill("F7", "A", "AAPL", "BUY", 5, 50.0, "2026-02-16T14:30:00")


def money(v: dict[str, Any]) -> tuple[float, ...]:
    return tuple(
        cents(v[k])
        for k in (
            "long_market_value",
            "short_market_value",
            "equity",
            "maintenance_req",
            "excess",
            "deficiency",
        )
    )


def test_fills_prices_cash_in_micro_batches_give_the_spec_numbers(
    spark: SparkSession, tmp_path: Path
) -> None:
    with (
        start_broker(partitions=2) as broker,
        LocalMarginJob(
            broker.bootstrap,
            str(tmp_path / "state"),
            metrics_dir=str(tmp_path / "metrics"),
            spark=spark,
        ) as job,
    ):
        # Batch 0: fills (one redelivered) plus five bad records, and deposits for A and B
        produce_many(
            broker,
            [
                (
                    names.TOPIC_CASH,
                    "A",
                    {
                        "txn_id": "TA",
                        "account_id": "A",
                        "amount": 50000.0,
                        "timestamp": "2026-02-16T14:29:00Z",
                        "correlation_id": "c-TA",
                    },
                ),
                (names.TOPIC_FILLS, "A", F1),
                (names.TOPIC_FILLS, "A", F2),
                (names.TOPIC_FILLS, "A", F1),
                (names.TOPIC_FILLS, "B", FB),
                (names.TOPIC_FILLS, "A", NAN_PRICE),
                (names.TOPIC_FILLS, "A", NEG_QTY),
                (names.TOPIC_FILLS, "A", BAD_SIDE),
                (names.TOPIC_FILLS, "A", MALFORMED),
                (names.TOPIC_FILLS, "A", NO_ZONE),
                (
                    names.TOPIC_CASH,
                    "B",
                    {
                        "txn_id": "TB",
                        "account_id": "B",
                        "amount": 1000.0,
                        "timestamp": "2026-02-16T14:30:10Z",
                        "correlation_id": "c-TB",
                    },
                ),
            ],
        )
        s0 = job.run_once()
        assert s0 is not None
        assert s0.rejected == {
            "non_finite_number": 1,
            "non_positive_quantity": 1,
            "unknown_side": 1,
            "malformed_json": 1,
            "invalid_timestamp": 1,
        }
        assert s0.duplicates == 1 and s0.accounts == 2

        # Batch 1: prices (AAPL down to 30, XYZ crosses below $5) and F1 redelivered again
        produce_many(
            broker,
            [
                (
                    names.TOPIC_PRICES,
                    "AAPL",
                    {
                        "symbol": "AAPL",
                        "price": 30.0,
                        "timestamp": "2026-02-16T14:31:00Z",
                        "beta": 1.2,
                    },
                ),
                (
                    names.TOPIC_PRICES,
                    "XYZ",
                    {"symbol": "XYZ", "price": 4.0, "timestamp": "2026-02-16T14:31:30Z"},
                ),
                (names.TOPIC_FILLS, "A", F1),
            ],
        )
        s1 = job.run_once()
        assert s1 is not None and s1.duplicates == 1

        # Batch 2: a withdrawal from A, delivered twice
        t1 = {
            "txn_id": "T1",
            "account_id": "A",
            "amount": -25000.0,
            "timestamp": "2026-02-16T14:32:00Z",
            "correlation_id": "c-T1",
        }
        produce_many(broker, [(names.TOPIC_CASH, "A", t1), (names.TOPIC_CASH, "A", t1)])
        s2 = job.run_once()
        assert s2 is not None and s2.duplicates == 1
        assert job.run_once() is None  # nothing left

        margin = read_all(broker, names.TOPIC_MARGIN_CALC)
        stress = read_all(broker, names.TOPIC_STRESS)
        rejected = read_all(broker, names.TOPIC_REJECTED)

    for _, v, _ in margin:
        MarginCalc.model_validate(v)
    for _, v, _ in stress:
        StressResult.model_validate(v)
    by_acc: dict[str, list[dict[str, Any]]] = {}
    for k, v, h in margin:
        assert h[names.HEADER_CORRELATION_ID].decode() == v["correlation_id"]
        assert h[names.HEADER_ORIGIN_TS].decode() == v["origin_ts"]
        by_acc.setdefault(k, []).append(v)

    # Trade-date cash: fills move cash by -signed quantity x price.
    # A: deposits 50,000, buys 1000 AAPL @ 50, shorts 100 PENNY @ 4 (marked at fill prices):
    #    cash 50,000 - 50,000 + 400 = 400, LMV 50,000, SMV 400, equity 50,000,
    #    req 12,500 + max(2.50 x 100, 100% x 400) = 12,900
    # then AAPL at 30: LMV 30,000, equity 30,000, req 7,500 + 400 = 7,900
    # then -25,000 cash: equity 5,000, excess -2,900, deficiency 2,900
    a = by_acc["A"]
    assert [money(v) for v in a] == [
        (50000.0, 400.0, 50000.0, 12900.0, 37100.0, 0.0),
        (30000.0, 400.0, 30000.0, 7900.0, 22100.0, 0.0),
        (30000.0, 400.0, 5000.0, 7900.0, -2900.0, 2900.0),
    ]
    assert [v["timestamp"] for v in a] == [
        "2026-02-16T14:30:05Z",
        "2026-02-16T14:31:00Z",
        "2026-02-16T14:32:00Z",
    ]
    assert [v["correlation_id"] for v in a] == [
        "c-F2",
        "prices.v1:AAPL:2026-02-16T14:31:00Z",
        "c-T1",
    ]
    assert [v["input_count"] for v in a] == [3, 1, 1]
    assert len({v["event_id"] for v in a}) == 3

    # B: deposits 1,000, shorts 1000 XYZ @ 6: cash 7,000, SMV 6,000, equity 1,000,
    #    req max(5.00 x 1000, 30% x 6,000) = 5,000, deficiency 4,000
    # then XYZ at $4 (< $5): SMV 4,000, equity 3,000, req max(2.50 x 1000, 100% x 4,000) = 4,000
    assert [money(v) for v in by_acc["B"]] == [
        (0.0, 6000.0, 1000.0, 5000.0, -4000.0, 4000.0),
        (0.0, 4000.0, 3000.0, 4000.0, -1000.0, 1000.0),
    ]

    # Stress of A's last calculation matches margin_risk, worst scenario included
    last_a = [v for k, v, _ in stress if k == "A"][-1]
    ref = stress_table(
        -24600.0, [Holding("AAPL", 1000, 30.0, 1.2), Holding("PENNY", -100, 4.0, 1.0)]
    )
    assert [cents(s["stressed_deficiency"]) for s in last_a["scenarios"]] == [
        cents(r.result.deficiency) for r in ref
    ]
    assert last_a["worst_scenario"] == worst_scenario(ref).scenario == Decimal("-0.08")
    assert cents(last_a["worst_deficiency"]) == cents(worst_scenario(ref).result.deficiency)

    # Every bad record is on rejected.v1 with its reason and raw value
    reasons = sorted(v["reason"] for _, v, _ in rejected)
    assert reasons == sorted(
        [
            "non_finite_number",
            "non_positive_quantity",
            "unknown_side",
            "malformed_json",
            "invalid_timestamp",
        ]
    )
    assert any(v["value"] == MALFORMED for _, v, _ in rejected)
    metrics = (tmp_path / "metrics" / "spark.jsonl").read_text().splitlines()
    assert any('"RecordsRejected": 1.0' in line and "malformed_json" in line for line in metrics)

    # The runbook's trace: an operator greps the job's log for a result's correlation id and
    # finds the micro-batch that read the input, with what it emitted
    log = (tmp_path / "metrics" / "spark-job.log").read_text().splitlines()
    [line] = [json.loads(x) for x in log if "c-F2" in x]
    assert line["batch_id"] == 0 and line["message"] == "margin results emitted"
    assert line["margin_results"] == 2 and line["correlation_id_count"] == 5
    assert line["correlation_ids"] == ["c-F1", "c-F2", "c-FB", "c-TA", "c-TB"]
    # a price-triggered result's derived id is in its batch's line too
    [tick_line] = [json.loads(x) for x in log if "prices.v1:AAPL:2026-02-16T14:31:00Z" in x]
    assert tick_line["batch_id"] == 1 and tick_line["margin_results"] == 2


# Both points are after the results were emitted: the change log not yet written, and the
# change log written but not the commit marker.
CRASH_POINTS = ["write_log", "commit"]


@pytest.mark.parametrize("crash_in", CRASH_POINTS)
def test_restart_after_a_crash_replays_the_batch_without_losing_or_repeating_a_fill(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_in: str
) -> None:
    state = str(tmp_path / "state")
    with start_broker(partitions=2) as broker:
        # Given two fills, and a job that crashes after emitting but before committing
        produce_many(
            broker,
            [
                (
                    names.TOPIC_FILLS,
                    "R",
                    fill("R1", "R", "AAPL", "BUY", 100, 50.0, "2026-02-16T14:30:00Z"),
                ),
                (
                    names.TOPIC_FILLS,
                    "R",
                    fill("R2", "R", "AAPL", "BUY", 100, 50.0, "2026-02-16T14:30:01Z"),
                ),
            ],
        )
        real = getattr(StateStore, crash_in)

        def crash(self: StateStore, batch_id: int, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError(f"simulated driver crash in {crash_in}")

        monkeypatch.setattr(StateStore, crash_in, crash)
        job1 = LocalMarginJob(broker.bootstrap, state, spark=spark)
        with pytest.raises(RuntimeError, match="simulated"):
            job1.run_once()
        job1.close()
        # And more fills arrive while the job is down
        produce_many(
            broker,
            [
                (
                    names.TOPIC_FILLS,
                    "R",
                    fill("R3", "R", "AAPL", "BUY", 100, 50.0, "2026-02-16T14:30:02Z"),
                )
            ],
        )

        # When a new job restarts from the same state dir
        monkeypatch.setattr(StateStore, crash_in, real)
        with LocalMarginJob(broker.bootstrap, state, spark=spark) as job2:
            replay = job2.run_once()
            after = job2.run_once()
            assert job2.run_once() is None
        margin = [v for _, v, _ in read_all(broker, names.TOPIC_MARGIN_CALC)]

    # Then the replay re-ran exactly the planned batch (2 fills), then the new fill
    assert replay is not None and replay.batch_id == 0 and replay.accepted == {"fills.v1": 2}
    assert after is not None and after.batch_id == 1 and after.accepted == {"fills.v1": 1}
    # The crashed attempt and the replay emitted the same event (same id: consumers dedupe)
    assert [v["long_market_value"] for v in margin] == [10000.0, 10000.0, 15000.0]
    # and the purchases' cash moved once each: cash -15,000 against 15,000 of stock
    assert [v["equity"] for v in margin] == [0.0, 0.0, 0.0]
    assert margin[0]["event_id"] == margin[1]["event_id"]
    assert margin[2]["event_id"] != margin[0]["event_id"]


@contextmanager
def _reading_from(
    fake: Any, spark: SparkSession, tmp_path: Path, **settings: Any
) -> Iterator[LocalMarginJob]:
    """A local job whose reads come from ``fake`` (a stand-in for its Kafka consumer)."""
    with (
        start_broker(partitions=1) as broker,
        LocalMarginJob(broker.bootstrap, str(tmp_path / "state"), spark=spark, **settings) as job,
    ):
        real = job._consumer
        job._consumer = fake
        job._assigned = {}
        try:
            yield job
        finally:
            job._consumer = real


class _EndlessTopic:
    """A consumer whose topic never goes quiet: every poll returns ten more records after a
    10 ms fetch, as a busy partition does."""

    def __init__(self) -> None:
        self.next_offset = 0

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        import time

        time.sleep(0.01)
        out = []
        for _ in range(min(10, num_messages)):
            out.append(_Msg(self.next_offset))
            self.next_offset += 1
        return out


class _Msg:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return names.TOPIC_PRICES

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def test_a_batch_under_steady_input_closes_its_read_and_leaves_the_rest_for_the_next(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Input that never goes quiet does not hold a micro-batch open: the read closes max_read_s
    after the first record (reading until an idle poll ran on for seconds under steady input),
    and the next batch starts exactly where it stopped."""
    with _reading_from(
        _EndlessTopic(), spark, tmp_path, max_batch_records=5_000, max_read_s=0.25
    ) as job:
        msgs, nxt = job._read({}, None)
        more, _ = job._read(nxt, None)
    # at most 0.25 s / 10 ms polls of 10 records (fewer on a slow machine), far below the cap
    assert 0 < len(msgs) <= 300
    assert [m.offset() for m in msgs] == list(range(len(msgs)))
    assert nxt == {f"{names.TOPIC_PRICES}:0": len(msgs)}
    assert more[0].offset() == len(msgs)


class _Backlog:
    """A consumer holding a fetched backlog and nothing more: like confluent-kafka's consume(),
    a call returns at once only when it can fill ``num_messages``; otherwise it waits out its
    timeout and returns what it has."""

    def __init__(self, queued: int) -> None:
        self.queued = queued
        self.next_offset = 0

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        import time

        if self.queued < num_messages:
            time.sleep(timeout)
        out = [_Msg(self.next_offset + i) for i in range(min(self.queued, num_messages))]
        self.next_offset += len(out)
        self.queued -= len(out)
        return out


def test_a_read_takes_the_fetched_backlog_without_waiting_a_poll_timeout_first(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Records already fetched are taken at once; the read then lasts its window (max_read_s),
    not a poll timeout plus the window."""
    import time

    with _reading_from(
        _Backlog(queued=500), spark, tmp_path, poll_timeout_s=2.0, max_read_s=0.1
    ) as job:
        t0 = time.monotonic()
        msgs, nxt = job._read({}, None)
        took = time.monotonic() - t0
    assert [m.offset() for m in msgs] == list(range(500))
    assert nxt == {f"{names.TOPIC_PRICES}:0": 500}
    # 0.1 s window; the old first call waited the whole 2 s poll timeout before it
    assert took < 1.0
