"""Decoding one Kafka record into a validated enforcement input, or a rejection with a reason.

Every way a record can be wrong ends here as a `Rejection` (the untrusted-input boundary,
`margin_risk.untrusted`), so one hostile record can never fail the batch that carries valid ones.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from margin_risk import names, untrusted
from margin_risk.models import describe_error, parse_enforcement_input, reason_code
from margin_risk.usecase.records import InboundRecord, Rejection, ValidRecord


def _parse_ts(value: object) -> datetime | None:
    """``origin_ts`` (latency telemetry only): strict like every timestamp, None when unusable."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        return untrusted.parse_timestamp(value)
    except ValueError:
        return None


def decode(record: InboundRecord) -> ValidRecord | Rejection:
    """Validate one record into an enforcement input, or say exactly why not."""
    c = record.coordinate
    raw_text = "" if record.value is None else record.value.decode("utf-8", "replace")
    if record.envelope_error is not None or record.value is None:
        why = record.envelope_error or "record has no value"
        return Rejection(c, "malformed_record", why, raw_text)
    try:
        raw = untrusted.load_object(record.value, untrusted.MAX_RECORD_BYTES)
        event = parse_enforcement_input(raw)
    except untrusted.Rejected as e:
        return Rejection(c, e.code, e.reason, raw_text)
    except ValidationError as e:
        return Rejection(c, reason_code(e), describe_error(e), raw_text)
    origin = (
        _parse_ts(raw.get("origin_ts"))
        or _parse_ts(record.headers.get(names.HEADER_ORIGIN_TS))
        or event.timestamp
    )
    return ValidRecord(c, event, origin)
