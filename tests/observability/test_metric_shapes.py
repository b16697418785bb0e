"""Every metric a dashboard widget or an alarm reads is a shape AWS (or our code) publishes at
the environment's MSK monitoring level (`dashboards.aws_metrics`): a query for any other
dimension set returns no data, so its alarm could never fire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashboards import aws_metrics, specs
from stacks.config import load_environments

ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = load_environments(
    json.loads((ROOT / "cdk.json").read_text())["context"]["environments"]
)


def _queried(m: specs.Metric) -> frozenset[str]:
    """The dimension set a query asks for (a SEARCH's group-by dimension is part of its schema)."""
    return frozenset([*m.dimensions, *([m.group_by] if m.group_by else [])])


def _unpublished(series: specs.Series, level: str) -> list[str]:
    return [
        f"{m.namespace} {m.name} {sorted(_queried(m))}"
        for m in specs.metrics_of(series)
        if aws_metrics.published(m.namespace, m.name, _queried(m), level) is None
    ]


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_every_alarm_reads_only_published_metric_shapes(env: str) -> None:
    level = ENVIRONMENTS[env].msk.enhanced_monitoring
    bad = {a.id: _unpublished(a.series, level) for a in specs.ALARMS}
    assert {k: v for k, v in bad.items() if v} == {}, f"never published at {level}"


@pytest.mark.parametrize("env", sorted(ENVIRONMENTS))
def test_every_dashboard_widget_reads_only_published_metric_shapes(env: str) -> None:
    level = ENVIRONMENTS[env].msk.enhanced_monitoring
    bad = {
        f"{d.name}: {w.title}": u
        for d in specs.DASHBOARDS
        for w in d.widgets()
        for s in w.series
        if (u := _unpublished(s, level))
    }
    assert bad == {}, f"never published at {level}"


def test_the_table_knows_msk_topic_metrics_only_from_per_topic_per_broker_on() -> None:
    topic = frozenset({"Cluster Name", "Broker ID", "Topic"})
    broker = frozenset({"Cluster Name", "Broker ID"})
    assert aws_metrics.published("AWS/Kafka", "MessagesInPerSec", topic, "PER_BROKER") is None
    assert aws_metrics.published("AWS/Kafka", "MessagesInPerSec", topic, "PER_TOPIC_PER_BROKER")
    assert aws_metrics.published("AWS/Kafka", "MessagesInPerSec", broker, "DEFAULT")
    # {Cluster Name, Topic} is the MSK Serverless shape, never a provisioned cluster's
    no_broker = frozenset({"Cluster Name", "Topic"})
    for level in aws_metrics.MSK_LEVELS:
        assert aws_metrics.published("AWS/Kafka", "MessagesInPerSec", no_broker, level) is None
    with pytest.raises(ValueError, match="unknown MSK monitoring level"):
        aws_metrics.published("AWS/Kafka", "MessagesInPerSec", broker, "PER_TOPIC")


def test_every_row_is_cited() -> None:
    for row in aws_metrics.PUBLISHED:
        assert row.source, row
        if row.namespace.startswith("AWS/"):
            assert "https://docs.aws.amazon.com/" in row.source, row
        assert (row.msk_level is not None) == (row.namespace == "AWS/Kafka"), row
