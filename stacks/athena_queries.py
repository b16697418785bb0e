"""The risk desk's saved queries over the audit trail and the margin history, in one place for
Athena and DuckDB.

The CDK storage stack turns each entry into an Athena named query; the local demo runs the same
text with DuckDB over the JSONL files (a view named `audit_events` with the hive partition
columns) and the history's Parquet files (views `margin_history` and `stress_history`,
`margin_risk.tools.local.athena_local`). Both engines take positional `?` parameters:

- Athena: `StartQueryExecution(..., ExecutionParameters=[...])`. Athena splices each parameter in
  as SQL text, so strings are passed quoted (`"'ACC_DEMO_001'"`) and numbers bare (`"2026"`);
  `athena_parameters()` does that quoting.
- DuckDB: `con.execute(sql, [value, ...])` with plain Python values.

Only portable SQL is used: audit timestamps are ISO-8601 UTC strings of one shape, so they compare
correctly as strings, and no engine-specific date function is needed; the history's partition
column `event_date` is a `YYYY-MM-DD` string for the same reason. A history result may be in more
than one file (a retried micro-batch), so the history queries keep one row per `event_id`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from margin_risk import names


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str
    # Names of the `?` parameters, in order (for documentation and callers).
    parameters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.sql.count("?") != len(self.parameters):
            raise ValueError(f"{self.name}: {self.sql.count('?')} placeholders, parameters differ")


def athena_parameters(values: Sequence[object]) -> list[str]:
    """Render values as Athena ExecutionParameters (strings quoted, numbers bare)."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            out.append("'" + str(v).replace("'", "''") + "'")
        else:
            out.append(str(v))
    return out


_T = names.AUDIT_TABLE
_CALL = names.EVENT_MARGIN_CALL_ISSUED
_MET = names.EVENT_MARGIN_CALL_MET
_LIQ = names.EVENT_LIQUIDATION_TRIGGERED
_MH = names.MARGIN_HISTORY_TABLE

_QUERIES = (
    NamedQuery(
        name="margin_calls_for_account",
        description="All margin calls issued to one account, oldest first.",
        sql=f"""SELECT event_id, timestamp, details.deficiency AS deficiency,
       details.equity AS equity, details.maintenance_req AS maintenance_req, correlation_id
FROM {_T}
WHERE event_type = '{_CALL}' AND account_id = ?
ORDER BY timestamp""",
        parameters=("account_id",),
    ),
    NamedQuery(
        name="events_by_type_for_day",
        description="Count of audit events by type for one UTC day (partition-pruned).",
        sql=f"""SELECT event_type, COUNT(*) AS events, COUNT(DISTINCT account_id) AS accounts
FROM {_T}
WHERE year = ? AND month = ? AND day = ?
GROUP BY event_type
ORDER BY events DESC, event_type""",
        parameters=("year", "month", "day"),
    ),
    NamedQuery(
        name="accounts_with_liquidations_in_month",
        description="Accounts with liquidations in a UTC month, most liquidations first.",
        sql=f"""SELECT account_id, COUNT(*) AS liquidations,
       MAX(details.deficiency) AS max_deficiency,
       MIN(timestamp) AS first_at, MAX(timestamp) AS last_at
FROM {_T}
WHERE event_type = '{_LIQ}' AND year = ? AND month = ?
GROUP BY account_id
ORDER BY liquidations DESC, account_id""",
        parameters=("year", "month"),
    ),
    NamedQuery(
        name="trace_by_correlation_id",
        description="Every decision carrying one correlation_id: trace a margin call end to end.",
        sql=f"""SELECT timestamp, event_type, account_id, event_id,
       details.deficiency AS deficiency, details.excess AS excess, details.reason AS reason
FROM {_T}
WHERE correlation_id = ?
ORDER BY timestamp, event_type""",
        parameters=("correlation_id",),
    ),
    NamedQuery(
        name="open_calls_older_than",
        description=(
            "Margin calls issued before a cutoff (ISO-8601 UTC, e.g. now minus the restriction "
            "window) that no later MARGIN_CALL_MET or LIQUIDATION_TRIGGERED has closed."
        ),
        sql=f"""SELECT c.account_id, c.timestamp AS issued_at, c.details.deficiency AS deficiency,
       c.correlation_id
FROM {_T} c
WHERE c.event_type = '{_CALL}' AND c.timestamp < ?
  AND NOT EXISTS (
    SELECT 1 FROM {_T} x
    WHERE x.account_id = c.account_id
      AND x.event_type IN ('{_MET}', '{_LIQ}')
      AND x.timestamp >= c.timestamp)
ORDER BY c.timestamp""",
        parameters=("cutoff_iso_utc",),
    ),
    NamedQuery(
        name="largest_deficiencies_of_day",
        description="The 20 largest deficiencies called or liquidated on one UTC day.",
        sql=f"""SELECT account_id, event_type, timestamp, details.deficiency AS deficiency,
       details.equity AS equity, correlation_id
FROM {_T}
WHERE year = ? AND month = ? AND day = ?
  AND event_type IN ('{_CALL}', '{_LIQ}')
ORDER BY details.deficiency DESC, account_id
LIMIT 20""",
        parameters=("year", "month", "day"),
    ),
    NamedQuery(
        name="account_margin_over_day",
        description=(
            "An account's margin over one UTC day (event_date YYYY-MM-DD) from the margin "
            "history: every result in time order, exact amounts (partition-pruned)."
        ),
        sql=f"""SELECT timestamp, equity, maintenance_req, excess, deficiency,
       long_market_value, short_market_value, event_id, correlation_id
FROM (
  SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY timestamp) AS copy
  FROM {_MH}
  WHERE account_id = ? AND event_date = ?) results
WHERE copy = 1
ORDER BY timestamp, event_id""",
        parameters=("account_id", "event_date"),
    ),
    NamedQuery(
        name="accounts_nearest_call_now",
        description=(
            "The 20 accounts nearest a margin call now: each account's latest margin result "
            "since a UTC date (event_date YYYY-MM-DD, e.g. today), those without a deficiency, "
            "smallest excess as a share of gross market value (the warning cushion's measure) "
            "first. Accounts already in a call are not listed (see open_calls_older_than)."
        ),
        sql=f"""SELECT account_id, timestamp AS as_of, equity, maintenance_req, excess,
       long_market_value + short_market_value AS gross,
       CAST(excess AS DOUBLE) / CAST(long_market_value + short_market_value AS DOUBLE) AS cushion
FROM (
  SELECT *, row_number() OVER (
      PARTITION BY account_id ORDER BY timestamp DESC, event_id DESC) AS recency
  FROM {_MH}
  WHERE event_date >= ?) latest
WHERE recency = 1 AND deficiency = 0 AND long_market_value + short_market_value > 0
ORDER BY cushion, account_id
LIMIT 20""",
        parameters=("since_event_date",),
    ),
)

NAMED_QUERIES: dict[str, NamedQuery] = {q.name: q for q in _QUERIES}
