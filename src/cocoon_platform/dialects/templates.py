"""Bytes templates for the dialects' stream events (`responses.py`, `messages.py`).

The texts of one read are encoded in one call: orjson's indented array of them holds each
text's JSON on a line of its own (a line break inside a text is escaped), between
`TEXTS_START`, `TEXTS_BETWEEN` and `TEXTS_END`, so replacing the separators with the bytes
that close one event and open the next writes all their events at once.
"""

from __future__ import annotations

from typing import Any

import orjson

# A stream's events are written from bytes templates, made at import by orjson from the same
# dicts a whole answer is made of, with a marker where a value goes: orjson writes a Fragment as
# it is and escapes every control character inside strings, so a marker's byte occurs in its
# output only where it was put. A template is filled with `%`, its slots in the order they
# appear, and holds no `%` of its own (`with_slots` checks).
# An integer's slot is filled with its digits as bytes (`DIGITS`), not by `%d`: `%b` of ready
# bytes costs half as much, and a stream fills some 60 integers.
JSON_SLOT = orjson.Fragment(b"\x00")  # JSON bytes: `%b`
INT_SLOT = orjson.Fragment(b"\x01")  # an integer, its digits: `%b`
# An integer, and JSON bytes: slots of the template the first fill makes.
LATER_INT_SLOT = orjson.Fragment(b"\x02")
LATER_JSON_SLOT = orjson.Fragment(b"\x03")
# An integer filled by `%d`: one whose digits no table holds (a usage's counts), or one filled once.
DECIMAL_SLOT = orjson.Fragment(b"\x04")


def with_slots(encoded: bytes) -> bytes:
    """orjson's output as a template: each marker replaced by its slot."""
    if b"%" in encoded:
        raise ValueError(f"a template holds a '%' of its own: {encoded!r}")
    return (
        encoded.replace(b"\x00", b"%b")
        .replace(b"\x01", b"%b")
        .replace(b"\x02", b"%%b")
        .replace(b"\x03", b"%%b")
        .replace(b"\x04", b"%d")
    )


# The digits of 0, 1, 2, ... for the integer slots, shared by every stream and only ever
# appended to: a stream that numbers past them grows them first (`digits_through`).
DIGITS: list[bytes] = [b"%d" % number for number in range(4096)]


def digits_through(last: int) -> list[bytes]:
    """`DIGITS`, grown if needed to hold the digits of `last`."""
    if last >= len(DIGITS):
        DIGITS.extend(b"%d" % number for number in range(len(DIGITS), 2 * last))
    return DIGITS


def encoded_template(value: Any) -> bytes:
    return with_slots(orjson.dumps(value))


def event_templates(*events: tuple[str, dict[str, Any]]) -> bytes:
    """SSE events as one template: each `event: <type>` with the event (`type` first) as data."""
    return b"".join(
        b"event: %b\ndata: %b\n\n" % (kind.encode(), encoded_template({"type": kind, **fields}))
        for kind, fields in events
    )


TEXTS_START, TEXTS_BETWEEN, TEXTS_END = b"[\n  ", b",\n  ", b"\n]"
TEXTS = slice(len(TEXTS_START), -len(TEXTS_END))  # of that array, its texts and separators
