"""The dashboard and alarm specs, checked as data (nothing synthesized)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dashboards import queries, specs
from margin_risk import names

ROOT = Path(__file__).resolve().parents[2]

# The seed's KPIs (the operating KPIs): alarm id -> (namespace, metric or inputs, warning, critical).
KPI = {
    "lambda-errors": ("AWS/Lambda", "Errors", 0.0, 5.0),
    "kafka-offset-lag": ("AWS/Lambda", "OffsetLag", 100.0, 1000.0),
    "e2e-latency": (names.METRICS_NAMESPACE, names.METRIC_E2E_LATENCY, 10_000.0, 30_000.0),
    "error-rate": (names.METRICS_NAMESPACE, names.METRIC_RECORDS_FAILED, 0.5, 1.0),
    "emr-job-failed": ("AWS/EMRServerless", "FailedJobs", None, 0.0),
    "margin-results-stalled": (names.METRICS_NAMESPACE, names.METRIC_MARGIN_RESULTS, None, 0.0),
    "state-table-throttles": ("AWS/DynamoDB", "WriteThrottleEvents", 0.0, 50.0),
    "idempotency-table-throttles": ("AWS/DynamoDB", "WriteThrottleEvents", 0.0, 50.0),
    "on-failure-records": ("AWS/SQS", "ApproximateNumberOfMessagesVisible", None, 0.0),
}


def test_every_kpi_has_its_alarm_with_the_kpi_thresholds() -> None:
    for alarm_id, (ns, metric, warning, critical) in KPI.items():
        spec = specs.ALARMS_BY_ID[alarm_id]
        read = {(m.namespace, m.name) for m in specs.metrics_of(spec.series)}
        assert (ns, metric) in read, alarm_id
        assert (spec.warning, spec.critical) == (warning, critical), alarm_id


def test_lambda_errors_alarm_counts_errors_over_five_minutes() -> None:
    s = specs.ALARMS_BY_ID["lambda-errors"].series
    assert isinstance(s, specs.Metric)
    assert (s.statistic, s.period_s) == ("Sum", 300)


def test_latency_alarm_reads_the_p99_in_milliseconds_and_lag_the_maximum() -> None:
    lat = specs.ALARMS_BY_ID["e2e-latency"].series
    lag = specs.ALARMS_BY_ID["kafka-offset-lag"].series
    assert isinstance(lat, specs.Metric) and isinstance(lag, specs.Metric)
    assert lat.statistic == "p99" and lat.dimensions == {"service": names.SERVICE_ENFORCEMENT}
    assert lag.statistic == "Maximum"
    assert lag.dimensions == {"FunctionName": "{function_name}"}


def test_stall_alarm_fires_only_when_inputs_arrive_and_results_do_not() -> None:
    spec = specs.ALARMS_BY_ID["margin-results-stalled"]
    expr = spec.series
    assert isinstance(expr, specs.Expr)
    assert expr.period_s == specs.STALL_MINUTES * 60
    assert {m.name for m in expr.using.values()} == {
        names.METRIC_INPUT_RECORDS,
        names.METRIC_MARGIN_RESULTS,
    }
    assert expr.local({"inputs": 500, "results": 0}) > spec.critical
    assert expr.local({"inputs": 500, "results": 3}) <= spec.critical
    assert expr.local({}) <= spec.critical  # idle is not a stall


def test_error_rate_is_failed_over_all_records_in_percent() -> None:
    e = specs.ERROR_RATE
    assert e.local({"ok": 99, "failed": 1}) == pytest.approx(1.0)
    assert e.local({"ok": 0, "failed": 0}) == 0.0
    assert e.local({"ok": 98, "failed": 2}) > specs.ALARMS_BY_ID["error-rate"].critical


def test_alarm_ids_and_names_are_unique_and_every_alarm_has_a_level_and_guidance() -> None:
    ids = [a.id for a in specs.ALARMS]
    assert len(ids) == len(set(ids))
    alarm_names = [a.alarm_name(lvl) for a in specs.ALARMS for lvl, _ in a.levels()]
    assert len(alarm_names) == len(set(alarm_names))
    assert all(n.startswith(names.PROJECT + "-") and len(n) <= 255 for n in alarm_names)
    for a in specs.ALARMS:
        assert a.levels(), a.id
        assert a.meaning and a.action, a.id
        if a.warning is not None and a.critical is not None:
            assert a.warning < a.critical, a.id
        assert 1 <= a.datapoints_to_alarm <= a.evaluation_periods


def test_no_alarm_reads_a_search_expression() -> None:
    for a in specs.ALARMS:
        assert all(m.group_by is None for m in specs.metrics_of(a.series)), a.id


_FUNCS = {"IF", "FILL", "AND", "OR", "NOT"}


def _all_series() -> list[specs.Series]:
    out: list[specs.Series] = [a.series for a in specs.ALARMS]
    out += [s for d in specs.DASHBOARDS for w in d.widgets() for s in w.series]
    return out


def test_every_expression_names_exactly_its_inputs() -> None:
    for s in _all_series():
        if isinstance(s, specs.Expr):
            idents = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", s.expression)) - _FUNCS
            assert idents == set(s.using), s.id
            assert all(k[0].islower() for k in s.using), s.id  # CloudWatch id rule


def test_our_metrics_use_names_from_names_py_and_the_emitting_service() -> None:
    ours = {v for k, v in vars(names).items() if k.startswith("METRIC_")}
    spark_metrics = {
        names.METRIC_INPUT_RECORDS,
        names.METRIC_MARGIN_RESULTS,
        names.METRIC_STRESS_RESULTS,
        names.METRIC_SPARK_BATCH_DURATION,
    }
    for s in _all_series():
        for m in specs.metrics_of(s):
            if m.namespace != names.METRICS_NAMESPACE:
                assert m.namespace.startswith("AWS/"), m
                continue
            assert m.name in ours, m.name
            service = m.dimensions[names.DIM_SERVICE]
            if m.name in spark_metrics:
                assert service == names.SERVICE_SPARK, m
            elif m.name != names.METRIC_RECORDS_REJECTED:
                assert service == names.SERVICE_ENFORCEMENT, m


def test_dimension_placeholders_resolve_from_the_observed_resources() -> None:
    fields = {
        "function_name": "fn",
        "state_table_name": "st",
        "idempotency_table_name": "it",
        "on_failure_queue_name": "q",
        "emr_application_id": "app",
        "msk_cluster_name": "msk",
        "audit_bucket_name": "b",
    }
    for s in _all_series():
        for m in specs.metrics_of(s):
            dims = specs.resolve_dimensions(m, fields)
            assert not any("{" in v for v in dims.values()), m


def test_dashboards_cover_the_issue_widgets_and_fit_the_grid() -> None:
    assert [d.name for d in specs.DASHBOARDS] == [names.OPS_DASHBOARD, names.RISK_DASHBOARD]
    ops = {
        m.name for w in specs.OPERATIONS.widgets() for s in w.series for m in specs.metrics_of(s)
    }
    for needed in (
        "Invocations", "Errors", "Duration", "Throttles", "ConcurrentExecutions", "OffsetLag",
        "FailedJobs", "CPUAllocated", "ReadThrottleEvents", "SuccessfulRequestLatency",
        names.METRIC_AUDIT_OBJECTS, names.METRIC_INPUT_RECORDS, names.METRIC_RECORDS_PROCESSED,
    ):  # fmt: skip
        assert needed in ops, needed
    risk = {m.name for w in specs.RISK.widgets() for s in w.series for m in specs.metrics_of(s)}
    for needed in (
        names.METRIC_MARGIN_CALLS_ISSUED, names.METRIC_MARGIN_CALLS_MET, names.METRIC_LIQUIDATIONS,
        names.METRIC_STRESS_BREACHES, names.METRIC_TOTAL_DEFICIENCY, names.METRIC_RECORDS_REJECTED,
        names.METRIC_E2E_LATENCY,
    ):  # fmt: skip
        assert needed in risk, needed
    stats = {
        s.statistic
        for w in specs.RISK.widgets()
        for s in w.series
        if isinstance(s, specs.Metric) and s.name == names.METRIC_E2E_LATENCY
    }
    assert stats == {"p50", "p95", "p99"}
    for d in specs.DASHBOARDS:
        for w in d.widgets():
            assert 1 <= w.width <= 24 and w.series, w.title
            if w.alarm is not None:
                assert w.alarm in specs.ALARMS_BY_ID


def test_log_queries_cover_tracing_errors_rejects_and_slow_batches() -> None:
    by_id = {q.id: q for q in queries.QUERIES}
    assert set(by_id) == {
        "trace-margin-call",
        "errors-by-component",
        "rejected-records-by-reason",
        "slowest-batches",
    }
    assert "correlation_id" in by_id["trace-margin-call"].query
    assert set(by_id["trace-margin-call"].sources) == {"lambda", "spark"}
    assert names.DIM_REASON in by_id["rejected-records-by-reason"].query
    groups = queries.log_group_names(by_id["trace-margin-call"], "fn", "/spark")
    assert groups == ["/aws/lambda/fn", "/spark"]


def test_the_runbook_explains_every_alarm() -> None:
    text = (ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    for a in specs.ALARMS:
        assert f'<a id="{a.id}"></a>' in text, a.id
    assert f'<a id="{specs.COMPOSITE_ALARM_ID}"></a>' in text
