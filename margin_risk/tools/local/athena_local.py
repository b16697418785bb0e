"""Athena's audit queries run locally with DuckDB over the same JSON-lines partitions.

The view has the Glue table's schema (the seed's DDL: the six columns, ``details`` as a struct,
partition columns ``year/month/day/hour`` as integers read from the Hive-style key), so the named
queries run with their text unchanged except where the dialects differ (`adapt_sql`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from margin_risk import names

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


def adapt_sql(sql: str) -> str:
    """Translate the few Trino functions the named queries use into DuckDB."""
    out = re.sub(r"from_iso8601_timestamp\(([^()]*)\)", r"CAST(\1 AS TIMESTAMPTZ)", sql, flags=re.I)
    out = re.sub(r"\bcurrent_timestamp\b", "now()", out, flags=re.I)
    return out


class LocalAthena:
    """An in-process SQL engine over a local copy of the audit prefix (``<root>/audit/...``)."""

    def __init__(self, root: Path, table: str = names.AUDIT_TABLE) -> None:
        self.con = duckdb.connect()
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

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one query; ``?`` placeholders take ``params`` as Athena execution parameters do."""
        rel = self.con.execute(adapt_sql(sql), list(params))
        cols = [d[0] for d in rel.description or []]
        return [dict(zip(cols, row, strict=True)) for row in rel.fetchall()]
