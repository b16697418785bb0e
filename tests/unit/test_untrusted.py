"""The boundary for untrusted input: every hostile shape is a `Rejected` with a reason."""

import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import BaseModel, ValidationError

from margin_risk import untrusted
from margin_risk.untrusted import Rejected


def rejected(data, **kw) -> Rejected:
    with pytest.raises(Rejected) as info:
        untrusted.loads(data, **kw)
    return info.value


def test_numbers_are_exact_decimals_as_written():
    doc = untrusted.loads('{"price": 33.59, "quantity": -755, "beta": 1.20, "e": 1e2}')
    assert doc == {
        "price": Decimal("33.59"),
        "quantity": Decimal(-755),
        "beta": Decimal("1.20"),
        "e": Decimal("1e2"),
    }
    assert all(isinstance(v, Decimal) for v in doc.values())


@pytest.mark.parametrize("digits", [65, 5_000, 100_000])
def test_a_long_number_literal_is_rejected_not_a_value_error(digits):
    e = rejected('{"cash": ' + "9" * digits + "}")
    assert e.code == "number_too_long"
    assert f"a number of {digits} characters" in e.reason


@pytest.mark.parametrize("literal", ["1E+999999999", "-1e1001", "1e-999999999", "0e-5000"])
def test_an_exponent_decimal_arithmetic_cannot_hold_is_rejected(literal):
    e = rejected('{"short_market_value": ' + literal + "}")
    assert (e.code, e.reason) == ("number_out_of_range", f"the number {literal} is out of range")


def test_large_exponents_within_range_reach_the_models_which_name_the_field():
    assert untrusted.loads("[1e400, -1e-400, 1e1000]") == [
        Decimal("1e400"), Decimal("-1e-400"), Decimal("1e1000"),
    ]  # fmt: skip


@pytest.mark.parametrize("depth", [33, 5_000, 100_000])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_rejected_before_the_parser_recurses(depth, opener):
    closer = "]" if opener == "[" else "}"
    e = rejected(opener * depth + "1" + closer * depth)
    assert e.code == "too_deep"
    assert e.reason == "nested deeper than 32 levels"


def test_nesting_at_the_limit_and_brackets_inside_strings_are_fine():
    assert untrusted.loads("[" * 32 + "]" * 32) is not None
    doc = untrusted.loads('{"id": "' + "[{" * 1_000 + '", "n": [1]}')
    assert doc["n"] == [Decimal(1)]


def test_an_unterminated_string_with_many_escapes_is_rejected_quickly():
    # Each escaped quote could restart a string scan; the check stays linear.
    e = rejected("[" * 40 + '"' + '\\"' * 200_000)
    assert e.code == "too_deep"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(constant):
    e = rejected('{"equity": ' + constant + "}")
    assert (e.code, e.reason) == (
        "non_finite_number",
        f"{constant} is not allowed: numbers must be finite",
    )


def test_size_and_encoding_and_syntax_are_reasons():
    assert rejected(b"[" + b" " * 100 + b"]", max_bytes=64).code == "too_large"
    e = rejected(b'{"id": "Z\xfcrich"}')
    assert e.code == "malformed_json" and "not UTF-8 text (byte 9" in e.reason
    e = rejected("{oops")
    assert e.code == "malformed_json" and e.reason.startswith("invalid JSON at column 2")


def test_load_object_names_what_it_got_instead():
    for text, kind in [
        ("[1]", "an array"),
        ('"x"', "a string"),
        ("1", "a number"),
        ("null", "null"),
    ]:
        with pytest.raises(Rejected, match=f"expected a JSON object, got {kind}"):
            untrusted.load_object(text)


def test_json_lines_split_on_newline_only():
    # U+2028, U+2029 and U+0085 are valid raw characters inside a JSON string.
    lines = ['{"id": "a\u2028b"}', '{"id": "c\u0085d\u2029e"}', "", "  ", '{"id": "f"}']
    stream = io.BytesIO("\n".join(lines).encode("utf-8") + b"\n")
    got = [(n, untrusted.load_object(line)["id"]) for n, line in untrusted.iter_lines(stream)]
    assert got == [(1, "a\u2028b"), (2, "c\u0085d\u2029e"), (5, "f")]
    text = "\n".join(lines)
    assert [n for n, _ in untrusted.split_lines(text)] == [1, 2, 5]


def test_an_overlong_line_is_cut_and_rejected_and_the_next_line_still_read():
    stream = io.BytesIO(b"[" + b"1," * 100 + b"1]\n" + b'{"id": "next"}\n')
    (n1, long), (n2, nxt) = list(untrusted.iter_lines(stream, max_bytes=50))
    assert (n1, len(long)) == (1, 51)
    with pytest.raises(Rejected, match="larger than 50 bytes"):
        untrusted.loads(long, max_bytes=50)
    assert (n2, untrusted.load_object(nxt)) == (2, {"id": "next"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-02-16T14:30:00Z", datetime(2026, 2, 16, 14, 30, tzinfo=UTC)),
        ("2026-02-16T09:30:00.25-05:00", datetime(2026, 2, 16, 14, 30, 0, 250_000, tzinfo=UTC)),
        ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_iso_8601_timestamps_with_a_zone_are_read(value, expected):
    assert untrusted.parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1_771_252_200, "timestamp must be an ISO-8601 string with a zone (e.g. 2026-02-16T14:30:00Z), not a number"),
        (Decimal("1771252200.5"), "not a number"),
        ("1771252200", "is not ISO-8601 with a zone"),
        ("2026-02-16T14:30:00", "is not ISO-8601 with a zone"),
        ("2026-02-16 14:30:00Z", "is not ISO-8601 with a zone"),
        ("2026-02-16T14:30:00+0500", "is not ISO-8601 with a zone"),
        ("2026-02-16T14:30:00.1234567Z", "is not ISO-8601 with a zone"),
        ("2026-02-30T14:30:00Z", "is not a valid date and time: day is out of range"),
        ("9999-12-31T23:00:00-05:00", "timestamp 9999-12-31T23:00:00-05:00 is outside the range of UTC dates"),
        ("0001-01-01T00:00:00+05:00", "is outside the range of UTC dates"),
        (None, "not null"),
        (True, "not true"),
    ],
)  # fmt: skip
def test_other_timestamps_are_rejected_with_a_reason(value, reason):
    with pytest.raises(ValueError) as info:
        untrusted.parse_timestamp(value)
    assert reason in str(info.value)


def test_the_timestamp_type_rejects_epoch_numbers_in_a_model():
    class M(BaseModel):
        ts: untrusted.Timestamp

    assert M.model_validate({"ts": "2026-02-16T14:30:00Z"}).ts.year == 2026
    with pytest.raises(ValidationError, match="ISO-8601"):
        M.model_validate({"ts": 1_771_252_200})
    with pytest.raises(ValidationError, match="outside the range of UTC dates"):
        M.model_validate({"ts": "9999-12-31T23:00:00-05:00"})
