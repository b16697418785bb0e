"""The audit trail (spec section 5): deterministic object keys, JSON lines, and state rebuild.

Keys depend only on the batch's identity (its Kafka coordinates) and the decisions' event time, so
a retried batch overwrites its own object instead of adding a duplicate.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ValidationError

from margin_risk import names, untrusted
from margin_risk.enforcement import AccountState, close_call
from margin_risk.models import DECISION_ORDER, AuditEvent, describe_error
from margin_risk.money import cents, dumps


def partition_prefix(ts: datetime, prefix: str = names.AUDIT_PREFIX) -> str:
    """``audit/year=YYYY/month=M/day=D/hour=H/`` in UTC, unpadded as the Athena DDL expects."""
    u = ts.astimezone(UTC)
    return f"{prefix}year={u.year}/month={u.month}/day={u.day}/hour={u.hour}/"


def batch_id(coordinates: Sequence[str]) -> str:
    """A stable id for a batch from its records' coordinates (e.g. ``topic/partition/offset``)."""
    h = hashlib.sha256("\n".join(sorted(coordinates)).encode()).hexdigest()
    return h[:32]


def to_jsonl(events: Iterable[AuditEvent]) -> bytes:
    return b"".join(e.to_json().encode() + b"\n" for e in events)


def audit_objects(
    decisions: Sequence[AuditEvent], batch: str, prefix: str = names.AUDIT_PREFIX
) -> dict[str, bytes]:
    """Group a batch's decisions by hour partition: ``{key: jsonl body}``, decision order kept."""
    groups: dict[str, list[AuditEvent]] = defaultdict(list)
    for d in decisions:
        groups[partition_prefix(d.timestamp, prefix)].append(d)
    return {f"{p}batch-{batch}.jsonl": to_jsonl(evs) for p, evs in groups.items()}


class BadAuditTrail(ValueError):
    """The trail cannot be read back: no audit files, or a line that is not an audit event.

    The message is one line naming the file (and line) and the reason.
    """


def parse_audit_line(line: bytes | str, where: str) -> AuditEvent:
    """One audit event from one JSON line, read exactly (amounts as ``Decimal``)."""
    try:
        return AuditEvent.model_validate(untrusted.load_object(line, untrusted.MAX_RECORD_BYTES))
    except untrusted.Rejected as e:
        raise BadAuditTrail(f"{where}: {e.reason}") from e
    except ValidationError as e:
        raise BadAuditTrail(f"{where}: bad audit record: {describe_error(e)}") from e


def parse_jsonl(text: str | bytes, source: str = "audit") -> list[AuditEvent]:
    """The events of one audit object's body, split on ``\\n`` only (ids may hold U+2028)."""
    if isinstance(text, bytes):
        return read_audit_stream(io.BytesIO(text), source)
    return [parse_audit_line(line, f"{source}:{n}") for n, line in untrusted.split_lines(text)]


def read_audit_stream(stream: IO[bytes], source: str) -> list[AuditEvent]:
    """The events of a stream of audit JSON lines (a file, an S3 body, standard input)."""
    return [parse_audit_line(line, f"{source}:{n}") for n, line in untrusted.iter_lines(stream)]


def read_audit_dir(root: Path) -> list[AuditEvent]:
    """Every audit event under a local directory (a synced copy of the bucket prefix).

    A directory without any ``.jsonl`` file is an error, not an empty trail: a wrong path must
    not look like accounts without decisions.
    """
    files = sorted(p for p in root.rglob("*.jsonl") if p.is_file())
    if not files:
        raise BadAuditTrail(f"{root}: no audit files (*.jsonl) under this directory")
    out: list[AuditEvent] = []
    for f in files:
        with f.open("rb") as fh:
            out.extend(read_audit_stream(fh, str(f)))
    return out


class EnforcementView(BaseModel):
    """The part of an account's enforcement state that its decisions determine.

    Two gates are not visible in the trail because they change without a decision: the warning
    re-arming and the stress path clearing. They are re-derived on the next event (see README).
    """

    account_id: str
    call_open: bool = False
    call_amount: Decimal | None = None
    call_issued_at: datetime | None = None
    restricted: bool = False
    liquidation_triggered: bool = False
    # The deadline the desk extended the open call to (MARGIN_CALL_EXTENDED); None: the policy's.
    call_deadline_extended_to: datetime | None = None
    calls_waived: int = 0
    decisions: int = 0
    last_decision: str | None = None
    last_decision_at: datetime | None = None


def rebuild_state(events: Iterable[AuditEvent]) -> dict[str, EnforcementView]:
    """Fold the audit trail, in event-time then rule order, into each account's view."""
    unique = {e.event_id: e for e in events}  # a re-delivered line changes nothing
    order = {t: i for i, t in enumerate(DECISION_ORDER)}
    ordered = sorted(unique.values(), key=lambda e: (e.timestamp, order[e.event_type]))
    views: dict[str, EnforcementView] = {}
    for e in ordered:
        v = views.setdefault(e.account_id, EnforcementView(account_id=e.account_id))
        v.decisions += 1
        v.last_decision = e.event_type
        v.last_decision_at = e.timestamp
        if e.event_type == names.EVENT_MARGIN_CALL_ISSUED:
            v.call_open = True
            v.call_amount = e.details.deficiency
            v.call_issued_at = e.timestamp
            v.call_deadline_extended_to = None
        elif e.event_type == names.EVENT_ACCOUNT_RESTRICTED:
            v.restricted = True
        elif e.event_type == names.EVENT_LIQUIDATION_TRIGGERED:
            v.liquidation_triggered = True
        elif e.event_type == names.EVENT_MARGIN_CALL_EXTENDED:
            v.call_deadline_extended_to = _timestamp(getattr(e.details, "until", None))
        elif e.event_type in (names.EVENT_MARGIN_CALL_MET, names.EVENT_MARGIN_CALL_WAIVED):
            v.calls_waived += e.event_type == names.EVENT_MARGIN_CALL_WAIVED
            close_call(v)
    return views


def _timestamp(value: object) -> datetime | None:
    """An ISO timestamp kept in ``details`` (an extra field, so read back as text)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return untrusted.parse_timestamp(value)
    return None


def view_of(state: AccountState) -> EnforcementView:
    """The same view computed from live state, to compare a rebuild with DynamoDB."""
    m = state.margin
    return EnforcementView(
        account_id=state.account_id,
        call_open=m.call_open,
        call_amount=None if m.call_amount is None else cents(m.call_amount),
        call_issued_at=m.call_issued_at,
        restricted=m.restricted,
        liquidation_triggered=m.liquidation_triggered,
        call_deadline_extended_to=m.call_deadline_extended_to,
    )


def comparable(v: EnforcementView) -> tuple[object, ...]:
    """The fields a rebuild must reproduce exactly."""
    return (
        v.account_id,
        v.call_open,
        v.call_amount,
        v.call_issued_at,
        v.restricted,
        v.liquidation_triggered,
        v.call_deadline_extended_to,
    )


def dumps_views(views: dict[str, EnforcementView]) -> str:
    """One JSON object, an account per line, amounts as exact JSON numbers."""
    if not views:
        return "{}"
    lines = [
        f"  {json.dumps(k)}: {dumps(v.model_dump(mode='python'), compact=False)}"
        for k, v in sorted(views.items())
    ]
    return "{\n" + ",\n".join(lines) + "\n}"
