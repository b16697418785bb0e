"""Local metrics: CloudWatch EMF JSON lines from a local run, queried like CloudWatch would.

Reads ``<run_dir>/metrics/*.jsonl`` (or any directory of ``*.jsonl``): Powertools' EMF output and
hand-written EMF alike. Lines that are not EMF (log lines, blank lines, broken JSON) are skipped
and counted. Each EMF dimension set becomes its own datapoint, as in CloudWatch, and a metric
spec matches a datapoint when their dimension sets are equal; the one leniency is a missing
``service`` dimension (hand-written EMF often leaves it out), which matches any service.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboards.specs import Expr, Metric, Series
from margin_risk import names

# EMF timestamps are epoch milliseconds; beyond year 9999 no datetime can hold them.
MAX_TIMESTAMP_MS = 253_402_300_800_000


@dataclass(frozen=True)
class Datapoint:
    namespace: str
    name: str
    dimensions: Mapping[str, str]
    ts_ms: int
    value: float
    unit: str = ""


@dataclass
class LoadResult:
    points: list[Datapoint] = field(default_factory=list)
    files: int = 0
    skipped_lines: int = 0


def _values(raw: Any) -> list[float]:
    items = raw if isinstance(raw, list) else [raw]
    out: list[float] = []
    for x in items:
        if isinstance(x, bool) or not isinstance(x, int | float):
            continue
        if math.isfinite(x):
            out.append(float(x))
    return out


def parse_emf(obj: Mapping[str, Any]) -> list[Datapoint]:
    """The datapoints of one EMF object (empty when it is not EMF)."""
    meta = obj.get("_aws")
    if not isinstance(meta, dict):
        return []
    ts = meta.get("Timestamp")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(ts, int | float) or not isinstance(directives, list):
        return []
    if not 0 <= ts < MAX_TIMESTAMP_MS:  # NaN fails too
        return []
    out: list[Datapoint] = []
    for d in directives:
        if not isinstance(d, dict):
            continue
        ns = str(d.get("Namespace", ""))
        dim_sets = d.get("Dimensions") or [[]]
        for m in d.get("Metrics") or []:
            name = m.get("Name") if isinstance(m, dict) else None
            if not isinstance(name, str) or name not in obj:
                continue
            unit = str(m.get("Unit", ""))
            for dim_set in dim_sets:
                dims = {str(k): str(obj[k]) for k in dim_set if k in obj}
                for v in _values(obj[name]):
                    out.append(Datapoint(ns, name, dims, int(ts), v, unit))
    return out


def metrics_files(path: Path) -> list[Path]:
    """``*.jsonl`` under ``path/metrics`` when it exists (a run dir), else under ``path``."""
    root = path / "metrics" if (path / "metrics").is_dir() else path
    return sorted(p for p in root.rglob("*.jsonl") if p.is_file())


def load_lines(lines: Iterable[str], result: LoadResult | None = None) -> LoadResult:
    res = result if result is not None else LoadResult()
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # broken, or hostile (4,300+ digits, deep nesting)
            res.skipped_lines += 1
            continue
        pts = parse_emf(obj) if isinstance(obj, dict) else []
        if not pts:
            res.skipped_lines += 1
        res.points.extend(pts)
    return res


def load_metrics_dir(path: Path) -> LoadResult:
    res = LoadResult()
    for f in metrics_files(path):
        res.files += 1
        with f.open(encoding="utf-8", errors="replace") as fh:
            load_lines(fh, res)
    return res


def matches(m: Metric, dp: Datapoint) -> bool:
    """Same namespace, name and dimension set (``group_by`` may be any value)."""
    if dp.namespace != m.namespace or dp.name != m.name:
        return False
    want = dict(m.dimensions)
    have = dict(dp.dimensions)
    if m.group_by is not None:
        if m.group_by not in have:
            return False
        have.pop(m.group_by)
    if names.DIM_SERVICE in want and names.DIM_SERVICE not in have:
        want.pop(names.DIM_SERVICE)
    return want == have


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100), as CloudWatch's pNN: the smallest value with at
    least q% of the values at or below it; None when there are none. The one definition the
    dashboards, the demo and the benchmarks share."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def statistic(values: Sequence[float], stat: str) -> float | None:
    """CloudWatch statistics over raw values: Sum, Average, Minimum, Maximum, SampleCount, pNN."""
    if not values:
        return None
    s = stat.lower()
    if s == "sum":
        return float(sum(values))
    if s == "average":
        return float(sum(values) / len(values))
    if s == "minimum":
        return float(min(values))
    if s == "maximum":
        return float(max(values))
    if s == "samplecount":
        return float(len(values))
    if s.startswith("p"):
        return percentile(values, float(s[1:]))
    raise ValueError(f"unsupported statistic {stat!r}")


@dataclass(frozen=True)
class Timeline:
    """Buckets ``[start_ms + i*period_ms, +period_ms)`` for ``i < n``."""

    start_ms: int
    period_ms: int
    n: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.period_ms * self.n

    def index(self, ts_ms: int) -> int | None:
        i = (ts_ms - self.start_ms) // self.period_ms
        return int(i) if 0 <= i < self.n else None


_NICE_PERIODS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def timeline_for(points: Sequence[Datapoint], max_buckets: int = 60) -> Timeline:
    """A timeline covering every point with a round period and at most ``max_buckets`` buckets."""
    if not points:
        return Timeline(0, 60_000, 1)
    lo = min(p.ts_ms for p in points)
    hi = max(p.ts_ms for p in points)
    span = max(hi - lo, 1)
    period_s = next(
        (p for p in _NICE_PERIODS_S if span / (p * 1000) < max_buckets), _NICE_PERIODS_S[-1]
    )
    period_ms = period_s * 1000
    start = lo - lo % period_ms
    n = max(1, (hi - start) // period_ms + 1)
    return Timeline(start, period_ms, int(n))


@dataclass(frozen=True)
class Line:
    label: str
    values: list[float | None]


class LocalMetrics:
    """Query local datapoints with the same specs the CloudWatch dashboards use."""

    def __init__(self, points: Sequence[Datapoint]) -> None:
        self.points = list(points)

    def select(self, m: Metric) -> list[Datapoint]:
        return [p for p in self.points if matches(m, p)]

    def has_data(self, s: Series) -> bool:
        ms = list(s.using.values()) if isinstance(s, Expr) else [s]
        return any(self.select(m) for m in ms)

    def _bucket(self, pts: Iterable[Datapoint], stat: str, tl: Timeline) -> list[float | None]:
        raw: list[list[float]] = [[] for _ in range(tl.n)]
        for p in pts:
            i = tl.index(p.ts_ms)
            if i is not None:
                raw[i].append(p.value)
        return [statistic(v, stat) for v in raw]

    def lines(self, s: Series, tl: Timeline) -> list[Line]:
        """One line per metric (per ``group_by`` value), or the expression's single line.

        An expression is evaluated at the end of each bucket over its own period (a rolling
        window, e.g. the 10 minutes of a stall rule), not over the chart's shorter bucket.
        """
        if isinstance(s, Expr):
            window_ms = max(s.period_s * 1000, tl.period_ms)
            inputs = {k: (m, self.select(m)) for k, m in s.using.items()}
            vals: list[float | None] = []
            for i in range(tl.n):
                hi = tl.start_ms + (i + 1) * tl.period_ms
                lo = hi - window_ms
                v = {
                    k: statistic([p.value for p in pts if lo <= p.ts_ms < hi], m.statistic) or 0.0
                    for k, (m, pts) in inputs.items()
                }
                vals.append(s.local(v))
            return [Line(s.label, vals)]
        pts = self.select(s)
        if s.group_by is None:
            return [Line(s.title, self._bucket(pts, s.statistic, tl))]
        groups: dict[str, list[Datapoint]] = {}
        for p in pts:
            groups.setdefault(p.dimensions[s.group_by], []).append(p)
        prefix = f"{s.label} " if s.label else ""
        return [
            Line(f"{prefix}{k}", self._bucket(v, s.statistic, tl))
            for k, v in sorted(groups.items())
        ]

    def total(self, s: Series) -> float | None:
        """The statistic over the whole range (the single-value widgets)."""
        if isinstance(s, Expr):
            return None
        return statistic([p.value for p in self.select(s)], s.statistic)
