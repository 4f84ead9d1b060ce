"""Strict TON address parsing.

Accepted forms:
- user-friendly: 48 characters of base64 or base64url (never a mix) encoding 36 bytes:
  flag, workchain (signed byte), 32-byte account hash, CRC16-CCITT/XMODEM (big-endian)
  over the first 34 bytes. Flag 0x11 = bounceable, 0x51 = non-bounceable, +0x80 = testnet.
- raw: `<workchain>:<64 hex digits>` with workchain 0 or -1.

Only the basechain (0) and the masterchain (-1) exist, so any other workchain is rejected.
Addresses compare and hash by (workchain, hash) only: the flags are display hints.

Written by hand because pytoniq-core accepts invalid flags and short raw hashes, and user
input (withdrawal targets, operator tools) must fail loudly instead.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

__all__ = ["InvalidAddress", "TonAddress", "crc16_xmodem"]

_FRIENDLY_LEN = 48
_BOUNCEABLE = 0x11
_NON_BOUNCEABLE = 0x51
_TESTNET = 0x80
_WORKCHAINS = (0, -1)
_RAW_RE = re.compile(r"(-?[0-9]+):([0-9a-fA-F]*)")
_STD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class InvalidAddress(ValueError):
    """The text is not a valid TON address; the message says why."""


def crc16_xmodem(data: bytes) -> int:
    """CRC16-CCITT with polynomial 0x1021 and initial value 0 (the XMODEM variant)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


@dataclass(frozen=True)
class TonAddress:
    """A TON account address; equality and hashing use (workchain, hash) only."""

    workchain: int
    hash: bytes
    bounceable: bool = field(default=True, compare=False)
    testnet: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.workchain not in _WORKCHAINS:
            raise InvalidAddress(f"bad workchain {self.workchain}: expected 0 or -1")
        if not isinstance(self.hash, bytes) or len(self.hash) != 32:
            raise InvalidAddress("bad account hash: expected 32 bytes")

    @classmethod
    def parse(cls, text: str) -> TonAddress:
        """Parse a raw or user-friendly address (surrounding whitespace is ignored)."""
        if not isinstance(text, str):
            raise InvalidAddress(f"address must be a string, not {type(text).__name__}")
        text = text.strip()
        if ":" in text:
            return cls._parse_raw(text)
        return cls._parse_friendly(text)

    @classmethod
    def _parse_raw(cls, text: str) -> TonAddress:
        match = _RAW_RE.fullmatch(text)
        if match is None:
            raise InvalidAddress(f"bad raw address {text!r}: expected '<workchain>:<64 hex>'")
        workchain_text, hex_hash = match.groups()
        # Reject spellings like "00:" or "-0:" so one address has one raw form.
        if workchain_text not in ("0", "-1"):
            raise InvalidAddress(f"bad workchain {workchain_text!r}: expected 0 or -1")
        if len(hex_hash) != 64:
            raise InvalidAddress(f"bad raw address: hash has {len(hex_hash)} hex digits, expected 64")
        return cls(int(workchain_text), bytes.fromhex(hex_hash))

    @classmethod
    def _parse_friendly(cls, text: str) -> TonAddress:
        if len(text) != _FRIENDLY_LEN:
            raise InvalidAddress(f"bad length: user-friendly address has {len(text)} characters, expected 48")
        chars = set(text)
        if chars <= _URL_CHARS:
            text = text.replace("-", "+").replace("_", "/")
        elif not chars <= _STD_CHARS:
            raise InvalidAddress("bad base64: invalid character or mixed base64/base64url alphabet")
        try:
            raw = base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise InvalidAddress(f"bad base64: {exc}") from None
        # 48 valid characters always decode to 36 bytes; checked anyway so a future edit can't
        # turn a short buffer into an IndexError.
        if len(raw) != 36:
            raise InvalidAddress(f"bad length: decoded {len(raw)} bytes, expected 36")
        if crc16_xmodem(raw[:34]) != int.from_bytes(raw[34:], "big"):
            raise InvalidAddress("bad CRC: the address is mistyped or corrupted")
        flag = raw[0]
        testnet = bool(flag & _TESTNET)
        base_flag = flag & ~_TESTNET
        if base_flag not in (_BOUNCEABLE, _NON_BOUNCEABLE):
            raise InvalidAddress(f"unknown flag 0x{flag:02x}")
        workchain = int.from_bytes(raw[1:2], "big", signed=True)
        if workchain not in _WORKCHAINS:
            raise InvalidAddress(f"bad workchain {workchain}: expected 0 or -1")
        return cls(workchain, raw[2:34], base_flag == _BOUNCEABLE, testnet)

    def to_friendly(self, bounceable: bool | None = None, testnet: bool | None = None, url_safe: bool = True) -> str:
        """User-friendly form; flags default to the ones this address was parsed with."""
        bounce = self.bounceable if bounceable is None else bounceable
        test = self.testnet if testnet is None else testnet
        flag = (_BOUNCEABLE if bounce else _NON_BOUNCEABLE) | (_TESTNET if test else 0)
        body = bytes([flag]) + self.workchain.to_bytes(1, "big", signed=True) + self.hash
        raw = body + crc16_xmodem(body).to_bytes(2, "big")
        encode = base64.urlsafe_b64encode if url_safe else base64.b64encode
        return encode(raw).decode("ascii")

    def to_raw(self) -> str:
        """Raw form `<workchain>:<64 lower-case hex>`."""
        return f"{self.workchain}:{self.hash.hex()}"

    def __str__(self) -> str:
        return self.to_friendly()
