"""Message body decoding and the test encoders."""

from __future__ import annotations

import base64
import sys

import pytest
from pytoniq_core import Cell, begin_cell

from cocoon_platform.accounts.keys import normalise_deposit_code
from cocoon_platform.ton.address import TonAddress
from cocoon_platform.ton.comment import (
    BodyKind,
    MessageBody,
    decode_body,
)
from cocoon_simulator.ton_bodies import binary_comment, encrypted_comment, jetton_notification, text_comment

REFERENCE_BODY = "te6cckEBAQEAEAAAHAAAAAAxOTg1NTk3NjUxSmLi/w=="
EMPTY_CELL = "te6cckEBAQEAAgAAAEysuc0="


def _b64(cell: Cell) -> str:
    return base64.b64encode(cell.to_boc()).decode()


def _cells(body_b64: str) -> list[Cell]:
    """The snake chain of a body, root first."""
    cell = Cell.one_from_boc(body_b64)
    chain = [cell]
    while cell.refs:
        cell = cell.refs[0]
        chain.append(cell)
    return chain


def test_reference_example() -> None:
    assert decode_body(REFERENCE_BODY) == MessageBody(BodyKind.TEXT, "1985597651")


def test_encoder_matches_toncenter_serialisation() -> None:
    assert text_comment("1985597651") == REFERENCE_BODY


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ABCD1234",
        " abcd1234 ",
        "Привет, мир! 🌍",
        "x" * 123,
        "x" * 124,
        "y" * (123 + 127),
        "y" * (123 + 127 + 1),
        "деньги " * 100,
        "🚀" * 500,
    ],
)
def test_text_round_trip(text: str) -> None:
    assert decode_body(text_comment(text)) == MessageBody(BodyKind.TEXT, text)


