"""Message bodies: decoding comments from BoC. (The simulator writes bodies with an encoder of
its own, cocoon_simulator/ton_bodies.py, so a decoding mistake can't be mirrored there.)

Decoding rules (first 32 bits of the root cell are the op):
- no body, or a root cell shorter than 32 bits -> `empty`
- op 0, snake bytes valid UTF-8 not starting with 0xff -> `text`
- op 0, snake bytes starting with 0xff or not valid UTF-8 -> `binary`
- op 0x2167da4b -> `encrypted`; op 0x7362d09c -> `jetton_notification`
- any other op -> `other`; anything that cannot be parsed -> `malformed`

Snake text: whole bytes in each cell, continued in its single reference (wallets fill the root's
123 bytes after the op, then 127 per cell; any split into whole bytes is read).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import Enum

from pytoniq_core import Cell, Slice

__all__ = [
    "OP_ENCRYPTED_COMMENT",
    "OP_JETTON_NOTIFICATION",
    "OP_TEXT_COMMENT",
    "BodyKind",
    "MessageBody",
    "decode_body",
]

OP_TEXT_COMMENT = 0x00000000
OP_ENCRYPTED_COMMENT = 0x2167DA4B
OP_JETTON_NOTIFICATION = 0x7362D09C

_BINARY_PREFIX = 0xFF


class BodyKind(Enum):
    TEXT = "text"
    BINARY = "binary"
    ENCRYPTED = "encrypted"
    JETTON_NOTIFICATION = "jetton_notification"
    EMPTY = "empty"
    OTHER = "other"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class MessageBody:
    """A decoded body; `text` is set only for `BodyKind.TEXT`."""

    kind: BodyKind
    text: str | None = None


class _Malformed(Exception):
    pass


def decode_body(body_b64: str | None) -> MessageBody:
    """Classify a base64 BoC message body; never raises."""
    if not body_b64:
        return MessageBody(BodyKind.EMPTY)
    if not isinstance(body_b64, str):  # callers hand over untrusted JSON
        return MessageBody(BodyKind.MALFORMED)
    try:
        # Accept base64url too (some providers emit it), but never skip invalid characters.
        boc = base64.b64decode(body_b64.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return MessageBody(BodyKind.MALFORMED)
    try:
        root = Cell.one_from_boc(boc).begin_parse()
        if root.remaining_bits < 32:
            return MessageBody(BodyKind.EMPTY)
        op = root.load_uint(32)
        if op == OP_TEXT_COMMENT:
            return _decode_comment(_read_snake(root))
    # pytoniq-core signals bad input with assorted exception types (assert, IndexError, ...).
    except Exception:
        return MessageBody(BodyKind.MALFORMED)
    if op == OP_ENCRYPTED_COMMENT:
        return MessageBody(BodyKind.ENCRYPTED)
    if op == OP_JETTON_NOTIFICATION:
        return MessageBody(BodyKind.JETTON_NOTIFICATION)
    return MessageBody(BodyKind.OTHER)


def _read_snake(cell: Slice) -> bytes:
    """Concatenate snake data iteratively (a recursive reader could overflow the stack)."""
    chunks: list[bytes] = []
    while True:
        if cell.remaining_bits % 8 or cell.remaining_refs > 1:
            raise _Malformed("not snake data")
        chunks.append(cell.load_bytes(cell.remaining_bits // 8))
        if not cell.remaining_refs:
            return b"".join(chunks)
        cell = cell.load_ref().begin_parse()


def _decode_comment(data: bytes) -> MessageBody:
    if data[:1] == bytes([_BINARY_PREFIX]):
        return MessageBody(BodyKind.BINARY)
    try:
        return MessageBody(BodyKind.TEXT, data.decode("utf-8"))
    except UnicodeDecodeError:
        return MessageBody(BodyKind.BINARY)
