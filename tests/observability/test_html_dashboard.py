"""The static HTML dashboard rendered from a local run's EMF files, opened in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from dashboards import specs
from dashboards.chromium import dump_dom, screenshot
from dashboards.html_render import write_dashboard
from margin_risk import names
from margin_risk.tools.cli import main
from tests.observability.emf import simulated_run, write_run

ROOT = Path(__file__).resolve().parents[2]
ALL_WIDGETS = [w for d in specs.DASHBOARDS for w in d.widgets()]


class _Widgets(HTMLParser):
    """Collects each widget figure's attributes and the SVG elements drawn inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.widgets: list[dict[str, str | int]] = []
        self.scripts = 0
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if key in a and re.match(r"(https?:)?//", a[key]):
                self.external.append(a[key])
        if tag == "figure" and "widget" in a.get("class", "").split():
            self.widgets.append({**a, "polylines": 0, "points_drawn": 0, "thresholds": 0})
        elif self.widgets and tag == "polyline":
            w = self.widgets[-1]
            w["polylines"] = int(w["polylines"]) + 1
            w["points_drawn"] = int(w["points_drawn"]) + len(a.get("points", "").split())
        elif self.widgets and tag == "line" and "threshold" in a.get("class", ""):
            w = self.widgets[-1]
            w["thresholds"] = int(w["thresholds"]) + 1


def _parse(html: str) -> _Widgets:
    p = _Widgets()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("dash")
    run = write_run(
        base / "run",
        simulated_run(minutes=20, latency_ms=(2_000.0, 14_000.0)),
        ["START RequestId: 1 Version: $LATEST", "{not json"],
    )
    return write_dashboard(base / "out", run)


def test_every_spec_widget_is_on_the_page_and_the_page_is_self_contained(rendered: Path) -> None:
    page = _parse(rendered.read_text(encoding="utf-8"))
    assert [w["data-title"] for w in page.widgets] == [w.title for w in ALL_WIDGETS]
    assert page.scripts == 0 and page.external == []


def test_widgets_with_local_data_are_drawn_and_aws_only_ones_say_so(rendered: Path) -> None:
    page = _parse(rendered.read_text(encoding="utf-8"))
    by_title = {str(w["data-title"]): w for w in page.widgets}
    for spec in ALL_WIDGETS:
        w = by_title[spec.title]
        ours = any(
            m.namespace == names.METRICS_NAMESPACE for s in spec.series for m in specs.metrics_of(s)
        )
        if ours:
            assert w["data-state"] == "drawn", spec.title
            if spec.kind != "number":
                assert int(w["polylines"]) >= 1 and int(w["points_drawn"]) >= 20, spec.title
        else:
            assert w["data-state"] == "aws-only", spec.title
    throughput = by_title["Stage throughput (records per period)"]
    assert throughput["polylines"] == 5
    rejected = by_title["Rejected records by reason"]
    assert int(rejected["polylines"]) >= 3  # one line per reason
    latency = by_title["End-to-end latency p50 / p95 / p99"]
    assert latency["thresholds"] == 1  # warning 10 s within range; critical 30 s is off scale


def test_chromium_draws_the_widgets_and_takes_a_screenshot(rendered: Path, tmp_path: Path) -> None:
    dom = _parse(dump_dom(rendered))
    assert len(dom.widgets) == len(ALL_WIDGETS)
    drawn = [w for w in dom.widgets if w["data-state"] == "drawn"]
    assert len(drawn) >= 15
    assert sum(int(w["polylines"]) for w in dom.widgets) >= 25
    png = screenshot(rendered, tmp_path / "dashboard.png")
    head = png.read_bytes()
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 50_000  # a blank page of this size compresses to a few KB
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(png, ROOT / "docs" / "dashboard.png")


def test_cli_dashboard_writes_index_html(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run", simulated_run(minutes=2))
    assert main(["dashboard", "--out", str(tmp_path / "site"), "--metrics-dir", str(run)]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page == tmp_path / "site" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "Pipeline health" in html and names.OPS_DASHBOARD in html
    assert main(["dashboard", "--out", str(tmp_path / "empty")]) == 0
    empty = _parse((tmp_path / "empty" / "index.html").read_text(encoding="utf-8"))
    assert {w["data-state"] for w in empty.widgets} <= {"empty", "aws-only"}