def test_long_comment_uses_snake_cells_of_the_right_size() -> None:
    data = bytes(range(65, 91)) * 20  # 520 bytes
    chain = _cells(text_comment(data.decode()))
    assert [len(cell.bits) // 8 for cell in chain] == [4 + 123, 127, 127, 127, 16]
    assert all(len(cell.refs) <= 1 for cell in chain)


def test_multibyte_character_split_across_cells() -> None:
    text = "a" * 122 + "é" + "ü" * 100  # 'é' straddles the root / first ref boundary
    assert len(_cells(text_comment(text))) == 3
    assert decode_body(text_comment(text)).text == text


def test_manual_snake_from_other_wallet_layouts() -> None:
    # Wallets may split text unevenly; only the concatenation matters.
    tail = begin_cell().store_bytes(b"1234").end_cell()
    root = begin_cell().store_uint(0, 32).store_bytes(b"ABCD").store_ref(tail).end_cell()
    assert decode_body(_b64(root)) == MessageBody(BodyKind.TEXT, "ABCD1234")


def test_base64url_body_is_accepted() -> None:
    body = text_comment("?>?>?>?>~~~")
    url = body.replace("+", "-").replace("/", "_")
    assert decode_body(url).text == "?>?>?>?>~~~"


def test_binary_comments() -> None:
    assert decode_body(binary_comment(b"\x00\x01")).kind is BodyKind.BINARY
    assert decode_body(binary_comment(b"")).kind is BodyKind.BINARY
    invalid_utf8 = begin_cell().store_uint(0, 32).store_bytes(b"AB\xc3\x28").end_cell()
    assert decode_body(_b64(invalid_utf8)) == MessageBody(BodyKind.BINARY)


def test_encrypted_and_jetton_and_other_ops() -> None:
    assert decode_body(encrypted_comment(b"k" * 200)).kind is BodyKind.ENCRYPTED
    sender = TonAddress.parse("EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp")
    for comment in (None, "ABCD1234"):
        body = jetton_notification(7, 5_000_000, (sender.workchain, sender.hash), comment)
        assert decode_body(body) == MessageBody(BodyKind.JETTON_NOTIFICATION)
    other = begin_cell().store_uint(0x0F8A7EA5, 32).store_uint(0, 64).end_cell()
    assert decode_body(_b64(other)).kind is BodyKind.OTHER
    bounced = begin_cell().store_uint(0xFFFFFFFF, 32).store_uint(0, 32).end_cell()
    assert decode_body(_b64(bounced)).kind is BodyKind.OTHER


def test_jetton_notification_layout() -> None:
    sender = TonAddress.parse("EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp")
    root = Cell.one_from_boc(jetton_notification(7, 5_000_000, (sender.workchain, sender.hash), "hi")).begin_parse()
    assert root.load_uint(32) == 0x7362D09C
    assert root.load_uint(64) == 7
    assert root.load_coins() == 5_000_000
    assert root.load_address().to_str(is_user_friendly=False) == sender.to_raw()
    assert root.load_bit() == 1
    assert decode_body(_b64(root.load_ref())).text == "hi"


@pytest.mark.parametrize("body", [None, "", EMPTY_CELL])
def test_empty_bodies(body: str | None) -> None:
    assert decode_body(body) == MessageBody(BodyKind.EMPTY)


def test_body_shorter_than_an_op_is_empty() -> None:
    short = begin_cell().store_uint(0, 31).end_cell()
    assert decode_body(_b64(short)).kind is BodyKind.EMPTY


@pytest.mark.parametrize(
    "body",
    [
        "not base64!",
        "abc",
        "AAAA",
        base64.b64encode(b"hello world, not a boc").decode(),
        REFERENCE_BODY[:-8],
        REFERENCE_BODY.replace("xOTg1", "xOTg2"),  # CRC32 of the BoC no longer matches
        "é",
        123,
        ["x"],
    ],
)
def test_malformed_bodies(body: object) -> None:
    assert decode_body(body) == MessageBody(BodyKind.MALFORMED)  # type: ignore[arg-type]


def test_text_not_byte_aligned_is_malformed() -> None:
    cell = begin_cell().store_uint(0, 32).store_bytes(b"AB").store_bit(1).end_cell()
    assert decode_body(_b64(cell)).kind is BodyKind.MALFORMED


def test_text_with_two_refs_is_malformed() -> None:
    ref = begin_cell().store_bytes(b"x").end_cell()
    cell = begin_cell().store_uint(0, 32).store_bytes(b"AB").store_ref(ref).store_ref(ref)
    assert decode_body(_b64(cell.end_cell())).kind is BodyKind.MALFORMED


def test_non_text_ops_with_any_payload_are_not_malformed() -> None:
    # Only comment payloads need snake layout; other ops are classified by op alone.
    cell = begin_cell().store_uint(0x2167DA4B, 32).store_bit(1).end_cell()
    assert decode_body(_b64(cell)).kind is BodyKind.ENCRYPTED


def test_deep_snake_chain_is_read_iteratively() -> None:
    # Cells nest at most 1023 deep; the reader must not depend on the recursion limit.
    # pytoniq-core serialises recursively, so building the test body needs a higher limit.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        cell = begin_cell().store_bytes(b"z").end_cell()
        for _ in range(1000):
            cell = begin_cell().store_bytes(b"z").store_ref(cell).end_cell()
        body = _b64(begin_cell().store_uint(0, 32).store_ref(cell).end_cell())
    finally:
        sys.setrecursionlimit(limit)
    assert decode_body(body) == MessageBody(BodyKind.TEXT, "z" * 1001)


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("abcd1234", "ABCD1234"),
        ("  AbCd1234\n", "ABCD1234"),
        ("\u200bABCD1234\ufeff", "ABCD1234"),
        ("\u00a0ABCD1234\t", "ABCD1234"),
        ("AB CD", "AB CD"),
    ],
)
def test_normalise_code(typed: str, code: str) -> None:
    assert normalise_deposit_code(typed) == code
