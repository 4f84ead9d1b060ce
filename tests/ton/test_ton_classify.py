"""Parsing toncenter v3 transactions and classifying them as deposits."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from cocoon_platform.ton.address import TonAddress
from cocoon_platform.ton.comment import (
    BodyKind,
    MessageBody,
)
from cocoon_platform.ton.toncenter import (
    ChainTransaction,
    Classification,
    ProviderError,
    classify,
    parse_transaction,
    parse_transactions_response,
)
from cocoon_simulator.ton_bodies import binary_comment, encrypted_comment, jetton_notification, text_comment

HASH = bytes(range(32))
SOURCE = "0:E1CB4B3B1C1D6D7E9F0A1B2C3D4E5F60718293A4B5C6D7E8F9011223344601A"
REFERENCE_TX: dict[str, Any] = {
    "account": "0:169C4B3B1C1D6D7E9F0A1B2C3D4E5F60718293A4B5C6D7E8F9011223344F16",
    "hash": base64.b64encode(HASH).decode(),
    "lt": "22161219000001",
    "now": 1717046274,
    "mc_block_seqno": 19702476,
    "description": {"type": "ord", "aborted": False, "compute_ph": {"success": True}},
    "in_msg": {
        "source": SOURCE,
        "value": "1000000000",
        "opcode": "0x00000000",
        "bounce": False,
        "bounced": False,
        "message_content": {
            "body": "te6cckEBAQEAEAAAHAAAAAAxOTg1NTk3NjUxSmLi/w==",
            "decoded": {"@type": "text_comment", "comment": "1985597651"},
        },
    },
    "out_msgs": [],
}


def tx(**changes: Any) -> dict[str, Any]:
    """The reference transaction with dotted-path fields replaced (None deletes)."""
    raw = copy.deepcopy(REFERENCE_TX)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = raw
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return raw


def parsed(**changes: Any) -> ChainTransaction:
    return parse_transaction(tx(**changes))


def test_reference_transaction_parses() -> None:
    result = parse_transaction(REFERENCE_TX)
    assert result == ChainTransaction(
        hash=HASH,
        hash_b64=REFERENCE_TX["hash"],
        lt=22161219000001,
        now=1717046274,
        account=REFERENCE_TX["account"],
        finalised=True,
        incoming=True,
        bounced=False,
        aborted=False,
        has_out_msgs=False,
        source=SOURCE,
        value_nanoton=1_000_000_000,
        body=MessageBody(BodyKind.TEXT, "1985597651"),
    )
    assert classify(result) is Classification.CREDIT


def test_hash_forms() -> None:
    assert parsed(hash=HASH.hex()).hash == HASH
    assert parsed(hash=HASH.hex().upper()).hash == HASH
    url_safe = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()
    result = parsed(hash=url_safe)
    assert result.hash == b"\xfb\xff" * 16
    assert result.hash_b64 == base64.b64encode(b"\xfb\xff" * 16).decode()


@pytest.mark.parametrize("bad_hash", [None, "", "abc", 5, base64.b64encode(bytes(31)).decode(), "g" * 64])
def test_bad_hash_is_a_provider_error(bad_hash: Any) -> None:
    raw = tx(hash=bad_hash) if bad_hash is not None else tx(hash=None)
    with pytest.raises(ProviderError):
        parse_transaction(raw)


@pytest.mark.parametrize(
    "changes",
    [
        {"lt": None},
        {"lt": "12a"},
        {"lt": "-5"},
        {"lt": 1.5},
        {"lt": True},
        {"now": None},
        {"account": None},
        {"account": 7},
        {"in_msg": "x"},
        {"in_msg__source": 5},
        {"in_msg__value": "1e9"},
        {"in_msg__value": -1},
        {"out_msgs": "none"},
        {"description": []},
    ],
)
def test_unexpected_shapes_are_provider_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(ProviderError):
        parsed(**changes)


@pytest.mark.parametrize("payload", [None, [], {}, {"transactions": {}}, {"transactions": [1]}])
def test_bad_response_shapes(payload: Any) -> None:
    with pytest.raises(ProviderError):
        parse_transactions_response(payload)


def test_lt_and_value_as_numbers() -> None:
    result = parsed(lt=47000000000001, in_msg__value=5)
    assert (result.lt, result.value_nanoton) == (47000000000001, 5)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, Classification.CREDIT),
        # not finalised yet
        ({"mc_block_seqno": None}, Classification.PENDING),
        ({"emulated": True}, Classification.PENDING),
        # never a deposit
        ({"in_msg__bounced": True}, Classification.IGNORE),
        ({"description__aborted": True}, Classification.IGNORE),
        ({"description": None}, Classification.IGNORE),
        ({"description__aborted": None}, Classification.IGNORE),
        ({"description__compute_ph__success": False}, Classification.IGNORE),
        ({"out_msgs": [{"source": "x"}]}, Classification.IGNORE),
        ({"in_msg__value": "0"}, Classification.IGNORE),
        ({"in_msg__value": None}, Classification.IGNORE),
        ({"in_msg__source": None}, Classification.IGNORE),
        ({"in_msg__source": ""}, Classification.IGNORE),
        ({"in_msg": None}, Classification.IGNORE),
        # kept for an operator
        ({"in_msg__message_content": None}, Classification.UNMATCHED),
        ({"in_msg__message_content__body": None, "in_msg__message_content__decoded": None}, Classification.UNMATCHED),
        (
            {"in_msg__message_content__body": "te6cckEBAQEAAgAAAEysuc0=", "in_msg__message_content__decoded": None},
            Classification.UNMATCHED,
        ),
        ({"in_msg__message_content__body": binary_comment(b"x")}, Classification.UNMATCHED),
        ({"in_msg__message_content__body": encrypted_comment(b"x" * 64)}, Classification.UNMATCHED),
        ({"in_msg__message_content__body": "!!!"}, Classification.UNMATCHED),
        ({"in_msg__message_content__body": "te6cckEBAQEACgAAEA+KfqUAAAAAe2Fjgw=="}, Classification.UNMATCHED),
        # compute skipped without "success" is not a failure by itself
        ({"description__compute_ph": {"skipped": True}}, Classification.CREDIT),
    ],
)
def test_classification(changes: dict[str, Any], expected: Classification) -> None:
    assert classify(parsed(**changes)) is expected


def test_jetton_notification_is_ignored() -> None:
    sender = TonAddress.parse("EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp")
    body = jetton_notification(1, 10**9, (sender.workchain, sender.hash), "ABCD1234")
    result = parsed(in_msg__message_content__body=body, in_msg__message_content__decoded=None)
    assert result.body.kind is BodyKind.JETTON_NOTIFICATION
    assert classify(result) is Classification.IGNORE


def test_decoded_comment_used_when_body_absent() -> None:
    result = parsed(
        in_msg__message_content__body=None,
        in_msg__message_content__decoded={"@type": "text_comment", "comment": "ABCD1234"},
    )
    assert result.body == MessageBody(BodyKind.TEXT, "ABCD1234")
    assert classify(result) is Classification.CREDIT


def test_body_wins_over_a_contradicting_decoded_label() -> None:
    result = parsed(in_msg__message_content__body=binary_comment(b"ABCD1234"))
    assert result.body.kind is BodyKind.BINARY
    assert classify(result) is Classification.UNMATCHED
    text = parsed(in_msg__message_content__body=text_comment("REAL0001"))
    assert text.body.text == "REAL0001"


@pytest.mark.parametrize(
    "decoded", [None, "text", {"@type": "binary_comment"}, {"@type": "text_comment", "comment": 5}]
)
def test_unusable_decoded_without_body(decoded: Any) -> None:
    result = parsed(in_msg__message_content__body=None, in_msg__message_content__decoded=decoded)
    assert result.body.kind is BodyKind.EMPTY


def test_non_string_body_is_malformed_not_a_crash() -> None:
    assert parsed(in_msg__message_content__body=12).body.kind is BodyKind.MALFORMED
