"""The demo's margin history and its backtest.

The Spark job does not write the history archive yet, so the demo archives the results the
enforcement function consumed: every record on ``margin.calc.v1`` and ``stress.beta_spy.v1``,
validated as the function validates it, written with the reference writer
(`margin_risk.tools.history.write_history`) in the layout the job will use (`margin_risk.archive`).
The backtest then runs through the command line's own code path (``python -m margin_risk
backtest``) over that archive and the demo's audit trail.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from margin_risk import names

POLL_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 60.0


@dataclass
class ArchiveStats:
    records: int  # read from the topics (a result re-emitted after a Spark restart counts twice)
    results: int  # distinct event ids archived
    files: int
    rejected: int  # records that failed validation (none expected: Spark validated them)


def read_results(bootstrap: str, topics: Sequence[str] = names.RESULT_TOPICS) -> list[Any]:
    """Every valid record on ``topics`` from the first offset to the current end."""
    from confluent_kafka import Consumer, TopicPartition

    from margin_risk.usecase.decode import decode
    from margin_risk.usecase.records import Coordinate, InboundRecord, ValidRecord

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "demo-history",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        md = consumer.list_topics(timeout=10)
        ends: dict[tuple[str, int], int] = {}
        assign = []
        for t in topics:
            for p in md.topics[t].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                if high > low:
                    ends[(t, p)] = high
                    assign.append(TopicPartition(t, p, low))
        consumer.assign(assign)
        out: list[Any] = []
        give_up = time.monotonic() + READ_TIMEOUT_SECONDS
        while ends:
            if time.monotonic() > give_up:
                raise TimeoutError(f"result topics not read to their end: {sorted(ends)}")
            for msg in consumer.consume(500, timeout=POLL_SECONDS):
                if msg.error() is not None:
                    continue
                topic, part, offset = str(msg.topic()), int(msg.partition() or 0), msg.offset()
                c = Coordinate(topic, part, int(offset or 0))
                out.append(decode(InboundRecord(c, msg.value())))
                if (topic, part) in ends and c.offset + 1 >= ends[(topic, part)]:
                    del ends[(topic, part)]
        return [r.event if isinstance(r, ValidRecord) else r for r in out]
    finally:
        consumer.close()


def archive_results(bootstrap: str, root: Path) -> ArchiveStats:
    """Archive the result topics under ``root`` (the layout of `margin_risk.archive`)."""
    from margin_risk.models import MarginCalc, StressResult
    from margin_risk.tools.history import write_history

    records = read_results(bootstrap)
    results = [r for r in records if isinstance(r, MarginCalc | StressResult)]
    files = write_history(root, results) if results else []
    return ArchiveStats(
        records=len(records),
        results=len({r.event_id for r in results}),
        files=len(files),
        rejected=len(records) - len(results),
    )


def run_backtest(history: Path, audit: Path, policy: dict[str, Any], work: Path) -> dict[str, Any]:
    """``python -m margin_risk backtest HISTORY --policy FILE --audit AUDIT``: its totals line
    (``backtest``) and the accounts it differs on, or ``error`` with its one-line reason."""
    from margin_risk.tools.cli import main

    policy_file = work / "backtest-policy.json"
    policy_file.write_text(json.dumps(policy), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    argv = ["backtest", str(history), "--policy", str(policy_file), "--audit", str(audit)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    if code != 0:
        return {"error": err.getvalue().strip() or f"exit {code}"}
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    (work / "backtest.jsonl").write_text(out.getvalue(), encoding="utf-8")
    report: dict[str, Any] = lines[-1]["backtest"]
    report["differing_accounts"] = sorted(x["account_id"] for x in lines if "added" in x)
    return report
