"""The audit outbox: the decisions of an account's latest deciding commit, kept on its state head.

Why it exists: the audit trail is write-once (S3 Object Lock; the function may only PutObject), so a
decision may reach the trail only after the state change it records is committed, and an object,
once written, never gets different content. The conditional state write stores the commit's
decisions on the head item, in the same write as the state, so they are committed together.
Afterwards they go to one object whose key is fixed by (account, committed version, hour) and whose
bytes are the stored lines: whoever writes it (the committing invocation, a redelivery of its
records, or the account's next deciding commit) writes the same bytes to the same key, and the
write is a create (``If-None-Match: *``), so an existing object is never overwritten at all.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from margin_risk import names
from margin_risk.audit import partition_prefix
from margin_risk.models import AuditEvent

_SAFE_KEY_PART = re.compile(r"[A-Za-z0-9._-]{1,100}")
# (topic, partition, highest offset) of the records a commit applied.
Source = tuple[str, int, int]


def account_key_part(account_id: str) -> str:
    """The account as it appears in an object key: itself when key-safe, else a stable hash."""
    if _SAFE_KEY_PART.fullmatch(account_id):
        return account_id
    return "h-" + hashlib.sha256(account_id.encode()).hexdigest()[:32]


def commit_sources(coordinates: Iterable[tuple[str, int, int]]) -> tuple[Source, ...]:
    """The highest offset per topic-partition among a commit's records."""
    top: dict[tuple[str, int], int] = {}
    for topic, partition, offset in coordinates:
        top[(topic, partition)] = max(offset, top.get((topic, partition), -1))
    return tuple(sorted((t, p, o) for (t, p), o in top.items()))


@dataclass(frozen=True)
class Outbox:
    """What one commit decided, as stored on the head: the trail's lines, byte for byte."""

    account_id: str
    version: int
    lines: tuple[str, ...]
    # MARGIN_CALL_MET decisions that lifted a restriction (also routed to restrictions.v1).
    restricted_met: tuple[str, ...]
    sources: tuple[Source, ...]

    @classmethod
    def of(
        cls,
        account_id: str,
        version: int,
        decisions: Sequence[AuditEvent],
        restricted_met: Iterable[str],
        coordinates: Iterable[tuple[str, int, int]],
    ) -> Outbox:
        return cls(
            account_id,
            version,
            tuple(d.to_json() for d in decisions),
            tuple(sorted(set(restricted_met))),
            commit_sources(coordinates),
        )

    def decisions(self) -> list[AuditEvent]:
        # Our own lines, read with exact decimals (pydantic's JSON parser goes through floats).
        return [
            AuditEvent.model_validate(json.loads(line, parse_float=Decimal)) for line in self.lines
        ]

    def objects(self, prefix: str = names.AUDIT_PREFIX) -> dict[str, bytes]:
        """``{key: body}``: one object per event hour, keyed by account and committed version."""
        groups: dict[str, list[str]] = defaultdict(list)
        for line, d in zip(self.lines, self.decisions(), strict=True):
            groups[partition_prefix(d.timestamp, prefix)].append(line)
        name = f"{account_key_part(self.account_id)}-v{self.version:012d}.jsonl"
        return {
            p + name: "".join(line + "\n" for line in lines).encode() for p, lines in groups.items()
        }

    def redelivered(self, coordinates: Iterable[tuple[str, int, int]]) -> bool:
        """True when a batch re-reads a record this commit applied: Kafka delivers a partition's
        records again only after the invocation that had them reported them failed or died, so
        that invocation may have stopped between its commit and its audit write or publish."""
        top = {(t, p): o for t, p, o in self.sources}
        return any(o <= top.get((t, p), -1) for t, p, o in coordinates)

    def to_json(self) -> str:
        return json.dumps(
            {
                "account_id": self.account_id,
                "version": self.version,
                "lines": list(self.lines),
                "restricted_met": list(self.restricted_met),
                "sources": [list(s) for s in self.sources],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Outbox:
        raw = json.loads(text)
        return cls(
            str(raw["account_id"]),
            int(raw["version"]),
            tuple(str(x) for x in raw["lines"]),
            tuple(str(x) for x in raw["restricted_met"]),
            tuple((str(t), int(p), int(o)) for t, p, o in raw["sources"]),
        )
