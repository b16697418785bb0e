"""Exact decimal money: the arithmetic context, presentation to cents, and JSON numbers.

Python's default decimal context keeps 28 significant digits, fewer than a bounded market value
times a rate times a stressed price needs (see `margin_risk.params`), so every money computation
runs under `EXACT`, whose precision no bounded input can reach: results are exact, not rounded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from functools import wraps
from typing import Any, ParamSpec, TypeVar

EXACT = Context(prec=120, traps=[InvalidOperation, DivisionByZero, Overflow])
CENT = Decimal("0.01")
ZERO = Decimal(0)
P = ParamSpec("P")
R = TypeVar("R")


def exact(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` under the exact context (whatever the calling thread's context is)."""

    @wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with localcontext(EXACT):
            return fn(*args, **kwargs)

    return run


def to_decimal(x: Decimal | int | float | str) -> Decimal:
    """A decimal from a value as written: a float becomes its shortest text (``33.59`` is 33.59,
    not 33.590000000000003410605131648480892181396484375)."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(x, int):
        return Decimal(x)
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"{x!r} is not a finite number")
        return Decimal(repr(x))
    return Decimal(x)


@exact
def cents(x: Decimal) -> Decimal:
    """Present a USD amount rounded half-up (away from zero) to cents; never used to compare."""
    r = x.quantize(CENT, rounding=ROUND_HALF_UP)
    return r if r != 0 else abs(r)  # no "-0.00"


def number_text(x: Decimal) -> str:
    """JSON number text of a decimal, positional (no exponent), e.g. ``32702.33`` or ``0``."""
    if not x.is_finite():
        raise ValueError(f"{x} is not a finite number")
    text = format(x, "f")
    return "0" if text in ("-0", "0") else text


def dumps(obj: Any, *, compact: bool = True) -> str:
    """JSON like ``json.dumps`` but with decimals as exact JSON numbers (``json`` has no way to
    write one without a float in between) and datetimes as ISO-8601 UTC with a ``Z``."""
    parts: list[str] = []
    _write(obj, parts, (",", ":") if compact else (", ", ": "))
    return "".join(parts)


def _write(obj: Any, out: list[str], seps: tuple[str, str]) -> None:
    if isinstance(obj, Decimal):
        out.append(number_text(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (k, v) in enumerate(obj.items()):
            if i:
                out.append(seps[0])
            out.append(json.dumps(str(k)))
            out.append(seps[1])
            _write(v, out, seps)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(seps[0])
            _write(v, out, seps)
        out.append("]")
    elif isinstance(obj, datetime):
        out.append(json.dumps(obj.astimezone(UTC).isoformat().replace("+00:00", "Z")))
    else:
        out.append(json.dumps(obj, allow_nan=False))
