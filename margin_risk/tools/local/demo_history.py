"""The demo's margin history and its backtest.

The Spark job writes the history (``--history-dir``, `emr_jobs.history`) in the layout of
`margin_risk.archive`; the demo counts what it holds, and runs the backtest through the command
line's own code path (``python -m margin_risk backtest``) over that archive and the demo's audit
trail.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from margin_risk import archive


@dataclass
class ArchiveStats:
    rows: int  # rows in the files (a result written twice counts twice)
    results: int  # distinct event ids
    files: int


def history_stats(root: Path) -> ArchiveStats:
    """What the archive under ``root`` holds (no files: zeros)."""
    import duckdb

    files = sorted(p for k in archive.KINDS for p in (root / k).rglob("*.parquet"))
    if not files:
        return ArchiveStats(0, 0, 0)
    listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in files)
    con = duckdb.connect()
    try:
        row = con.execute(
            f"SELECT count(*), count(DISTINCT event_id) FROM read_parquet([{listed}],"
            " hive_partitioning = false)"
        ).fetchone()
    finally:
        con.close()
    assert row is not None
    return ArchiveStats(rows=int(row[0]), results=int(row[1]), files=len(files))


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
