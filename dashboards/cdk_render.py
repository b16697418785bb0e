"""The one small factory that renders `dashboards.specs` into CloudWatch dashboards and alarms.

The CDK ObservabilityStack calls `add_observability` with the deployed resource names and the
alarm SNS topic; everything else (metrics, thresholds, layout) comes from the specs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from constructs import Construct

from dashboards import queries, specs
from margin_risk import names

_MISSING = {
    "notBreaching": cw.TreatMissingData.NOT_BREACHING,
    "breaching": cw.TreatMissingData.BREACHING,
    "ignore": cw.TreatMissingData.IGNORE,
    "missing": cw.TreatMissingData.MISSING,
}
_LEVEL_COLOR = {"warning": "#ff9900", "critical": "#d13212"}


@dataclass(frozen=True)
class ObservedResources:
    """Names of the deployed resources the dashboards and alarms watch."""

    function_name: str
    state_table_name: str
    idempotency_table_name: str
    on_failure_queue_name: str
    emr_application_id: str
    msk_cluster_name: str
    audit_bucket_name: str
    spark_log_group_name: str = names.SPARK_LOG_GROUP

    def as_mapping(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def _metric(m: specs.Metric, res: ObservedResources) -> cw.IMetric:
    dims = specs.resolve_dimensions(m, res.as_mapping())
    if m.group_by is not None:
        return cw.MathExpression(
            expression=search_expression(m, dims),
            using_metrics={},
            label=m.label,
            period=Duration.seconds(m.period_s),
        )
    return cw.Metric(
        namespace=m.namespace,
        metric_name=m.name,
        dimensions_map=dims,
        statistic=m.statistic,
        period=Duration.seconds(m.period_s),
        label=m.title,
    )


def search_expression(m: specs.Metric, dims: dict[str, str]) -> str:
    """A SEARCH over the metric's dimension set plus ``group_by``: one line per value."""
    assert m.group_by is not None
    schema = ",".join([m.namespace, *sorted([*dims, m.group_by])])
    filters = " ".join(f'"{k}"="{v}"' for k, v in sorted(dims.items()))
    query = f'{{{schema}}} MetricName="{m.name}" {filters}'
    return f"SEARCH('{query}', '{m.statistic}', {m.period_s})"


def render_series(s: specs.Series, res: ObservedResources) -> cw.IMetric:
    if isinstance(s, specs.Metric):
        return _metric(s, res)
    return cw.MathExpression(
        expression=s.expression,
        using_metrics={k: _metric(m, res) for k, m in s.using.items()},
        label=s.label,
        period=Duration.seconds(s.period_s),
    )


def _annotations(alarm_id: str | None) -> list[cw.HorizontalAnnotation]:
    if alarm_id is None:
        return []
    spec = specs.ALARMS_BY_ID[alarm_id]
    return [
        cw.HorizontalAnnotation(value=v, label=f"{level} > {v:g}", color=_LEVEL_COLOR[level])
        for level, v in spec.levels()
    ]


def render_widget(w: specs.Widget, res: ObservedResources) -> cw.IWidget:
    metrics = [render_series(s, res) for s in w.series]
    if w.kind == "number":
        return cw.SingleValueWidget(
            title=w.title,
            metrics=metrics,
            width=w.width,
            height=w.height,
            set_period_to_time_range=True,
        )
    return cw.GraphWidget(
        title=w.title,
        left=metrics,
        left_annotations=_annotations(w.alarm),
        left_y_axis=cw.YAxisProps(label=w.unit, show_units=False) if w.unit else None,
        stacked=w.kind == "stacked",
        width=w.width,
        height=w.height,
    )


def render_dashboard(
    scope: Construct, spec: specs.DashboardSpec, res: ObservedResources
) -> cw.Dashboard:
    rows: list[list[cw.IWidget]] = []
    for section in spec.sections:
        rows.append([cw.TextWidget(markdown=f"## {section.title}", width=24, height=1)])
        rows.append([render_widget(w, res) for w in section.widgets])
    return cw.Dashboard(
        scope,
        "".join(p.capitalize() for p in spec.name.split("-")),
        dashboard_name=spec.name,
        widgets=rows,
    )


def render_alarms(
    scope: Construct, spec: specs.AlarmSpec, res: ObservedResources, topic: sns.ITopic
) -> list[cw.Alarm]:
    if isinstance(spec.series, specs.Metric) and spec.series.group_by is not None:
        raise ValueError(f"{spec.id}: a SEARCH expression cannot be alarmed on")
    out: list[cw.Alarm] = []
    for level, threshold in spec.levels():
        alarm = cw.Alarm(
            scope,
            f"{spec.id}-{level}",
            alarm_name=spec.alarm_name(level),
            alarm_description=f"[{level.upper()}] {spec.title} > {threshold:g}. "
            f"{spec.meaning} Action: {spec.action} Runbook: docs/runbook.md#{spec.id}",
            metric=render_series(spec.series, res),
            threshold=threshold,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=spec.evaluation_periods,
            datapoints_to_alarm=spec.datapoints_to_alarm,
            treat_missing_data=_MISSING[spec.missing],
        )
        alarm.add_alarm_action(cw_actions.SnsAction(topic))
        if level == "critical":
            alarm.add_ok_action(cw_actions.SnsAction(topic))
        out.append(alarm)
    return out


def add_observability(
    scope: Construct, resources: ObservedResources, alarm_topic: sns.ITopic
) -> list[cw.Alarm]:
    """Create both dashboards, every alarm (action: ``alarm_topic``), the composite
    "pipeline unhealthy" alarm and the Logs Insights query definitions. Returns the metric alarms
    (warning and critical); the composite alarm is the child construct ``PipelineUnhealthy``."""
    for d in specs.DASHBOARDS:
        render_dashboard(scope, d, resources)
    alarms: list[cw.Alarm] = []
    critical: list[cw.Alarm] = []
    for spec in specs.ALARMS:
        made = render_alarms(scope, spec, resources, alarm_topic)
        alarms.extend(made)
        levels = [lvl for lvl, _ in spec.levels()]
        critical.extend(a for a, lvl in zip(made, levels, strict=True) if lvl == "critical")
    composite = cw.CompositeAlarm(
        scope,
        "PipelineUnhealthy",
        composite_alarm_name=specs.composite_alarm_name(),
        alarm_description="Pipeline unhealthy: at least one critical alarm is in ALARM. "
        "Runbook: docs/runbook.md#pipeline-unhealthy",
        alarm_rule=cw.AlarmRule.any_of(
            *[cw.AlarmRule.from_alarm(a, cw.AlarmState.ALARM) for a in critical]
        ),
    )
    composite.add_alarm_action(cw_actions.SnsAction(alarm_topic))
    composite.add_ok_action(cw_actions.SnsAction(alarm_topic))
    for q in queries.QUERIES:
        logs.CfnQueryDefinition(
            scope,
            f"Query-{q.id}",
            name=q.name(),
            query_string=q.query,
            log_group_names=queries.log_group_names(
                q, resources.function_name, resources.spark_log_group_name
            ),
        )
    return alarms
