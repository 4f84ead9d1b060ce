"""Message bodies: decoding comments from BoC and encoding test bodies.

Decoding rules (first 32 bits of the root cell are the op):
- no body, or a root cell shorter than 32 bits -> ``empty``
- op 0, snake bytes valid UTF-8 not starting with 0xff -> ``text``
- op 0, snake bytes starting with 0xff or not valid UTF-8 -> ``binary``
- op 0x2167da4b -> ``encrypted``; op 0x7362d09c -> ``jetton_notification``
- any other op -> ``other``; anything that cannot be parsed -> ``malformed``

Snake text: the root holds up to 123 bytes after the op, each continuation cell (its single
reference) up to 127 bytes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import Enum

from pytoniq_core import Address, Builder, Cell, Slice, begin_cell

from cocoon_platform.ton.address import TonAddress

__all__ = [
    "OP_ENCRYPTED_COMMENT",
    "OP_JETTON_NOTIFICATION",
    "OP_TEXT_COMMENT",
    "BodyKind",
    "MessageBody",
    "decode_body",
    "encode_binary_comment",
    "encode_encrypted_comment",
    "encode_jetton_notification",
    "encode_text_comment",
]

OP_TEXT_COMMENT = 0x00000000
OP_ENCRYPTED_COMMENT = 0x2167DA4B
OP_JETTON_NOTIFICATION = 0x7362D09C

_ROOT_BYTES = 123  # 1023 bits minus the 32-bit op, rounded down to whole bytes
_CONT_BYTES = 127  # 1023 bits rounded down to whole bytes
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
    """A decoded body; ``text`` is set only for ``BodyKind.TEXT``."""

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


def _snake_cell(op: int, data: bytes) -> Cell:
    """A cell with a 32-bit op followed by ``data`` in snake form."""
    tail: Cell | None = None
    rest = data[_ROOT_BYTES:]
    chunks = [rest[i : i + _CONT_BYTES] for i in range(0, len(rest), _CONT_BYTES)]
    for chunk in reversed(chunks):  # build from the last cell so each can reference the next
        builder = begin_cell().store_bytes(chunk)
        tail = _with_ref(builder, tail).end_cell()
    root = begin_cell().store_uint(op, 32).store_bytes(data[:_ROOT_BYTES])
    return _with_ref(root, tail).end_cell()


def _with_ref(builder: Builder, ref: Cell | None) -> Builder:
    return builder if ref is None else builder.store_ref(ref)


def _to_b64(cell: Cell) -> str:
    # hash_crc32 gives the "te6cck..." serialisation toncenter returns.
    return base64.b64encode(cell.to_boc(hash_crc32=True)).decode("ascii")


def encode_text_comment(text: str) -> str:
    """Base64 BoC of a text comment (op 0 + snake UTF-8)."""
    return _to_b64(_snake_cell(OP_TEXT_COMMENT, text.encode("utf-8")))


def encode_binary_comment(data: bytes) -> str:
    """Base64 BoC of a binary comment (op 0, then 0xff and ``data``)."""
    return _to_b64(_snake_cell(OP_TEXT_COMMENT, bytes([_BINARY_PREFIX]) + data))


def encode_encrypted_comment(payload: bytes) -> str:
    """Base64 BoC with the encrypted-comment op; ``payload`` stands in for the ciphertext."""
    return _to_b64(_snake_cell(OP_ENCRYPTED_COMMENT, payload))


def encode_jetton_notification(
    query_id: int, jetton_amount: int, sender: TonAddress, forward_comment: str | None = None
) -> str:
    """Base64 BoC of a jetton ``transfer_notification`` (TEP-74).

    Layout: op, query_id:uint64, amount:Coins, sender:MsgAddress,
    forward_payload:(Either Cell ^Cell) -- the comment, if any, goes in a reference.
    """
    builder = (
        begin_cell()
        .store_uint(OP_JETTON_NOTIFICATION, 32)
        .store_uint(query_id, 64)
        .store_coins(jetton_amount)
        .store_address(Address((sender.workchain, sender.hash)))
    )
    if forward_comment is None:
        builder = builder.store_bit(0)
    else:
        comment = _snake_cell(OP_TEXT_COMMENT, forward_comment.encode("utf-8"))
        builder = builder.store_bit(1).store_ref(comment)
    return _to_b64(builder.end_cell())
