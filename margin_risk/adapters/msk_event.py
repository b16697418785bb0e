"""The MSK event envelope -> `InboundRecord`s, record by record so one bad record is one rejection.

Uses Powertools' parser model `KafkaRecordModel` (base64 value and key, header byte lists); a
record whose envelope does not parse (bad base64, say) becomes an `InboundRecord` carrying the
error, which the service rejects, instead of failing the whole event.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.parser.models.kafka import KafkaRecordModel
from pydantic import ValidationError

from margin_risk.usecase.records import Coordinate, InboundRecord


def _coordinate(raw: Mapping[str, Any], tp: str) -> Coordinate:
    topic = str(raw.get("topic") or tp.rsplit("-", 1)[0])
    partition = int(raw.get("partition", tp.rsplit("-", 1)[-1] if "-" in tp else 0))
    return Coordinate(topic, partition, int(raw.get("offset", -1)))


def _headers(model: KafkaRecordModel) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for h in model.headers:
        for k, v in h.items():
            out[k] = v if isinstance(v, bytes) else bytes(v)
    return out


def _broken(c: Coordinate, raw: Mapping[str, Any], err: ValidationError) -> InboundRecord:
    """A record Powertools' model refused. Only the value wrong (not UTF-8, say): pass the bytes
    on so the service rejects it as malformed JSON; anything else is a malformed envelope."""
    try:
        value: bytes | None = base64.b64decode(raw.get("value") or "", validate=True)
    except (ValueError, TypeError):
        value = None
    only_value = {tuple(x["loc"]) for x in err.errors()} == {("value",)}
    if only_value and value is not None:
        return InboundRecord(c, value)
    return InboundRecord(c, value, envelope_error=f"bad Kafka envelope: {err.errors()[0]['msg']}")


def inbound_records(event: Mapping[str, Any]) -> list[InboundRecord]:
    """All records of an MSK (or self-managed Kafka) event, in topic-partition then offset order."""
    out: list[InboundRecord] = []
    records = event.get("records") or {}
    for tp in sorted(records):
        for raw in records[tp]:
            c = _coordinate(raw, tp)
            try:
                m = KafkaRecordModel.model_validate(dict(raw))
            except ValidationError as e:
                out.append(_broken(c, raw, e))
                continue
            v = m.value
            out.append(
                InboundRecord(
                    coordinate=c,
                    value=v.encode("utf-8") if isinstance(v, str) else None,
                    kafka_timestamp=m.timestamp,
                    headers=_headers(m),
                )
            )
    return out
