"""X-Ray keeps the current segment per thread: the parallel state commits must hand theirs over."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core import AWSXRayRecorder
from aws_xray_sdk.core.exceptions.exceptions import SegmentNotFoundException

from margin_risk.adapters.powertools_ports import XRayTracing


class _Keep:
    """An emitter that keeps what would be sent to the X-Ray daemon."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(entity)

    def set_daemon_address(self, address: Any) -> None:
        pass

    @property
    def ip(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return 2000


@pytest.fixture()
def recorder() -> Iterator[AWSXRayRecorder]:
    was = global_sdk_config.sdk_enabled()
    global_sdk_config.set_sdk_enabled(True)  # Powertools switches it off outside Lambda
    rec = AWSXRayRecorder()
    rec.configure(sampling=False, context_missing="RUNTIME_ERROR", emitter=_Keep())
    try:
        yield rec
    finally:
        rec.clear_trace_entities()
        global_sdk_config.set_sdk_enabled(was)


def test_worker_subsegments_nest_under_the_callers_span(recorder: AWSXRayRecorder) -> None:
    tracing = XRayTracing(cast(Any, SimpleNamespace(provider=recorder)))

    def put(i: int) -> str:
        with recorder.in_subsegment(f"put {i}") as sub:
            return str(sub.parent_id)

    recorder.begin_segment("batch")
    with tracing.span("commit states") as span:
        with ThreadPoolExecutor(4) as pool:
            parents = list(pool.map(tracing.in_thread(put), range(8)))
        # the caller's own context is untouched by the workers
        assert recorder.get_trace_entity() is span
    recorder.end_segment()
    assert parents == [span.id] * 8
    assert sorted(s.name for s in span.subsegments) == sorted(f"put {i}" for i in range(8))


def test_without_the_hand_over_a_worker_has_no_segment(recorder: AWSXRayRecorder) -> None:
    def put(i: int) -> str:
        with recorder.in_subsegment(f"put {i}") as sub:
            return str(sub.parent_id)

    recorder.begin_segment("batch")
    with ThreadPoolExecutor(1) as pool, pytest.raises(SegmentNotFoundException):
        list(pool.map(put, range(1)))
    recorder.end_segment()
