"""Pipeline health report: is every stage (inputs -> Spark margin results -> enforcement
decisions -> audit objects) still moving, and which rule decided?

The same rules run over CloudWatch (`margin_risk.tools.cloudwatch_source.CloudWatchSource`)
in AWS and over a local run's EMF files (`LocalSource`). Thresholds come from `dashboards.specs`,
the module the alarms are made from, so the report and the alarms cannot disagree.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from dashboards import specs
from dashboards.local_metrics import LocalMetrics, load_metrics_dir, statistic
from margin_risk import names


class MetricSource(Protocol):
    """Where the report reads metrics from."""

    description: str

    def window(self, metric: specs.Metric, start: datetime, end: datetime) -> float | None:
        """The metric's statistic over ``[start, end)``; None without data."""
        ...

    def last_active(
        self, metric: specs.Metric, since: datetime, until: datetime
    ) -> datetime | None:
        """The latest time in ``[since, until)`` the metric was above zero."""
        ...


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


class LocalSource:
    """A local run's EMF files (``<run_dir>/metrics/*.jsonl``)."""

    def __init__(self, metrics: LocalMetrics, description: str = "local") -> None:
        self.metrics = metrics
        self.description = description

    @classmethod
    def from_dir(cls, path: Path) -> LocalSource:
        res = load_metrics_dir(path)
        desc = f"local EMF files in {path} ({res.files} files"
        desc += f", {res.skipped_lines} lines not EMF)" if res.skipped_lines else ")"
        return cls(LocalMetrics(res.points), desc)

    def latest(self) -> datetime | None:
        if not self.metrics.points:
            return None
        return datetime.fromtimestamp(max(p.ts_ms for p in self.metrics.points) / 1000, tz=UTC)

    def window(self, metric: specs.Metric, start: datetime, end: datetime) -> float | None:
        lo, hi = _ms(start), _ms(end)
        vals = [p.value for p in self.metrics.select(metric) if lo <= p.ts_ms < hi]
        return statistic(vals, metric.statistic)

    def last_active(
        self, metric: specs.Metric, since: datetime, until: datetime
    ) -> datetime | None:
        lo, hi = _ms(since), _ms(until)
        ts = [p.ts_ms for p in self.metrics.select(metric) if lo <= p.ts_ms < hi and p.value > 0]
        return datetime.fromtimestamp(max(ts) / 1000, tz=UTC) if ts else None


HEALTHY = frozenset({"OK", "IDLE", "WARNING"})
UNHEALTHY = frozenset({"STALLED", "DEGRADED"})
UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class StageHealth:
    stage: str
    metric: str
    last_activity: datetime | None
    count: float
    rate_per_min: float
    lag_seconds: float | None
    # OK, IDLE, WARNING (healthy) / STALLED, DEGRADED (unhealthy) / UNKNOWN (no data to judge)
    status: str
    rule: str
    details: dict[str, float] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.status in HEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "metric": self.metric,
            "last_activity": _iso(self.last_activity),
            "count": self.count,
            "rate_per_min": round(self.rate_per_min, 3),
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 1),
            "status": self.status,
            "healthy": self.healthy,
            "rule": self.rule,
            "details": self.details,
        }


