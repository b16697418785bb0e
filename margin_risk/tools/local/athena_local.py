"""Athena's named queries run locally with DuckDB over the same partitions: the audit trail's
JSON lines and the margin history's Parquet files.

The audit view has the Glue table's schema (the seed's DDL: the six columns, ``details`` as a
struct, partition columns ``year/month/day/hour`` as integers read from the Hive-style key); the
history views (``margin_history``, ``stress_history``) have the columns of `margin_risk.archive`
and its partition columns (``event_date`` a string, ``hour`` an integer), as the Glue tables
declare them. The named queries run with their text unchanged except where the dialects differ
(`adapt_sql`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from margin_risk import archive, names
from margin_risk.tools.history import duck_type

COLUMNS = {
    "event_id": "VARCHAR",
    "event_type": "VARCHAR",
    "account_id": "VARCHAR",
    "timestamp": "VARCHAR",
    "details": (
        "STRUCT(deficiency DOUBLE, excess DOUBLE, equity DOUBLE, maintenance_req DOUBLE,"
        " scenario DOUBLE, reason VARCHAR)"
    ),
    "correlation_id": "VARCHAR",
}
PARTITION_TYPES = {"year": "INTEGER", "month": "INTEGER", "day": "INTEGER", "hour": "INTEGER"}
HISTORY_VIEWS = {
    names.MARGIN_HISTORY_TABLE: archive.KIND_MARGIN,
    names.STRESS_HISTORY_TABLE: archive.KIND_STRESS,
}


def adapt_sql(sql: str) -> str:
    """Translate the few Trino functions the named queries use into DuckDB."""
    out = re.sub(r"from_iso8601_timestamp\(([^()]*)\)", r"CAST(\1 AS TIMESTAMPTZ)", sql, flags=re.I)
    out = re.sub(r"\bcurrent_timestamp\b", "now()", out, flags=re.I)
    return out


class LocalAthena:
    """An in-process SQL engine over a local copy of the audit prefix (``<root>/audit/...``) and,
    when given, of the history prefix (``<history_root>/<kind>/event_date=/hour=/``)."""

    def __init__(
        self, root: Path, table: str = names.AUDIT_TABLE, history_root: Path | None = None
    ) -> None:
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        if history_root is not None:
            for view, kind in HISTORY_VIEWS.items():
                self._history_view(view, Path(history_root) / kind, archive.COLUMNS[kind])
        files = sorted(Path(root).rglob("*.jsonl"))
        if not files:
            cols = ", ".join(
                f'NULL::{t} AS "{c}"' for c, t in {**COLUMNS, **PARTITION_TYPES}.items()
            )
            self.con.execute(f"CREATE VIEW {table} AS SELECT {cols} WHERE false")
            return
        pattern = str(Path(root) / "**" / "*.jsonl").replace("'", "''")
        cols = ", ".join(f"'{c}': '{t}'" for c, t in COLUMNS.items())
        hive = ", ".join(f"'{c}': '{t}'" for c, t in PARTITION_TYPES.items())
        self.con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_json('{pattern}',"
            f" format='newline_delimited', hive_partitioning=true,"
            f" hive_types={{{hive}}}, columns={{{cols}}})"
        )

    def _history_view(self, view: str, kind_root: Path, columns: dict[str, str]) -> None:
        if not any(kind_root.rglob("*.parquet")):
            types = {**{c: _local_type(t) for c, t in columns.items()}, "event_date": "VARCHAR"}
            cols = ", ".join(f'NULL::{t} AS "{c}"' for c, t in {**types, "hour": "INT"}.items())
            self.con.execute(f"CREATE VIEW {view} AS SELECT {cols} WHERE false")
            return
        pattern = str(kind_root / "**" / "*.parquet").replace("'", "''")
        # Athena's `timestamp` carries no zone (the archive's instants, read as UTC): the same
        # here, which also keeps DuckDB from needing pytz to hand zoned values to Python.
        select = ", ".join(
            f'CAST("{c}" AS TIMESTAMP) AS "{c}"' if t == "timestamp" else f'"{c}"'
            for c, t in {**columns, **dict.fromkeys(archive.PARTITION_COLUMNS, "")}.items()
        )
        self.con.execute(
            f"CREATE VIEW {view} AS SELECT {select} FROM read_parquet('{pattern}',"
            " hive_partitioning = true, hive_types = {'event_date': VARCHAR, 'hour': INTEGER})"
        )

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one query; ``?`` placeholders take ``params`` as Athena execution parameters do."""
        rel = self.con.execute(adapt_sql(sql), list(params))
        cols = [d[0] for d in rel.description or []]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]


def _local_type(t: str) -> str:
    """A history column's type in the local views (timestamps without a zone, as in Athena)."""
    return "TIMESTAMP" if t == "timestamp" else duck_type(t)
