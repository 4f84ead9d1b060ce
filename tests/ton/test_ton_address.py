"""Strict TON address parsing, cross-checked against pytoniq-core."""

from __future__ import annotations

import base64
import random

import pytest
from pytoniq_core import Address

from cocoon_platform.ton.address import InvalidAddress, TonAddress, crc16_xmodem

WALLET = "EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp"
WALLET_RAW = "0:2fe86ca77d7eabad195b363607a5ae4ccf550313ad6ce553e0f9337cb0115e47"
# Real mainnet addresses: a basechain wallet and the elector / config contracts.
MAINNET = [
    WALLET,
    "UQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR4ls",
    "EQCD39VS5jcptHL8vMjEXrzGaRcCVYto7HUn4bpAOg8xqB2N",
    "Ef8zMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM0vF",
    "Ef9VVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVVbxn",
]


def _friendly_bytes(flag: int, workchain: int, account: bytes, crc: int | None = None) -> str:
    body = bytes([flag]) + workchain.to_bytes(1, "big", signed=True) + account
    crc = crc16_xmodem(body) if crc is None else crc
    return base64.urlsafe_b64encode(body + crc.to_bytes(2, "big")).decode()


def test_crc16_xmodem_check_value() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3


@pytest.mark.parametrize("text", MAINNET)
def test_mainnet_addresses_parse_and_round_trip(text: str) -> None:
    address = TonAddress.parse(text)
    assert address.to_friendly() == text
    assert address.to_raw() == Address(text).to_str(is_user_friendly=False)


def test_parse_wallet_fields() -> None:
    address = TonAddress.parse(WALLET)
    assert address.workchain == 0
    assert address.hash.hex() == WALLET_RAW[2:]
    assert address.bounceable and not address.testnet
    assert address.to_raw() == WALLET_RAW
    assert str(address) == WALLET


def test_masterchain_workchain_is_signed() -> None:
    address = TonAddress.parse("Ef8zMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM0vF")
    assert address.workchain == -1
    assert address.to_raw() == "-1:" + "33" * 32


def test_equality_ignores_flags_and_form() -> None:
    bounceable = TonAddress.parse(WALLET)
    non_bounceable = TonAddress.parse("UQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR4ls")
    raw = TonAddress.parse(WALLET_RAW.upper())
    standard = TonAddress.parse(bounceable.to_friendly(url_safe=False, testnet=True))
    assert not non_bounceable.bounceable
    assert standard.testnet
    assert bounceable == non_bounceable == raw == standard
    assert len({bounceable, non_bounceable, raw, standard}) == 1


def test_to_friendly_flag_overrides() -> None:
    address = TonAddress.parse(WALLET)
    assert address.to_friendly(bounceable=False) == "UQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR4ls"
    assert address.to_friendly(testnet=True).startswith("kQ")
    assert address.to_friendly(bounceable=False, testnet=True).startswith("0Q")


def test_surrounding_whitespace_is_ignored() -> None:
    assert TonAddress.parse(f"  {WALLET}\n") == TonAddress.parse(WALLET)


def test_random_round_trips_match_pytoniq() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        workchain = rng.choice([0, -1])
        account = rng.randbytes(32)
        bounceable, testnet, url_safe = (rng.random() < 0.5 for _ in range(3))
        ours = TonAddress(workchain, account, bounceable, testnet)
        text = ours.to_friendly(url_safe=url_safe)
        theirs = Address((workchain, account)).to_str(
            is_url_safe=url_safe, is_bounceable=bounceable, is_test_only=testnet
        )
        assert text == theirs
        parsed = TonAddress.parse(text)
        assert (parsed.workchain, parsed.hash) == (workchain, account)
        assert (parsed.bounceable, parsed.testnet) == (bounceable, testnet)
        assert TonAddress.parse(ours.to_raw()) == ours
        assert Address(text).to_str(is_user_friendly=False) == ours.to_raw()


def test_every_single_character_change_is_rejected() -> None:
    # CRC16 catches every burst error up to 16 bits; one character is 6.
    for position, original in enumerate(WALLET):
        for replacement in "A", "z", "-":
            if replacement == original:
                continue
            corrupted = WALLET[:position] + replacement + WALLET[position + 1 :]
            with pytest.raises(InvalidAddress):
                TonAddress.parse(corrupted)


def test_flipped_hash_character_is_a_crc_error() -> None:
    corrupted = WALLET[:10] + ("B" if WALLET[10] != "B" else "C") + WALLET[11:]
    with pytest.raises(InvalidAddress, match="CRC"):
        TonAddress.parse(corrupted)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "length"),
        (WALLET[:-1], "length"),
        (WALLET + "A", "length"),
        (WALLET[:20] + "!" + WALLET[21:], "base64"),
        (WALLET[:20] + " " + WALLET[21:], "base64"),
        # '-' and '/' together: neither alphabet.
        (WALLET[:20] + "/" + WALLET[21:], "base64"),
        ("0:" + "ab" * 31, "64"),
        ("0:" + "ab" * 33, "64"),
        ("0:" + "zz" * 32, "raw"),
        ("1:" + "ab" * 32, "workchain"),
        ("00:" + "ab" * 32, "workchain"),
        ("-0:" + "ab" * 32, "workchain"),
        (":" + "ab" * 32, "raw"),
        ("0:ab:cd", "raw"),
    ],
)
def test_invalid_addresses_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidAddress, match=reason):
        TonAddress.parse(text)


def test_unknown_flag_is_rejected_even_with_valid_crc() -> None:
    account = bytes(range(32))
    for flag in (0x00, 0x01, 0x10, 0x50, 0x90, 0xFF):
        with pytest.raises(InvalidAddress, match="flag"):
            TonAddress.parse(_friendly_bytes(flag, 0, account))
    # pytoniq-core accepts such input; this is why the parser is hand-written.
    Address(_friendly_bytes(0x01, 0, account))


def test_unknown_workchain_is_rejected_even_with_valid_crc() -> None:
    for workchain in (1, 5, -2, 127):
        with pytest.raises(InvalidAddress, match="workchain"):
            TonAddress.parse(_friendly_bytes(0x11, workchain, bytes(32)))


def test_wrong_crc_is_rejected() -> None:
    body = bytes([0x11, 0]) + bytes(32)
    with pytest.raises(InvalidAddress, match="CRC"):
        TonAddress.parse(_friendly_bytes(0x11, 0, bytes(32), crc=crc16_xmodem(body) ^ 1))


def test_standard_base64_is_accepted() -> None:
    # 0:...fbff... has '+' / '/' in standard base64 and '-' / '_' in base64url.
    address = TonAddress(0, bytes([0xFB, 0xFF]) * 16)
    standard = address.to_friendly(url_safe=False)
    assert "+" in standard or "/" in standard
    assert TonAddress.parse(standard) == address
    assert TonAddress.parse(address.to_friendly()) == address


def test_constructor_validates() -> None:
    with pytest.raises(InvalidAddress):
        TonAddress(0, bytes(31))
    with pytest.raises(InvalidAddress):
        TonAddress(2, bytes(32))


def test_non_string_input() -> None:
    with pytest.raises(InvalidAddress):
        TonAddress.parse(None)  # type: ignore[arg-type]
