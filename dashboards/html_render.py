"""A static HTML rendering of the dashboard specs, fed by a local run's EMF metrics.

One self-contained page: inline CSS and inline SVG charts, no script and nothing fetched, so it
opens offline and in headless Chromium. Every widget is a ``<figure class="widget">`` whose
``data-state`` says what was drawn (``drawn``, ``empty`` or ``aws-only``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from dashboards import specs
from dashboards.local_metrics import Line, LocalMetrics, Timeline, load_metrics_dir, timeline_for

# Series colours avoid the orange and red of the warning and critical threshold lines.
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
LEVEL_COLOR = {"warning": "#e07b00", "critical": "#d13212"}
UNIT_W = 50  # SVG user units per dashboard grid column (24 columns)
CHART_H = 190
PAD_L, PAD_R, PAD_T, PAD_B = 52, 12, 12, 30

CSS = """
body{font-family:Arial,Helvetica,sans-serif;margin:16px;background:#f2f3f3;color:#16191f}
h1{font-size:20px;margin:18px 0 6px}h2{font-size:15px;margin:14px 0 6px;color:#545b64}
.meta{font-size:12px;color:#545b64}
.grid{display:grid;grid-template-columns:repeat(24,1fr);gap:8px}
.widget{background:#fff;border:1px solid #d5dbdb;margin:0;padding:6px 8px;min-width:0}
.widget figcaption{font-size:13px;font-weight:bold;margin-bottom:2px}
.widget svg{width:100%;height:auto;display:block}
.legend{font-size:11px;display:flex;flex-wrap:wrap;gap:4px 10px;margin-top:2px}
.legend span:before{content:"";display:inline-block;width:10px;height:3px;margin-right:4px;
vertical-align:middle;background:var(--c)}
.number{font-size:34px;font-weight:bold;padding:18px 4px}
table{border-collapse:collapse;font-size:12px;background:#fff}
td,th{border:1px solid #d5dbdb;padding:3px 6px;text-align:left}
.OK,.IDLE{color:#1d8102}.WARNING{color:#e07b00}.STALLED,.DEGRADED{color:#d13212;font-weight:bold}
"""


def _e(s: object) -> str:
    return html.escape(str(s), quote=True)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(v))
    return next(m * scale for m in (1.0, 2.0, 2.5, 5.0, 10.0, 20.0) if m * scale >= v)


def _fmt(v: float) -> str:
    if abs(v) >= 1e6:
        return f"{v / 1e6:.3g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.3g}"


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


def _stack(lines: Sequence[Line]) -> list[Line]:
    acc: list[float] = [0.0] * (len(lines[0].values) if lines else 0)
    out = []
    for ln in lines:
        acc = [a + (v or 0.0) for a, v in zip(acc, ln.values, strict=True)]
        out.append(Line(ln.label, [*acc]))
    return out


def _chart_svg(
    lines: Sequence[Line],
    tl: Timeline,
    width_units: int,
    thresholds: Sequence[tuple[str, float]],
    stacked: bool,
) -> tuple[str, int]:
    """The SVG of a graph widget, and the number of datapoints drawn."""
    w = width_units * UNIT_W
    pw, ph = w - PAD_L - PAD_R, CHART_H - PAD_T - PAD_B
    drawn = _stack(lines) if stacked else list(lines)
    vmax = max((v for ln in drawn for v in ln.values if v is not None), default=0.0)
    shown = [(lvl, t) for lvl, t in thresholds if vmax > 0 and t <= 2 * vmax]
    ymax = _nice_max(max([vmax * 1.05, *(t * 1.1 for _, t in shown)], default=1.0))

    def x(i: int) -> float:
        return PAD_L + (pw * (i + 0.5) / tl.n)

    def y(v: float) -> float:
        return PAD_T + ph * (1 - v / ymax)

    parts = [
        f'<svg viewBox="0 0 {w} {CHART_H}" xmlns="http://www.w3.org/2000/svg" role="img">',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="#fff" stroke="#d5dbdb"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        yy = y(ymax * frac)
        parts.append(
            f'<line class="grid" x1="{PAD_L}" x2="{PAD_L + pw}" y1="{yy:.1f}" y2="{yy:.1f}" '
            'stroke="#eaeded"/>'
            f'<text x="{PAD_L - 4}" y="{yy + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#545b64">{_fmt(ymax * frac)}</text>'
        )
    for i in sorted({0, tl.n // 2, tl.n - 1}):
        anchor = "start" if i == 0 else "end" if i == tl.n - 1 else "middle"
        xx = PAD_L if i == 0 else PAD_L + pw if i == tl.n - 1 else x(i)
        parts.append(
            f'<text x="{xx:.1f}" y="{CHART_H - 10}" font-size="11" text-anchor="{anchor}" '
            f'fill="#545b64">{_time(tl.start_ms + i * tl.period_ms)}</text>'
        )
    points = 0
    for k, ln in enumerate(drawn):
        color = PALETTE[k % len(PALETTE)]
        segs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(ln.values):
            if v is None:
                segs.append([])
            else:
                segs[-1].append((x(i), y(v)))
                points += 1
        for seg in (s for s in segs if s):
            pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
            if stacked:
                base = f"{seg[-1][0]:.1f},{y(0):.1f} {seg[0][0]:.1f},{y(0):.1f}"
                parts.append(
                    f'<polygon class="area" points="{pts} {base}" fill="{color}" '
                    'fill-opacity="0.25" stroke="none"/>'
                )
            parts.append(
                f'<polyline class="series" data-label="{_e(ln.label)}" points="{pts}" '
                f'fill="none" stroke="{color}" stroke-width="2"/>'
            )
            if len(seg) <= 40:
                parts.extend(
                    f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>' for a, b in seg
                )
    for lvl, t in shown:
        yy = y(t)
        parts.append(
            f'<line class="threshold {lvl}" x1="{PAD_L}" x2="{PAD_L + pw}" y1="{yy:.1f}" '
            f'y2="{yy:.1f}" stroke="{LEVEL_COLOR[lvl]}" stroke-dasharray="6 4" stroke-width="1.5"/>'
            f'<text x="{PAD_L + pw - 4}" y="{yy - 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="{LEVEL_COLOR[lvl]}">{lvl} &gt; {_fmt(t)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts), points


def _placeholder(width_units: int, text: str) -> str:
    w = width_units * UNIT_W
    return (
        f'<svg viewBox="0 0 {w} {CHART_H}" xmlns="http://www.w3.org/2000/svg" role="img">'
        f'<rect x="1" y="1" width="{w - 2}" height="{CHART_H - 2}" fill="#fafafa" '
        'stroke="#d5dbdb" stroke-dasharray="4 4"/>'
        f'<text x="{w / 2}" y="{CHART_H / 2}" font-size="13" text-anchor="middle" '
        f'fill="#879596">{_e(text)}</text></svg>'
    )


def _legend(labels: Sequence[str], thresholds: Sequence[tuple[str, float]]) -> str:
    items = [
        f'<span style="--c:{PALETTE[i % len(PALETTE)]}">{_e(lb)}</span>'
        for i, lb in enumerate(labels)
    ]
    items += [
        f'<span style="--c:{LEVEL_COLOR[lvl]}">{lvl} &gt; {_fmt(t)}</span>' for lvl, t in thresholds
    ]
    return f'<div class="legend">{"".join(items)}</div>'


def render_widget(w: specs.Widget, data: LocalMetrics, tl: Timeline) -> str:
    thresholds = specs.ALARMS_BY_ID[w.alarm].levels() if w.alarm else []
    has = [s for s in w.series if data.has_data(s)]
    aws_only = all(m.namespace.startswith("AWS/") for s in w.series for m in specs.metrics_of(s))
    if not has:
        state = "aws-only" if aws_only else "empty"
        text = "CloudWatch only: no local data" if aws_only else "no data in this run"
        body = _placeholder(w.width, text)
        labels = [s.title for s in w.series]
        npoints = 0
    elif w.kind == "number":
        state = "drawn"
        vals = [(s.title, data.total(s)) for s in w.series]
        body = "".join(
            f'<div class="number" data-label="{_e(lb)}">{_fmt(v or 0.0)}</div>' for lb, v in vals
        )
        labels = [lb for lb, _ in vals]
        npoints = len(vals)
    else:
        state = "drawn"
        lines = [ln for s in w.series for ln in data.lines(s, tl)]
        body, npoints = _chart_svg(lines, tl, w.width, thresholds, w.kind == "stacked")
        labels = [ln.label for ln in lines]
    unit = f" ({_e(w.unit)})" if w.unit else ""
    return (
        f'<figure class="widget" style="grid-column:span {w.width}" data-title="{_e(w.title)}" '
        f'data-kind="{w.kind}" data-state="{state}" data-points="{npoints}">'
        f"<figcaption>{_e(w.title)}{unit}</figcaption>{body}{_legend(labels, thresholds)}"
        "</figure>"
    )


def render_dashboard(d: specs.DashboardSpec, data: LocalMetrics, tl: Timeline) -> str:
    out = [f'<section class="dashboard" id="{_e(d.name)}"><h1>{_e(d.title)}</h1>']
    for s in d.sections:
        out.append(f'<h2>{_e(s.title)}</h2><div class="grid">')
        out.extend(render_widget(w, data, tl) for w in s.widgets)
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def _alarm_table() -> str:
    rows = "".join(
        f"<tr><td>{_e(a.id)}</td><td>{_e(a.title)}</td>"
        f"<td>{'' if a.warning is None else '&gt; ' + _fmt(a.warning)}</td>"
        f"<td>{'' if a.critical is None else '&gt; ' + _fmt(a.critical)}</td></tr>"
        for a in specs.ALARMS
    )
    return (
        '<section id="alarms"><h1>Alarms (CloudWatch, all to one SNS topic)</h1><table>'
        "<tr><th>id</th><th>alarm</th><th>warning</th><th>critical</th></tr>"
        f"{rows}</table></section>"
    )


def render_page(data: LocalMetrics, source: str, health_html: str = "") -> str:
    tl = timeline_for(data.points)
    period_s = tl.period_ms // 1000
    span = (
        f"{_time(tl.start_ms)} to {_time(tl.end_ms)} UTC, {period_s} s per point"
        if data.points
        else "no datapoints"
    )
    body = "".join(render_dashboard(d, data, tl) for d in specs.DASHBOARDS)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>Margin risk monitor dashboards</title>"
        f"<style>{CSS}</style></head><body>"
        f'<p class="meta">Source: {_e(source)}; {len(data.points)} datapoints; {span}. '
        "Same specs as the CloudWatch dashboards; AWS/* metrics exist only in CloudWatch.</p>"
        f"{health_html}{body}{_alarm_table()}</body></html>"
    )


def write_dashboard(out_dir: Path, metrics_dir: Path | None) -> Path:
    """Render ``out_dir/index.html`` from the EMF files under ``metrics_dir`` (none: empty)."""
    from margin_risk.tools.health import LocalSource, local_report

    if metrics_dir is not None:
        res = load_metrics_dir(metrics_dir)
        data = LocalMetrics(res.points)
        source = f"{metrics_dir} ({res.files} files, {res.skipped_lines} non-EMF lines skipped)"
        report = local_report(metrics_dir) if res.points else None
    else:
        data, source, report = LocalSource(LocalMetrics([])).metrics, "no metrics", None
    health = ""
    if report is not None:
        rows = "".join(
            f'<tr><td>{_e(s.stage)}</td><td class="{s.status}">{s.status}</td>'
            f"<td>{s.count:g}</td><td>{s.rate_per_min:.1f}</td><td>{_e(s.rule)}</td></tr>"
            for s in report.stages
        )
        verdict = report.verdict
        health = (
            f'<section id="health"><h1>Pipeline health: <span class="'
            f'{"OK" if report.healthy else "STALLED"}">{verdict}</span></h1><table>'
            "<tr><th>stage</th><th>status</th><th>count</th><th>rate/min</th><th>rule</th></tr>"
            f"{rows}</table></section>"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "index.html"
    page.write_text(render_page(data, source, health), encoding="utf-8")
    return page


def run_dashboard(out: str, metrics_dir: str | None) -> int:
    """``python -m margin_risk dashboard``: 0 written, 1 bad input."""
    import sys

    if metrics_dir is not None and not Path(metrics_dir).is_dir():
        print(f"error: {metrics_dir}: not a directory", file=sys.stderr)
        return 1
    try:
        page = write_dashboard(Path(out), Path(metrics_dir) if metrics_dir else None)
    except OSError as e:
        print(f"error: {out}: cannot write the page: {e.strerror or e}", file=sys.stderr)
        return 1
    print(page)
    return 0
