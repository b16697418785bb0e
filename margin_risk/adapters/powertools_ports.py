"""Powertools-backed ports: EMF metrics (with a local JSON-lines copy) and X-Ray subsegments."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from aws_lambda_powertools import Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics

from margin_risk import names

T = TypeVar("T")
R = TypeVar("R")


class EmfMetrics:
    """`ports.MetricsSink` that emits CloudWatch EMF through Powertools.

    Plain metrics share one EMF object per invocation; a metric with dimensions (RecordsRejected
    by ``reason``) gets an EMF object per dimension value, as CloudWatch requires. `flush` prints
    the objects to stdout (the Lambda log, where CloudWatch extracts them) and, when ``jsonl`` is
    set, appends them one per line to that file (the local health report and dashboard read it).
    """

    def __init__(
        self,
        namespace: str = names.METRICS_NAMESPACE,
        service: str = names.SERVICE_ENFORCEMENT,
        jsonl: Path | None = None,
        stdout: bool = True,
    ) -> None:
        self.namespace = namespace
        self.service = service
        self.metrics = Metrics(namespace=namespace, service=service)
        self.jsonl = jsonl
        self.stdout = stdout
        self._dimensioned: dict[tuple[tuple[str, str], ...], EphemeralMetrics] = {}

    def add(
        self,
        name: str,
        unit: str,
        value: float,
        dimensions: Mapping[str, str] | None = None,
    ) -> None:
        if not dimensions:
            self.metrics.add_metric(name=name, unit=unit, value=value)
            return
        key = tuple(sorted(dimensions.items()))
        m = self._dimensioned.get(key)
        if m is None:
            m = EphemeralMetrics(namespace=self.namespace, service=self.service)
            for k, v in key:
                m.add_dimension(name=k, value=v)
            self._dimensioned[key] = m
        m.add_metric(name=name, unit=unit, value=value)

    def flush(self) -> list[dict[str, Any]]:
        """Serialize, write and clear everything recorded since the last flush."""
        blobs: list[dict[str, Any]] = []
        sources: list[Any] = [self.metrics, *self._dimensioned.values()]
        for m in sources:
            if m.metric_set:
                blobs.append(m.serialize_metric_set())
                m.clear_metrics()
        self._dimensioned.clear()
        lines = [json.dumps(b, separators=(",", ":")) for b in blobs]
        if self.stdout:
            for line in lines:
                sys.stdout.write(line + "\n")
        if self.jsonl is not None and lines:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with self.jsonl.open("a", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
        return blobs


class XRayTracing:
    """`ports.Tracing`: an X-Ray subsegment per span (no-op when tracing is off)."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def span(self, name: str) -> AbstractContextManager[Any]:
        return self._span(name)

    @contextmanager
    def _span(self, name: str) -> Iterator[Any]:
        with self.tracer.provider.in_subsegment(name=name[:200]) as seg:
            yield seg

    def in_thread(self, fn: Callable[[T], R]) -> Callable[[T], R]:
        """X-Ray keeps the current segment per thread: hand the caller's to the worker, so its
        AWS calls are subsegments of the caller's span instead of orphans."""
        provider: Any = self.tracer.provider  # typed BaseProvider; at run time the X-Ray recorder
        entity = provider.get_trace_entity()

        def run(arg: T) -> R:
            provider.set_trace_entity(entity)
            try:
                return fn(arg)
            finally:
                provider.clear_trace_entities()

        return run
