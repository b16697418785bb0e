"""The local EMF loader and CloudWatch-like statistics over it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from dashboards import specs
from dashboards.local_metrics import (
    LocalMetrics,
    Timeline,
    load_lines,
    load_metrics_dir,
    statistic,
    timeline_for,
)
from margin_risk import names
from tests.observability.emf import T0_MS, hand_emf, powertools_emf, simulated_run, write_run


def test_powertools_emf_with_several_values_gives_one_point_per_value() -> None:
    blob = powertools_emf(
        T0_MS, {names.METRIC_E2E_LATENCY: (MetricUnit.Milliseconds, [120.0, 480.0, 9000.0])}
    )
    res = load_lines([json.dumps(blob)])
    assert [p.value for p in res.points] == [120.0, 480.0, 9000.0]
    assert {p.ts_ms for p in res.points} == {T0_MS}
    assert res.points[0].dimensions == {"service": names.SERVICE_ENFORCEMENT}
    assert res.points[0].unit == "Milliseconds"


def test_log_lines_broken_json_and_non_finite_values_are_skipped_not_fatal() -> None:
    good = json.dumps(hand_emf(T0_MS, {names.METRIC_INPUT_RECORDS: 5}))
    res = load_lines(["START RequestId: 1", "{broken", "", '{"level": "INFO"}', good, "[1, 2]"])
    assert [p.value for p in res.points] == [5.0]
    assert res.skipped_lines == 4
    nan = hand_emf(T0_MS, {names.METRIC_INPUT_RECORDS: 1})
    nan[names.METRIC_INPUT_RECORDS] = float("nan")
    assert load_lines([json.dumps(nan)]).points == []


def test_each_dimension_set_is_its_own_metric_as_in_cloudwatch() -> None:
    blob = hand_emf(T0_MS, {names.METRIC_RECORDS_REJECTED: 3}, {names.DIM_REASON: "bad_price"})
    blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = [["service"], ["reason", "service"]]
    data = LocalMetrics(load_lines([json.dumps(blob)]).points)
    plain = specs.spark(names.METRIC_RECORDS_REJECTED)
    by_reason = specs.Metric(
        names.METRICS_NAMESPACE, names.METRIC_RECORDS_REJECTED, specs.SPARK, group_by="reason"
    )
    assert [p.value for p in data.select(plain)] == [3.0]
    assert [p.dimensions["reason"] for p in data.select(by_reason)] == ["bad_price"]


def test_service_must_match_when_present_and_is_lenient_when_absent() -> None:
    lines = [
        json.dumps(hand_emf(T0_MS, {names.METRIC_RECORDS_REJECTED: 2})),  # spark
        json.dumps(
            powertools_emf(T0_MS, {names.METRIC_RECORDS_REJECTED: (MetricUnit.Count, [7.0])})
        ),
        json.dumps(hand_emf(T0_MS, {names.METRIC_RECORDS_REJECTED: 1}, service=None)),
    ]
    data = LocalMetrics(load_lines(lines).points)
    assert sorted(p.value for p in data.select(specs.spark(names.METRIC_RECORDS_REJECTED))) == [
        1.0,
        2.0,
    ]
    assert sorted(p.value for p in data.select(specs.enf(names.METRIC_RECORDS_REJECTED))) == [
        1.0,
        7.0,
    ]


@pytest.mark.parametrize(
    ("stat", "expected"),
    [
        ("Sum", 5050.0),
        ("Average", 50.5),
        ("Minimum", 1.0),
        ("Maximum", 100.0),
        ("SampleCount", 100.0),
        ("p50", 50.0),
        ("p99", 99.0),
    ],
)
def test_statistics_match_cloudwatch_definitions(stat: str, expected: float) -> None:
    assert statistic([float(v) for v in range(100, 0, -1)], stat) == expected


def test_statistic_of_nothing_is_none() -> None:
    assert statistic([], "Sum") is None


def test_timeline_uses_round_periods_and_covers_every_point() -> None:
    pts = load_lines(json.dumps(o) for o in simulated_run(minutes=20)).points
    tl = timeline_for(pts)
    assert tl.period_ms in (30_000, 60_000)
    assert tl.n <= 60
    assert all(tl.index(p.ts_ms) is not None for p in pts)
    assert Timeline(0, 1000, 3).index(3000) is None


def test_stall_expression_is_evaluated_over_its_own_ten_minute_window(tmp_path: Path) -> None:
    # results stop at minute 12 while inputs continue: stalled once 10 minutes have no results
    run = write_run(tmp_path, simulated_run(minutes=30, stall_results_after_min=12))
    data = LocalMetrics(load_metrics_dir(run).points)
    tl = Timeline(T0_MS, 60_000, 30)
    (line,) = data.lines(specs.MARGIN_RESULTS_STALLED, tl)
    first_stalled_bucket = 12 + specs.STALL_MINUTES - 1
    assert line.values[:first_stalled_bucket] == [0.0] * first_stalled_bucket
    assert line.values[first_stalled_bucket:] == [1.0] * (30 - first_stalled_bucket)


def test_expression_fills_missing_inputs_with_zero() -> None:
    tl = Timeline(T0_MS, 60_000, 3)
    (line,) = LocalMetrics([]).lines(specs.ERROR_RATE, tl)
    assert line.values == [0.0, 0.0, 0.0]


def test_run_dir_or_metrics_dir_both_load(tmp_path: Path) -> None:
    run = write_run(tmp_path, simulated_run(minutes=2), ["not json"])
    a = load_metrics_dir(run)
    b = load_metrics_dir(run / "metrics")
    assert a.files == b.files == 2
    assert len(a.points) == len(b.points) > 0
    assert a.skipped_lines == 1
