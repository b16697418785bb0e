"""The one boundary for untrusted input: JSON documents, JSON lines and timestamps.

Everything read from outside (a Kafka record in the enforcement handler, a snapshot or an events
file on the command line, an audit object read back) passes through here before any model sees it.
What this module guarantees, so that no input can crash a caller:

- size: a document, a record or a line is bounded in bytes, and a number literal in characters
  (``json.loads`` with the default ``int`` raises a plain ``ValueError`` past 4,300 digits);
- nesting: depth is bounded before the parser runs (the parser recurses and raises
  ``RecursionError`` a thousand levels down);
- numbers: read exactly as ``decimal.Decimal`` (a JSON number is a decimal as written, spec
  section 1); NaN, Infinity and exponents decimal arithmetic cannot hold are rejected;
- lines: JSON lines are split on ``\\n`` only. ``str.splitlines`` also breaks at U+2028, U+0085 and
  other characters a JSON string may hold raw, which would cut valid records in two;
- timestamps: ISO-8601 with a zone and nothing else (no epoch numbers), convertible to UTC.

Anything outside these bounds raises `Rejected`, a ``ValueError`` with a low-cardinality ``code``
(the ``RecordsRejected`` metric's ``reason`` dimension) and a one-line ``reason``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Annotated, Any

from pydantic import AwareDatetime, BeforeValidator
from pydantic_core import PydanticCustomError

# A snapshot or a house file: thousands of positions fit in a fraction of this.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# One Kafka record or one JSON line: MSK's default maximum message size.
MAX_RECORD_BYTES = 1024 * 1024
# A number literal: every bounded amount (1e18 with 20 decimal places) fits with room to spare.
MAX_NUMBER_CHARS = 64
# Exponents beyond this overflow decimal arithmetic (``abs(Decimal("1E+999999999"))`` raises
# ``decimal.Overflow``, which no validator turns into an error); far beyond any bound on amounts.
MAX_EXPONENT = 1000
# Our records nest three levels (stress record -> scenarios -> row); unknown fields get some room.
MAX_DEPTH = 32

TIMESTAMP_EXAMPLE = "2026-02-16T14:30:00Z"
_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})",
    re.ASCII,
)
# A JSON string (skipped whole) or a bracket: what the depth check needs to see.
# An unterminated string runs to the end of the text, so the scan stays linear on broken input.
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*\\?(?:"|\Z)|[\[\]{}]', re.DOTALL)


class Rejected(ValueError):
    """Input outside the boundary: ``code`` for metrics, ``reason`` (one line) for people."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _number(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_CHARS:
        raise Rejected(
            "number_too_long",
            f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS}): {text[:20]}...",
        )
    value = Decimal(text)
    if not -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT:
        raise Rejected("number_out_of_range", f"the number {text} is out of range")
    return value


def _constant(name: str) -> Decimal:
    raise Rejected("non_finite_number", f"{name} is not allowed: numbers must be finite")


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise `Rejected` when arrays/objects nest deeper than ``max_depth``.

    Counting brackets is enough when there are few of them (every record we expect); only a
    document with more brackets than the limit is scanned, skipping brackets inside strings.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return
    depth = 0
    for m in _STRUCTURE.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > max_depth:
                raise Rejected("too_deep", f"nested deeper than {max_depth} levels")
        elif c in "]}":
            depth -= 1


def loads(data: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES) -> Any:
    """Parse one JSON document within the bounds above; numbers become ``Decimal``."""
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise Rejected("too_large", f"larger than {max_bytes:,} bytes")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Rejected("malformed_json", f"not UTF-8 text (byte {e.start}: {e.reason})") from e
    else:
        text = data
    check_depth(text)
    try:
        return json.loads(text, parse_float=_number, parse_int=_number, parse_constant=_constant)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}" if "\n" in text else f"column {e.colno}"
        raise Rejected("malformed_json", f"invalid JSON at {where}: {e.msg}") from e
    except RecursionError as e:  # a parser deeper than check_depth allows: never expected
        raise Rejected("too_deep", "nested too deep") from e


def load_object(data: bytes | str, max_bytes: int = MAX_DOCUMENT_BYTES) -> dict[str, Any]:
    """`loads`, and the document must be a JSON object (every record and snapshot is one)."""
    raw = loads(data, max_bytes)
    if not isinstance(raw, dict):
        raise Rejected("malformed_json", f"expected a JSON object, got {_kind(raw)}")
    return raw


def _kind(x: Any) -> str:
    if isinstance(x, list):
        return "an array"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, bool) or x is None:
        return json.dumps(x)
    return "a number"


def iter_lines(stream: IO[bytes], max_bytes: int = MAX_RECORD_BYTES) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of a JSON-lines byte stream, split on ``\\n`` only.

    Blank lines are skipped (numbers still count them). A line longer than ``max_bytes`` is
    yielded cut to ``max_bytes + 1`` bytes (so `loads` rejects it) and the rest of it is skipped,
    which keeps memory bounded by ``max_bytes`` whatever the input.
    """
    n = 0
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        n += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while (rest := stream.readline(max_bytes)) and not rest.endswith(b"\n"):
                pass
        line = line.rstrip(b"\n")
        if line.strip():
            yield n, line


def split_lines(text: str) -> Iterator[tuple[int, str]]:
    """`iter_lines` for text already in memory: ``\\n`` only, blank lines skipped."""
    for n, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield n, line


def _bad_timestamp(reason: str) -> PydanticCustomError:
    # A ValueError whose pydantic error type is "timestamp": models report it as such, and
    # `margin_risk.models.reason_code` can count it apart from other wrong types.
    return PydanticCustomError("timestamp", "{reason}", {"reason": reason})


def parse_timestamp(value: object) -> datetime:
    """An ISO-8601 timestamp with a zone, or ``ValueError`` saying why not.

    Only the extended format with ``T`` and a ``Z`` or ``+hh:mm`` zone is read; epoch numbers,
    a missing zone and dates that have no UTC equivalent (9999-12-31T23:00:00-05:00 is in year
    10000 in UTC) are rejected. An aware ``datetime`` (built in code, not read) passes through.
    """
    if isinstance(value, datetime):
        ts = value
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise _bad_timestamp("timestamp must have a zone")
    elif isinstance(value, str):
        if not _ISO_8601.fullmatch(value):
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise _bad_timestamp(
                f"timestamp {shown!r} is not ISO-8601 with a zone (e.g. {TIMESTAMP_EXAMPLE})"
            )
        try:
            ts = datetime.fromisoformat(value)
        except ValueError as e:
            raise _bad_timestamp(f"timestamp {value!r} is not a valid date and time: {e}") from None
    else:
        raise _bad_timestamp(
            f"timestamp must be an ISO-8601 string with a zone (e.g. {TIMESTAMP_EXAMPLE}),"
            f" not {_kind(value)}"
        )
    try:
        ts.astimezone(UTC)
    except OverflowError:
        raise _bad_timestamp(
            f"timestamp {ts.isoformat()} is outside the range of UTC dates"
        ) from None
    return ts


# The type of every timestamp field read from outside.
Timestamp = Annotated[AwareDatetime, BeforeValidator(parse_timestamp)]
