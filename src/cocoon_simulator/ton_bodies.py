"""Message bodies as wallets write them, for the simulated chain.

Written from the TON conventions themselves, not from the platform's decoder
(cocoon_platform/ton/comment.py), so that a mismatch between what wallets send and what the
platform reads shows up in tests instead of cancelling out:
- text comment: op 0 (32 bits), then the UTF-8 text as snake data (`store_snake_bytes` fills
  each cell with whole bytes and continues in its one reference, as wallets' string tails do);
- binary comment: op 0, then 0xff and the bytes;
- encrypted comment: op 0x2167da4b, then the payload (here random bytes stand in for the
  ciphertext: only the op matters to a reader without the key);
- jetton transfer notification (TEP-74): op 0x7362d09c, query_id:uint64, amount:Coins,
  sender:MsgAddress, forward_payload:(Either Cell ^Cell), the comment in a reference;
- bounced message: 0xffffffff, then the start of the original body.
Each is a base64 bag of cells with CRC32, the `te6cck…` form toncenter returns.
"""

from __future__ import annotations

import base64

from pytoniq_core import Address, Builder, Cell, begin_cell

__all__ = [
    "OPCODES",
    "bounced_body",
    "empty_body",
    "binary_comment",
    "encrypted_comment",
    "jetton_notification",
    "text_comment",
]

OPCODES = {"text": 0x00000000, "binary": 0x00000000, "encrypted": 0x2167DA4B, "jetton": 0x7362D09C}
BOUNCED = 0xFFFFFFFF


def _boc(cell: Cell) -> str:
    return base64.b64encode(cell.to_boc(hash_crc32=True)).decode("ascii")


def _comment_cell(data: bytes) -> Cell:
    cell: Cell = begin_cell().store_uint(OPCODES["text"], 32).store_snake_bytes(data).end_cell()
    return cell


def empty_body() -> str:
    return _boc(begin_cell().end_cell())


def text_comment(text: str) -> str:
    return _boc(_comment_cell(text.encode("utf-8")))


def binary_comment(data: bytes) -> str:
    return _boc(_comment_cell(b"\xff" + data))


def encrypted_comment(payload: bytes) -> str:
    return _boc(begin_cell().store_uint(OPCODES["encrypted"], 32).store_snake_bytes(payload).end_cell())


def jetton_notification(query_id: int, amount: int, sender: tuple[int, bytes], comment: str | None) -> str:
    """`sender` is (workchain, 32-byte account hash)."""
    body: Builder = (
        begin_cell()
        .store_uint(OPCODES["jetton"], 32)
        .store_uint(query_id, 64)
        .store_coins(amount)
        .store_address(Address(sender))
    )
    body = body.store_bit(0) if comment is None else body.store_bit(1).store_ref(_comment_cell(comment.encode("utf-8")))
    return _boc(body.end_cell())


def bounced_body(original: bytes) -> str:
    """A bounce: 0xffffffff, then the original body's start (its op 0 and up to 24 bytes)."""
    return _boc(begin_cell().store_uint(BOUNCED, 32).store_uint(0, 32).store_bytes(original[:24]).end_cell())
