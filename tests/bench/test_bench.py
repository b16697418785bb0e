"""Smoke tests of the benchmark harness: the smallest configuration of each section runs and its
figures are consistent; the NumPy kernel equals the reference. No timing assertions: speed
targets are checked by ``python -m bench``, never here."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from bench import report
from bench.books import SCENARIOS, generate_books
from bench.enforcement import EnforcementSettings
from bench.enforcement import run as run_enforcement
from bench.kernel import KernelSettings, mismatches, params, reference_run
from bench.kernel import run as run_kernel
from bench.kernel_numpy import NumpyKernel
from margin_risk import names
from margin_risk.money import to_decimal
from margin_risk.rules import compute_margin
from margin_risk.stress import stress_table


def _reference(books, p):
    cash = [to_decimal(float(c)) for c in books.cash]
    return reference_run(cash, [books.holdings(a) for a in range(books.accounts)], p)


@pytest.mark.parametrize("per_account", [10, None])
@pytest.mark.parametrize("chunk", [64, 8192])
def test_numpy_kernel_equals_the_exact_reference_up_to_float_rounding(per_account, chunk):
    # Given 300 generated books (fixed or 1-12 positions, prices around $5, betas up to 15)
    books = generate_books(300, per_account, seed=21)
    p = params()
    # When the NumPy float kernel and the exact reference compute margin and the stress grid
    got = NumpyKernel(p, SCENARIOS, chunk_positions=chunk).run(books)
    ref = _reference(books, p)
    # Then every figure agrees up to binary-float rounding, and the worst scenarios are the same
    assert mismatches(got, ref) == 0
    for a, (m, rows, _) in enumerate(ref):
        assert got.maintenance_req[0, a] == pytest.approx(float(m.maintenance_req), rel=1e-12)
        assert [got.equity[j, a] for j in range(1, 5)] == pytest.approx(
            [float(r.result.equity) for r in rows], rel=1e-12, abs=1e-6
        )
    # and the books exercise every branch: shorts under $5, prices floored at 0, breaches
    assert (books.quantity < 0).any() and ((books.price < 5) & (books.quantity < 0)).any()
    assert np.any(got.worst_deficiency > 0) and np.any(got.worst_deficiency == 0)


def test_numpy_kernel_concentration_addon_and_threads():
    books = generate_books(200, None, seed=5)
    p = replace(params(), concentration_addon=Decimal("0.10"))
    got = NumpyKernel(p, SCENARIOS, chunk_positions=128, threads=2).run(books)
    for a in range(books.accounts):
        h = books.holdings(a)
        cash = to_decimal(float(books.cash[a]))
        want = compute_margin(cash, h, p).maintenance_req
        assert got.maintenance_req[0, a] == pytest.approx(float(want), rel=1e-12)
        rows = stress_table(cash, h, p)
        assert [got.maintenance_req[j, a] for j in range(1, 5)] == pytest.approx(
            [float(r.result.maintenance_req) for r in rows], rel=1e-12, abs=1e-6
        )


def test_kernel_section_without_spark_reports_rates_and_zero_mismatches():
    s = KernelSettings(
        accounts=300, positions_per_account=10, python_accounts=100, runs=1, warmup=0,
        spark_runs=1, spark=False,
    )  # fmt: skip
    out = run_kernel(s, log=lambda _: None)
    assert out["positions"] == 3000
    assert out["numpy_vs_reference_mismatched_accounts"] == 0
    assert out["python_pos_per_s"] > 0 and out["numpy_pos_per_s"] > 0
    assert out["scenarios"] == list(SCENARIOS)


def test_a_section_of_a_multi_section_run_gets_its_own_interpreter():
    # PySpark keeps its JVM for the life of the Python process, so sections sharing one process
    # would measure the e2e Spark job in the JVM the kernel section had just loaded.
    import os

    from bench.sections import in_fresh_process

    s = KernelSettings(
        accounts=100, positions_per_account=10, python_accounts=20, runs=1, warmup=0,
        spark_runs=1, spark=False,
    )  # fmt: skip
    out = in_fresh_process("kernel", s)
    assert out["positions"] == 1000 and out["numpy_vs_reference_mismatched_accounts"] == 0
    assert out["pid"] != os.getpid()


@pytest.mark.spark
def test_kernel_section_spark_variants_agree_with_numpy():
    s = KernelSettings(
        accounts=200, positions_per_account=10, python_accounts=50, runs=1, warmup=0,
        spark_runs=1, spark=True,
    )  # fmt: skip
    out = run_kernel(s, log=lambda _: None)
    assert out["spark_parity_accounts"] == 200
    assert out["spark_vs_numpy_mismatched_accounts"] == 0
    assert out["spark_columnar_vs_numpy_mismatched_accounts"] == 0
    assert out["spark_pos_per_s"] > 0 and out["spark_columnar_pos_per_s"] > 0


SMALL = EnforcementSettings(sizes=(100,), runs=1, batches_per_run={100: 2}, warmup_batches=1)


def test_enforcement_with_fakes_has_the_batch_call_pattern():
    out = run_enforcement(replace(SMALL, moto=False), log=lambda _: None)
    d = out["fakes"]["100"]
    calls = d["calls_per_batch"]
    assert d["item_failures"] == 0
    assert calls["state.load_many"] == 1
    assert calls["state.commit"] <= d["accounts_touched_per_batch"]
    assert calls["idempotency.put"] == 1 and calls["idempotency.update"] == 1
    # one audit object per deciding account's commit (and hour), at most one more for the
    # outbox it replaces
    assert 0 < calls["audit.create"] <= 2 * d["accounts_touched_per_batch"]
    assert out["fake_records_per_s"] > 0


@pytest.mark.integration
def test_enforcement_against_moto_counts_aws_calls():
    out = run_enforcement(SMALL, log=lambda _: None)
    assert out["moto"]["100"]["item_failures"] == 0
    assert out["state_reads_per_batch"] == 1 <= out["state_reads_allowed"]
    assert out["state_writes_per_account_touched"] == pytest.approx(1.0)
    assert out["idempotency_calls_per_batch"] == 2
    assert 0 < out["s3_puts_per_account_touched"] <= 2
    assert out["ddb_calls_per_batch"] > out["state_reads_per_batch"]
    # the modelled round trip changes the time, never the calls or the outcome
    rtt = out["moto_rtt"]["100"]
    assert out["modelled_rtt_ms"] == 5.0 and rtt["item_failures"] == 0
    assert rtt["calls_per_batch"] == out["moto"]["100"]["calls_per_batch"]


@pytest.mark.integration
@pytest.mark.spark
def test_e2e_smallest_configuration_runs_and_reports():
    from bench.e2e import E2ESettings
    from bench.e2e import run as run_e2e

    s = E2ESettings(rate=50.0, duration_s=3.0, accounts=5, symbols=5, drain_timeout_s=120.0)
    out = run_e2e(s, log=lambda _: None)
    assert out["warm"] is True
    assert out["events_sent"] == pytest.approx(150, abs=2)
    assert out["drained"] is True and out["results_decided"] > 0
    assert out["latency_ms_p50"] <= out["latency_ms_p99"]
    assert isinstance(out["kept_up"], bool)
    parts = out["latency_stages"]
    assert parts["spark_ms_p50"] > 0 and parts["handler_ms_p50"] > 0
    assert parts["mapping_ms_p50"] >= 0
    # how many results landed while input still flowed depends on the machine's load (a
    # micro-batch may outlast the 3 s of input); the split itself is tested just below
    assert 0 <= out["results_while_input_flowed"] <= out["results_decided"]
    assert out["inputs_decided"] > 0
    assert out["input_latency_ms_p99"] >= out["input_latency_ms_p50"] > 0


def test_results_of_the_batch_that_read_after_the_producer_stopped_are_told_apart():
    from bench.e2e import while_input_flowed

    reads_ended = [10.0, 14.0, 18.0]  # the third read began after the stop at 16.0
    stages = [
        (9.9, 2.6, 0.3, 1.0),  # produced 12.5: batch read by 10.0
        (13.9, 2.5, 0.4, 1.1),  # produced 16.4: batch read by 14.0, results after the stop
        (14.5, 5.5, 0.3, 1.2),  # produced 20.0: queued during the second batch, read at 18.0
    ]
    got = while_input_flowed(stages, reads_ended, stopped=16.0)
    assert got == [pytest.approx(3.9), pytest.approx(4.0)]


def test_an_input_waits_for_the_last_decision_of_the_batch_that_read_it():
    from bench.e2e import per_input_latencies

    reads = [(10.0, [8.0, 9.9]), (14.0, [10.5, 13.9])]
    stages = [
        (9.9, 2.6, 0.3, 1.0),  # batch 1's results: decided 13.8
        (9.9, 2.6, 0.3, 1.4),  # decided 14.2: the batch's last decision
        (13.9, 2.5, 0.4, 1.1),  # batch 2: decided 17.9
    ]
    got = per_input_latencies(stages, reads, window=(9.0, 20.0))
    # 8.0 is before the window; 10.5 arrived while batch 1 ran and waited for batch 2
    assert got == [pytest.approx(4.3), pytest.approx(7.4), pytest.approx(4.0)]


def test_a_results_latency_splits_into_spark_mapping_and_handler():
    from bench.e2e import Decisions, latency_stages

    d = Decisions()
    origin = "2026-12-04T20:00:00.250Z"
    event = {
        "records": {
            "margin.calc.v1-0": [
                {
                    "timestamp": 1_796_414_403_000,  # 20:00:03.000: the Spark job produced it
                    "headers": [{names.HEADER_ORIGIN_TS: list(origin.encode())}],
                }
            ]
        }
    }
    # handler invoked at 20:00:03.600, returned at 20:00:04.000
    d.add(event, decided=1_796_414_404.0, invoked=1_796_414_403.6)
    assert d.samples == [(1_796_414_404.0, pytest.approx(3.75))]
    parts = latency_stages(d.stages)
    assert parts["spark_ms_p50"] == pytest.approx(2750.0)
    assert parts["mapping_ms_p50"] == pytest.approx(600.0)
    assert parts["handler_ms_p50"] == pytest.approx(400.0)
    assert parts["slowest_ms"] == [{"spark": 2750, "mapping": 600, "handler": 400}]


def test_report_has_the_issue_keys_and_renders_a_table():
    r = {
        "machine": report.machine(),
        "settings": {"mode": "quick"},
        "kernel": {"python_pos_per_s": 1e5, "spark_pos_per_s": 1e4, "numpy_pos_per_s": 2e7},
        "spark": {"small_batch_s": 0.9, "large_book_batch_s": 1.2, "large_over_small": 1.33,
                  "jobs_per_batch": 3.0, "state_bytes_per_batch_small": 30000.0,
                  "state_bytes_per_batch_large": 50000.0},
        "enforcement": {"fake_records_per_s": 6000.0, "records_per_s": 600.0,
                        "ddb_calls_per_batch": 12.0, "s3_puts_per_batch": 1.0},
        "e2e": {"latency_ms_p50": 900.0, "latency_ms_p99": 2200.0, "kept_up": True},
        "e2e_busy_core": {"latency_ms_p50": 1900.0, "latency_ms_p99": 5200.0, "kept_up": True},
    }  # fmt: skip
    r["targets"] = report.targets(r)
    r["headline"] = {k: report.lookup(r, k) for k in report.HEADLINE}
    assert set(r["headline"]) == set(report.HEADLINE) and None not in r["headline"].values()
    assert r["targets"]["numpy >= 20M positions/s"]["met"] is True
    assert r["targets"]["e2e p99 <= 2.5 s at 1,000 events/s"]["met"] is True
    assert r["targets"]["e2e p99 <= 2 s (stretch)"]["met"] is False
    busy = r["targets"]["e2e p99 <= 5 s with one core kept busy by another process"]
    assert busy == {"value": 5200.0, "met": False}
    assert r["targets"]["spark large / small batch <= 1.5"]["met"] is True
    assert r["targets"]["spark 1M-position book batch <= 1.5 s"]["met"] is True
    text = report.table(r)
    assert "kernel.numpy_pos_per_s" in text and "e2e.kept_up" in text
    json.dumps(r)
    assert math.isclose(report.lookup(r, "kernel.spark_pos_per_s"), 1e4)


def test_bench_refuses_an_unwritable_report_path_before_measuring(tmp_path, capsys):
    from bench.__main__ import main

    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(blocker / "report.json"), "--sections", "kernel", "--no-spark"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--out" in err and "cannot create" in err
    assert "kernel:" not in err  # nothing was measured
