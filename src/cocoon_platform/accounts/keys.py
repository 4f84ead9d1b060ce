"""API keys and deposit codes: how they are made, hashed and read from a request."""

from __future__ import annotations

import hashlib
import re
import secrets

KEY_PREFIX = "ck_"
# No 0/O, 1/I/L and no lower case: a code read aloud or retyped can't land on another account.
DEPOSIT_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
DEPOSIT_CODE_LENGTH = 8


def new_api_key() -> str:
    """`ck_` + 32 random bytes (256 bits), URL-safe base64."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> bytes:
    """Keys are high-entropy, so one SHA-256 is enough; only this digest is stored."""
    return hashlib.sha256(key.encode()).digest()


def display_prefix(key: str) -> str:
    """The part of a key safe to show again: `ck_` and 6 characters."""
    return key[: len(KEY_PREFIX) + 6]


def new_deposit_code() -> str:
    return "".join(secrets.choice(DEPOSIT_CODE_ALPHABET) for _ in range(DEPOSIT_CODE_LENGTH))


# Zero-width characters survive str.strip() and are easy to paste along with a code.
_EDGES = re.compile(r"^[\s\u200b\u200c\u200d\u2060\ufeff]+|[\s\u200b\u200c\u200d\u2060\ufeff]+$")


def normalise_deposit_code(text: str) -> str:
    """Codes match after trimming (zero-width characters too), whatever the case."""
    return _EDGES.sub("", text).upper()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def bearer_key_hash(authorization: str | None) -> bytes | None:
    """Hash of a well-formed `ck_` bearer key, or None when the header can't hold one."""
    token = bearer_token(authorization)
    if token is None or not token.startswith(KEY_PREFIX) or len(token) > 200:
        return None
    return hash_api_key(token)
