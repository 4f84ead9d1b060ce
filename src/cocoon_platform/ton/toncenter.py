"""toncenter API v3 client for a wallet's transactions, and deposit classification.

`ToncenterClient.fetch_page` wraps `GET /api/v3/transactions` (start_lt and end_lt are
inclusive there). Every failure surfaces as `ProviderError` (429 as its subclass
`ProviderRateLimited`): bad status, timeout, connection error, bad JSON, unexpected shape.

Parsing is strict for the fields that identify a transaction (hash, lt, now, account) and for
values that feed the credit decision when they are present (value, flags); optional parts
that are absent fall back to the conservative reading (e.g. no description -> aborted).
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeGuard

import aiohttp
import orjson

from cocoon_platform.ton.comment import BodyKind, MessageBody, decode_body

__all__ = [
    "ChainTransaction",
    "Classification",
    "ProviderError",
    "ProviderRateLimited",
    "ToncenterClient",
    "classify",
    "parse_transaction",
    "parse_transactions_response",
]

DEFAULT_BASE_URL = "https://toncenter.com"
MAX_LIMIT = 1000
_DEFAULT_RETRY_AFTER = 1.0
_MAX_RETRY_AFTER = 300.0
_TEXT_COMMENT_TYPE = "text_comment"


class ProviderError(Exception):
    """The provider failed or answered something unusable; retry later."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProviderRateLimited(ProviderError):
    """HTTP 429; wait `retry_after` seconds before the next request."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited, retry after {retry_after:g}s", status=429)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ChainTransaction:
    """One transaction of the watched account, reduced to what deposit handling needs."""

    hash: bytes
    hash_b64: str
    lt: int
    now: int
    account: str
    finalised: bool
    incoming: bool
    bounced: bool
    aborted: bool
    has_out_msgs: bool
    source: str | None
    value_nanoton: int
    body: MessageBody


class Classification(Enum):
    """What the watcher should do with a transaction.

    - `credit`: a clean, finalised incoming transfer with a text comment (match the code).
    - `unmatched`: clean, finalised incoming TON without a usable text comment; keep it for
      an operator instead of dropping the money silently.
    - `pending`: not finalised yet; it may become creditable, so a watcher must not move its
      cursor past it.
    - `ignore`: never a deposit (bounced, aborted, coins sent back out, outgoing/external,
      zero value, jetton notification).
    """

    CREDIT = "credit"
    UNMATCHED = "unmatched"
    PENDING = "pending"
    IGNORE = "ignore"


def classify(tx: ChainTransaction) -> Classification:
    """Classify by the rules listed on `Classification` (checked in that order).

    Jetton notifications are ignored: the TON they carry is only the forwarding amount the
    jetton sender attached (dust), the jettons themselves are not TON deposits, and spam
    jetton airdrops would otherwise flood the operator's unmatched queue.
    """
    if not tx.finalised:
        return Classification.PENDING
    if not tx.incoming or tx.bounced or tx.aborted or tx.has_out_msgs or tx.value_nanoton <= 0:
        return Classification.IGNORE
    if tx.body.kind is BodyKind.JETTON_NOTIFICATION:
        return Classification.IGNORE
    if tx.body.kind is BodyKind.TEXT:
        return Classification.CREDIT
    return Classification.UNMATCHED


class ToncenterClient:
    """Reads one account's transactions from toncenter v3 through a caller-owned session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/api/v3/transactions"
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def fetch_page(
        self,
        account: str,
        start_lt: int | None,
        limit: int,
        sort: str = "asc",
        offset: int = 0,
        end_lt: int | None = None,
    ) -> list[ChainTransaction]:
        """One page of `account`'s transactions with start_lt <= lt <= end_lt (inclusive)."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}")
        if sort not in ("asc", "desc"):
            raise ValueError("sort must be 'asc' or 'desc'")
        if offset < 0:
            raise ValueError("offset must be >= 0")
        params = {"account": account, "limit": str(limit), "offset": str(offset), "sort": sort}
        if start_lt is not None:
            params["start_lt"] = str(start_lt)
        if end_lt is not None:
            params["end_lt"] = str(end_lt)
        payload = await self._get_json(params)
        return parse_transactions_response(payload)

    async def _get_json(self, params: dict[str, str]) -> Any:
        try:
            async with self._session.get(
                self._url, params=params, headers=self._headers, timeout=self._timeout
            ) as response:
                raw = await response.read()
                if response.status == 429:
                    raise ProviderRateLimited(_retry_after(response.headers.get("Retry-After")))
                if response.status != 200:
                    detail = raw[:200].decode("utf-8", "replace")
                    raise ProviderError(f"HTTP {response.status}: {detail}", response.status)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProviderError(f"request failed: {exc!r}") from exc
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProviderError(f"bad JSON: {exc}") from exc


def _retry_after(header: str | None) -> float:
    """Seconds from a Retry-After header; HTTP-date or garbage falls back to a default."""
    try:
        value = float(header) if header is not None else _DEFAULT_RETRY_AFTER
    except ValueError:
        value = _DEFAULT_RETRY_AFTER
    if not math.isfinite(value):
        value = _DEFAULT_RETRY_AFTER
    return min(max(value, 0.0), _MAX_RETRY_AFTER)


def parse_transactions_response(payload: Any) -> list[ChainTransaction]:
    """Parse a `/api/v3/transactions` response body; `ProviderError` on a bad shape."""
    if not isinstance(payload, dict) or not isinstance(payload.get("transactions"), list):
        raise ProviderError("unexpected response shape: no 'transactions' list")
    return [parse_transaction(item) for item in payload["transactions"]]


def parse_transaction(raw: Any) -> ChainTransaction:
    """Parse one v3 transaction object; `ProviderError` when it is unusable."""
    if not isinstance(raw, dict):
        raise ProviderError("unexpected transaction shape: not an object")
    tx_hash = _parse_hash(raw.get("hash"))
    account = raw.get("account")
    if not isinstance(account, str) or not account:
        raise ProviderError("unexpected transaction shape: no account")
    in_msg = _optional_dict(raw, "in_msg")
    source = in_msg.get("source")
    if source is not None and not isinstance(source, str):
        raise ProviderError("unexpected transaction shape: in_msg.source is not a string")
    out_msgs = raw.get("out_msgs")
    if out_msgs is not None and not isinstance(out_msgs, list):
        raise ProviderError("unexpected transaction shape: out_msgs is not a list")
    seqno = raw.get("mc_block_seqno")
    return ChainTransaction(
        hash=tx_hash,
        hash_b64=base64.b64encode(tx_hash).decode("ascii"),
        lt=_parse_int(raw.get("lt"), "lt"),
        now=_parse_int(raw.get("now"), "now"),
        account=account,
        finalised=_is_int(seqno) and raw.get("emulated") is not True,
        incoming=bool(source),
        bounced=in_msg.get("bounced") is True,
        aborted=_is_aborted(raw),
        has_out_msgs=bool(out_msgs),
        source=source or None,
        value_nanoton=_parse_value(in_msg.get("value")),
        body=_parse_body(in_msg),
    )


def _optional_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProviderError(f"unexpected transaction shape: {key} is not an object")
    return value


def decode_tx_hash(text: str) -> bytes:
    """A 32-byte transaction hash from hex (64 digits; tonapi), base64 (toncenter) or base64url.
    Raises ValueError."""
    text = text.strip()
    try:
        if len(text) == 64:
            decoded = bytes.fromhex(text)
        else:
            decoded = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"{text[:80]!r} is not a transaction hash (64 hex digits or base64)") from None
    if len(decoded) != 32:
        raise ValueError(f"{text[:80]!r} is not a transaction hash: not 32 bytes")
    return decoded


def _parse_hash(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ProviderError("unexpected transaction shape: no hash")
    try:
        return decode_tx_hash(value)
    except ValueError as exc:
        raise ProviderError(f"bad transaction hash: {exc}") from None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_int(value: Any, name: str) -> int:
    """A non-negative integer given as a JSON number or a decimal string (lt, value, now)."""
    if _is_int(value):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise ProviderError(f"unexpected transaction shape: {name} is not an integer")
    if number < 0:
        raise ProviderError(f"unexpected transaction shape: {name} is negative")
    return number


def _parse_value(value: Any) -> int:
    """nanoTON attached to the incoming message; absent (external message) means 0."""
    return 0 if value is None else _parse_int(value, "in_msg.value")


def _is_aborted(raw: dict[str, Any]) -> bool:
    """Aborted unless the description says otherwise: success must be explicit."""
    description = _optional_dict(raw, "description")
    if description.get("aborted") is not False:
        return True
    compute = description.get("compute_ph")
    return isinstance(compute, dict) and compute.get("success") is False


def _parse_body(in_msg: dict[str, Any]) -> MessageBody:
    """Decode the BoC body; `decoded` is used only when the body itself is absent.

    The BoC is the source of truth: if it decodes as something other than a text comment, the
    provider's `decoded` label is not trusted.
    """
    content = in_msg.get("message_content")
    if not isinstance(content, dict):
        return MessageBody(BodyKind.EMPTY)
    body = content.get("body")
    if body:
        return decode_body(body)
    decoded = content.get("decoded")
    if (
        isinstance(decoded, dict)
        and decoded.get("@type") == _TEXT_COMMENT_TYPE
        and isinstance(decoded.get("comment"), str)
    ):
        return MessageBody(BodyKind.TEXT, decoded["comment"])
    return MessageBody(BodyKind.EMPTY)
