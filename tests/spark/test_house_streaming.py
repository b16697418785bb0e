"""House requirements per symbol through the job: house.requirements.v1 records re-margin the
holders of their symbol, each calculation with the entry in force at its own event time (spec
section 7), across a restart and compactions."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from emr_jobs.local_runner import LocalMarginJob
from margin_risk import names
from margin_risk.house import HouseBook, HouseEntry
from margin_risk.models import MarginCalc
from margin_risk.rules import Holding, compute_margin
from margin_risk.stress import stress_table
from margin_risk.tools.local.kafka_broker import start_broker
from tests.spark.kafka_helpers import produce_many, read_all

pytestmark = [pytest.mark.spark, pytest.mark.integration]

HOUSE = names.TOPIC_HOUSE_REQUIREMENTS
# Dated ahead of any Kafka timestamp of the run: a scheduled change.
SCHEDULED = "2099-01-01T00:00:00Z"


def house(as_of: str, long_rate: Any = 0, short_rate: Any = 0, nm: Any = False) -> dict[str, Any]:
    return {
        "symbol": "TQQQ",
        "long_rate": long_rate,
        "short_rate": short_rate,
        "non_marginable": nm,
        "as_of": as_of,
        "updated_by": "risk-desk",
    }


def cash(txn: str, acc: str, amount: Any, ts: str) -> tuple[str, str, dict[str, Any]]:
    body = {"txn_id": txn, "account_id": acc, "amount": amount, "timestamp": ts,
            "correlation_id": f"c-{txn}"}  # fmt: skip
    return (names.TOPIC_CASH, acc, body)


def buy(
    fid: str, acc: str, sym: str, qty: Any, px: Any, ts: str
) -> tuple[str, str, dict[str, Any]]:
    body = {"fill_id": fid, "account_id": acc, "symbol": sym, "side": "BUY", "quantity": qty,
            "price": px, "timestamp": ts, "correlation_id": f"c-{fid}"}  # fmt: skip
    return (names.TOPIC_FILLS, acc, body)


def test_a_house_entry_re_margins_the_holders_of_its_symbol_with_the_spec_numbers(
    spark: SparkSession, tmp_path: Path
) -> None:
    state = str(tmp_path / "state")
    with start_broker(partitions=2) as broker:
        job = LocalMarginJob(broker.bootstrap, state, spark=spark, compact_every=2)
        # Batch 0: A buys 100 TQQQ at $50 (cash 10,000 -> 5,000); C holds another symbol
        produce_many(
            broker,
            [
                cash("TA", "A", 10000, "2026-02-16T14:29:00Z"),
                buy("FA", "A", "TQQQ", 100, 50, "2026-02-16T14:30:00Z"),
                cash("TC", "C", 10000, "2026-02-16T14:29:00Z"),
                buy("FC", "C", "QQQ", 10, 400, "2026-02-16T14:30:00Z"),
            ],
        )
        assert (s0 := job.run_once()) is not None and s0.accounts == 2
        # Batch 1: TQQQ is a 3x leveraged ETF from 14:35 (long_rate 0.75)
        produce_many(broker, [(HOUSE, "TQQQ", house("2026-02-16T14:35:00Z", 0.75))])
        assert (s1 := job.run_once()) is not None and s1.accounts == 1
        # Batch 2: non-marginable from 14:40, the 14:35 entry redelivered, and bad entries
        produce_many(
            broker,
            [
                (HOUSE, "TQQQ", house("2026-02-16T14:40:00Z", 0.75, 0, True)),
                (HOUSE, "TQQQ", house("2026-02-16T14:35:00Z", 0.75)),
                (HOUSE, "TQQQ", house("2026-02-16T14:41:00Z", 1.5)),
                (HOUSE, "TQQQ", house("2026-02-16T14:41:00Z", 0.5, 0, "yes")),
                (HOUSE, "TQQQ", house("2026-02-16T14:41:00Z", 0.5, -0.1)),
                (HOUSE, "TQQQ", house("2026-02-16T14:41:00Z", 0.12345)),
                (HOUSE, "TQQQ", {k: v for k, v in house("2026-02-16T14:41:00Z").items()
                                 if k != "updated_by"}),
            ],
        )  # fmt: skip
        s2 = job.run_once()
        assert s2 is not None and s2.accounts == 1
        assert s2.rejected == {
            "out_of_range": 2,
            "wrong_type": 1,
            "too_many_decimal_places": 1,
            "missing_field": 1,
        }
        job.close()

        # A restart (state from the base and the change logs): a scheduled entry that would
        # make TQQQ marginable at the default rate again from 2099 re-margins nobody now
        job = LocalMarginJob(broker.bootstrap, state, spark=spark, compact_every=2)
        produce_many(broker, [(HOUSE, "TQQQ", house(SCHEDULED))])
        assert (s3 := job.run_once()) is not None and s3.accounts == 0
        # A deposit at 14:45 is calculated with the entry in force then (non-marginable)
        produce_many(broker, [cash("T2", "A", 100, "2026-02-16T14:45:00Z")])
        assert (s4 := job.run_once()) is not None and s4.accounts == 1
        # and one dated after the scheduled entry with that entry
        produce_many(broker, [cash("T3", "A", 100, "2099-01-02T00:00:00Z")])
        assert (s5 := job.run_once()) is not None and s5.accounts == 1
        job.close()

        margin = [v for _, v, _ in read_all(broker, names.TOPIC_MARGIN_CALC)]
        stress = [v for _, v, _ in read_all(broker, names.TOPIC_STRESS)]
    a = [v for v in margin if v["account_id"] == "A"]
    # Then A: 25% of 5,000 = 1,250; 75% = 3,750 from 14:35; 100% = 5,000 from 14:40 (also at
    # 14:45); the default again under the 2099 entry
    assert [v["maintenance_req"] for v in a] == [1250, 3750, 5000, 5000, 1250]
    assert [v["timestamp"] for v in a] == [
        "2026-02-16T14:30:00Z",
        "2026-02-16T14:35:00Z",
        "2026-02-16T14:40:00Z",
        "2026-02-16T14:45:00Z",
        "2099-01-02T00:00:00Z",
    ]
    assert a[1]["correlation_id"] == f"{HOUSE}:TQQQ:2026-02-16T14:35:00Z"
    assert a[2]["correlation_id"] == f"{HOUSE}:TQQQ:2026-02-16T14:40:00Z"
    # C, who holds no TQQQ, was calculated once
    assert [v["maintenance_req"] for v in margin if v["account_id"] == "C"] == [1000]

    # And every result, margin and stress, is the core's with the entries in force at its time
    book = HouseBook(
        HouseEntry.model_validate(e)
        for e in (
            house("2026-02-16T14:35:00Z", 0.75),
            house("2026-02-16T14:40:00Z", 0.75, 0, True),
            house(SCHEDULED),
        )
    )
    a_stress = [v for v in stress if v["account_id"] == "A"]
    cash_of = [Decimal(5000), Decimal(5000), Decimal(5000), Decimal(5100), Decimal(5200)]
    for v, s, c in zip(a, a_stress, cash_of, strict=True):
        at = MarginCalc.model_validate(v).timestamp
        rates = book.in_force(at)
        held = [Holding("TQQQ", 100, 50)]
        ref = compute_margin(c, held, house=rates)
        assert (v["equity"], v["maintenance_req"], v["excess"]) == (
            ref.equity, ref.maintenance_req, ref.excess
        )  # fmt: skip
        table = stress_table(c, held, house=rates)
        got = [r["stressed_maintenance_req"] for r in s["scenarios"]]
        assert got == [r.result.maintenance_req for r in table]
        assert s["timestamp"] == v["timestamp"]