@dataclass(frozen=True)
class HealthReport:
    source: str
    now: datetime
    window_minutes: int
    stages: list[StageHealth]

    @property
    def verdict(self) -> str:
        """UNHEALTHY when a stage is, else UNKNOWN when a stage has no data, else HEALTHY.

        No data is not good news: an empty or wrong metrics source must not read as healthy.
        """
        if any(s.status in UNHEALTHY for s in self.stages):
            return "UNHEALTHY"
        if any(s.status == UNKNOWN for s in self.stages):
            return "UNKNOWN"
        return "HEALTHY"

    @property
    def healthy(self) -> bool:
        return self.verdict == "HEALTHY"

    def unknown_reason(self) -> str:
        """One line: which stages have no data to judge, and why."""
        return "; ".join(f"{s.stage}: {s.rule}" for s in self.stages if s.status == UNKNOWN)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "as_of": _iso(self.now),
            "window_minutes": self.window_minutes,
            "verdict": self.verdict,
            "healthy": self.healthy,
            "stages": [s.to_dict() for s in self.stages],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self) -> str:
        head = (
            f"Pipeline health at {_iso(self.now)} (window {self.window_minutes} min, "
            f"source: {self.source}): {self.verdict}"
        )
        rows = [("stage", "status", "last activity", "lag", "count", "rate/min", "rule")]
        for s in self.stages:
            rows.append(
                (
                    s.stage,
                    s.status,
                    _iso(s.last_activity) or "never",
                    "-" if s.lag_seconds is None else f"{s.lag_seconds:.0f}s",
                    f"{s.count:g}",
                    f"{s.rate_per_min:.1f}",
                    s.rule,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        lines = [head]
        for r in rows:
            lines.append(
                "  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6]
            )
        return "\n".join(lines)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _sum(source: MetricSource, ms: Sequence[specs.Metric], start: datetime, end: datetime) -> float:
    return float(sum(source.window(m, start, end) or 0.0 for m in ms))


def _has_data(
    source: MetricSource, ms: Sequence[specs.Metric], since: datetime, until: datetime
) -> bool:
    """Any datapoint at all (a zero counts): evidence that the stage can be judged."""
    return any(source.window(m, since, until) is not None for m in ms)


def _last(
    source: MetricSource, ms: Sequence[specs.Metric], since: datetime, until: datetime
) -> datetime | None:
    times = [t for m in ms if (t := source.last_active(m, since, until)) is not None]
    return max(times) if times else None


INPUTS = (specs.spark(names.METRIC_INPUT_RECORDS),)
# Upstream of the inputs stage in AWS: messages into the MSK brokers (no such metric locally).
KAFKA_INPUTS = tuple(specs.msk_broker(b, 60) for b in range(1, specs.MAX_MSK_BROKERS + 1))
MARGIN_RESULTS = (specs.spark(names.METRIC_MARGIN_RESULTS),)
ALL_RESULTS = (*MARGIN_RESULTS, specs.spark(names.METRIC_STRESS_RESULTS))
ENFORCED = (specs.enf(names.METRIC_RECORDS_PROCESSED),)
FAILED = (specs.enf(names.METRIC_RECORDS_FAILED),)
DECISIONS = tuple(specs.enf(m) for m in sorted(names.DECISION_METRIC.values()))
AUDIT = (specs.enf(names.METRIC_AUDIT_OBJECTS),)


def build_report(
    source: MetricSource,
    now: datetime,
    window_minutes: int = specs.STALL_MINUTES,
    lookback_minutes: int = 24 * 60,
) -> HealthReport:
    """Evaluate every stage over the last ``window_minutes`` before ``now``.

    A stage is STALLED when its upstream produced in the window and it produced nothing
    (the alarms' "no margin results for N minutes while inputs arrive" rule, per stage);
    the enforcement stage is DEGRADED past the critical error-rate, latency or lag KPI and
    WARNING past a warning level. No upstream activity means IDLE, which is healthy, but only
    when there is data saying so: a stage with no datapoint of its own, of its upstream or of its
    ``evidence`` metrics over the whole lookback is UNKNOWN.
    """
    start = now - timedelta(minutes=window_minutes)
    since = now - timedelta(minutes=lookback_minutes)
    until = now + timedelta(milliseconds=1)  # include a point stamped exactly at `now`

    def stage(
        name: str,
        ms: Sequence[specs.Metric],
        upstream: Sequence[specs.Metric],
        upstream_name: str,
        evidence: Sequence[specs.Metric] = (),
    ) -> tuple[StageHealth, float]:
        count = _sum(source, ms, start, until)
        last = _last(source, ms, since, until)
        lag = None if last is None else (now - last).total_seconds()
        up = _sum(source, upstream, start, until)
        metric = "+".join(m.name for m in ms)
        if up > 0 and count == 0:
            status = "STALLED"
            rule = (
                f"{upstream_name} produced {up:g} in the last {window_minutes} min but {metric} = 0"
            )
        elif count > 0:
            status, rule = "OK", f"{metric} = {count:g} in the last {window_minutes} min"
        elif not _has_data(source, (*ms, *upstream, *evidence), since, until):
            status = UNKNOWN
            rule = f"no data for {metric} or {upstream_name} in the last {lookback_minutes} min"
        elif upstream is KAFKA_INPUTS:
            status, rule = "IDLE", f"no inputs in the last {window_minutes} min: nothing to do"
        else:
            status, rule = "IDLE", f"{upstream_name} idle in the last {window_minutes} min"
        sh = StageHealth(name, metric, last, count, count / window_minutes, lag, status, rule)
        return sh, count

    inputs, _ = stage("inputs", INPUTS, KAFKA_INPUTS, "Kafka brokers (MessagesInPerSec)")
    results, _ = stage("spark margin results", MARGIN_RESULTS, INPUTS, "inputs")
    enforce, _ = stage("enforcement decisions", ENFORCED, ALL_RESULTS, "Spark results")
    # Decisions are only counted when there are some; processed records show the stage runs.
    audit, _ = stage("audit objects", AUDIT, DECISIONS, "enforcement decisions", ENFORCED)
    enforce = _enforcement_kpis(source, enforce, start, until)
    return HealthReport(source.description, now, window_minutes, [inputs, results, enforce, audit])


# The enforcement stage's KPIs are its alarms (`dashboards.specs.ALARMS`), evaluated here over the
# report's window with the same thresholds: alarm id -> (detail key, label, unit, value format).
ENFORCEMENT_KPIS: dict[str, tuple[str, str, str, str]] = {
    "error-rate": ("error_rate_pct", "error rate", "%", ".2f"),
    "e2e-latency": ("e2e_latency_p99_ms", "e2e p99", " ms", ".0f"),
    "kafka-offset-lag": ("offset_lag_max", "OffsetLag", "", "g"),
    "lambda-duration": ("lambda_duration_p99_ms", "Lambda p99", " ms", ".0f"),
    "enforcement-falling-behind": ("backlog_pct", "backlog", "%", ".1f"),
}


def _series_value(
    source: MetricSource, series: specs.Series, start: datetime, until: datetime
) -> float | None:
    """A metric's statistic over the window, or an expression's value from its metrics' (None
    when none of them has data)."""
    if isinstance(series, specs.Expr):
        values = {k: source.window(m, start, until) for k, m in series.using.items()}
        if all(v is None for v in values.values()):
            return None
        return float(series.local({k: v or 0.0 for k, v in values.items()}))
    return source.window(series, start, until)


def _enforcement_kpis(
    source: MetricSource, sh: StageHealth, start: datetime, until: datetime
) -> StageHealth:
    """Evaluate the enforcement alarms over the window: DEGRADED past a critical level, WARNING
    past a warning level (a stage already STALLED or UNKNOWN keeps that status)."""
    details: dict[str, float] = {"records_failed": _sum(source, FAILED, start, until)}
    crit: list[str] = []
    warn: list[str] = []
    for alarm_id, (key, label, unit, fmt) in ENFORCEMENT_KPIS.items():
        alarm = specs.ALARMS_BY_ID[alarm_id]
        value = _series_value(source, alarm.series, start, until)
        if value is None:
            continue
        details[key] = round(value, 3)
        for level, threshold, into in (
            ("critical", alarm.critical, crit),
            ("warning", alarm.warning, warn),
        ):
            if threshold is not None and value > threshold:
                into.append(f"{label} {value:{fmt}}{unit} > {threshold:g}{unit} ({level})")
                break
    if sh.status in ("STALLED", UNKNOWN):
        return dataclasses.replace(sh, details=details)
    if crit:
        return dataclasses.replace(sh, status="DEGRADED", rule="; ".join(crit), details=details)
    if warn:
        return dataclasses.replace(sh, status="WARNING", rule="; ".join(warn), details=details)
    return dataclasses.replace(sh, details=details)


def local_report(
    path: Path, window_minutes: int = specs.STALL_MINUTES, source: LocalSource | None = None
) -> HealthReport:
    """The report of a local run, as of its last datapoint (a finished run is judged at its end)."""
    source = source if source is not None else LocalSource.from_dir(path)
    now = source.latest() or datetime.now(UTC)
    return build_report(source, now, window_minutes)


EXIT_HEALTHY, EXIT_INPUT, EXIT_UNHEALTHY, EXIT_UNKNOWN = 0, 1, 2, 3


def run_health(metrics_dir: str | None, aws: bool = False, as_json: bool = False) -> int:
    """``python -m margin_risk health``: 0 healthy, 2 unhealthy, 3 unknown (no data), 1 bad input.

    Without any datapoint the answer is one line on stderr saying why; with some stages unknown
    the report is printed and the same one line names them.
    """
    import sys

    if aws:
        from botocore.exceptions import BotoCoreError, ClientError

        from margin_risk.tools.cloudwatch_source import CloudWatchSource

        try:
            report = build_report(CloudWatchSource(), datetime.now(UTC))
        except (BotoCoreError, ClientError) as e:
            print(f"error: CloudWatch: {e}", file=sys.stderr)
            return EXIT_INPUT
    else:
        path = Path(metrics_dir or "")
        if not metrics_dir or not path.is_dir():
            print(f"error: {metrics_dir}: not a directory", file=sys.stderr)
            return EXIT_INPUT
        source = LocalSource.from_dir(path)
        if not source.metrics.points:
            print(f"health: UNKNOWN: no metric datapoints in {source.description}", file=sys.stderr)
            return EXIT_UNKNOWN
        report = local_report(path, source=source)
    print(report.to_json() if as_json else report.to_text())
    if report.verdict == "UNKNOWN":
        print(f"health: UNKNOWN: {report.unknown_reason()}", file=sys.stderr)
        return EXIT_UNKNOWN
    return EXIT_HEALTHY if report.healthy else EXIT_UNHEALTHY
