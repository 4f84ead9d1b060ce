"""A toncenter-compatible fake (raw ASGI) holding one wallet's transactions.

Chain API, with toncenter v3 semantics:
- `GET /api/v3/transactions?account=&start_lt=&end_lt=&limit=&offset=&sort=`: start_lt and
  end_lt inclusive, limit 1..1000 (default 10), sort asc|desc (default desc); the account is
  compared by (workchain, hash) whatever its form; other accounts have no transactions.

Control API (never rate limited, not counted in the stats):
- `POST /_ton/deposits`: append incoming transactions (see `DepositRequest`); all
  `count` of them land in one new block with increasing lts; returns them.
- `POST /_ton/finalise`: give pending transactions a masterchain seqno.
- `POST /_ton/faults` `{"errors": N, "rate_limit": N, "retry_after": s}`: the next N chain
  requests get 500, then the next N get 429 with Retry-After.
- `GET /_ton/stats`; `POST /_ton/reset` (drops transactions, faults and stats; lts keep
  growing as on a real chain, so a watcher's cursor stays valid).

Per-second rate limiting (toncenter allows about 1 rps without a key) is off unless
`rate_limit_per_second` is set; requests with X-API-Key use `keyed_rate_limit_per_second`.
"""

from __future__ import annotations

import argparse
import base64
import collections
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

import orjson

from cocoon_platform.ton.address import InvalidAddress, TonAddress
from cocoon_simulator import ton_bodies
from cocoon_simulator.cocoon_app import ASGIApp, Receive, Scope, Send

__all__ = [
    "DEFAULT_WALLET",
    "DepositRequest",
    "ToncenterState",
    "add_deposit_arguments",
    "build_toncenter_app",
    "inject_deposit_command",
    "main",
    "run_deposit_command",
]


DEFAULT_WALLET = "EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp"
DEFAULT_URL = "http://127.0.0.1:10000"
NANO = 10**9
MAX_LIMIT = 1000
DEFAULT_LIMIT = 10
# Realistic magnitudes: mainnet account lts are ~4.7e13, masterchain seqnos ~4.7e7.
_FIRST_BLOCK_LT = 47_000_000_000_000
_BLOCK_LT_STEP = 1_000_000
_FIRST_MC_SEQNO = 47_000_000
_KINDS = ("text", "binary", "encrypted", "jetton", "none")
_FEE = 2_000_000


class BadRequest(Exception):
    pass


@dataclass(frozen=True)
class DepositRequest:
    """Body of `POST /_ton/deposits`; every field is optional."""

    comment: str = ""
    amount_nanoton: int = NANO
    sender: TonAddress | None = None
    kind: str = "text"
    bounced: bool = False
    aborted: bool = False
    out_msgs: int = 0
    finalised: bool = True
    decoded: bool = True
    count: int = 1

    @classmethod
    def from_json(cls, data: Any) -> DepositRequest:
        if not isinstance(data, dict):
            raise BadRequest("body must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise BadRequest(f"unknown fields: {sorted(unknown)}")
        sender = data.get("sender")
        try:
            parsed_sender = TonAddress.parse(sender) if sender else None
        except InvalidAddress as exc:
            raise BadRequest(f"bad sender: {exc}") from None
        request = cls(
            comment=_typed(data, "comment", str, ""),
            amount_nanoton=_typed(data, "amount_nanoton", int, NANO),
            sender=parsed_sender,
            kind=_typed(data, "kind", str, "text"),
            bounced=_typed(data, "bounced", bool, False),
            aborted=_typed(data, "aborted", bool, False),
            out_msgs=_typed(data, "out_msgs", int, 0),
            finalised=_typed(data, "finalised", bool, True),
            decoded=_typed(data, "decoded", bool, True),
            count=_typed(data, "count", int, 1),
        )
        if request.kind not in _KINDS:
            raise BadRequest(f"kind must be one of {list(_KINDS)}")
        if request.amount_nanoton < 0 or request.out_msgs < 0 or not 1 <= request.count <= 1000:
            raise BadRequest("amount_nanoton and out_msgs must be >= 0, count 1..1000")
        return request


def _typed(data: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = data.get(key, default)
    # bool is an int subclass: don't let true pass as an amount.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"{key} must be {kind.__name__}")
    return value


def _deque() -> collections.deque[float]:
    return collections.deque()


@dataclass
class ToncenterState:
    """Everything the fake knows; one instance per app, no module-level state."""

    wallet: TonAddress = field(default_factory=lambda: TonAddress.parse(DEFAULT_WALLET))
    rate_limit_per_second: float | None = None
    keyed_rate_limit_per_second: float | None = None
    clock: Callable[[], float] = time.monotonic
    transactions: list[dict[str, Any]] = field(default_factory=list)
    next_block_lt: int = _FIRST_BLOCK_LT
    next_mc_seqno: int = _FIRST_MC_SEQNO
    fault_errors: int = 0
    fault_rate_limits: int = 0
    fault_retry_after: float = 1.0
    requests: int = 0
    served_429: int = 0
    served_500: int = 0
    # Accepted chain requests of the last second, keyed by "has an API key".
    _recent: dict[bool, collections.deque[float]] = field(
        init=False, repr=False, default_factory=lambda: {False: _deque(), True: _deque()}
    )

    def add_deposits(self, request: DepositRequest) -> list[dict[str, Any]]:
        """Append `request.count` transactions in one new block and return them."""
        block_lt = self.next_block_lt
        self.next_block_lt += _BLOCK_LT_STEP
        seqno = self._take_mc_seqno() if request.finalised else None
        lt = block_lt
        added = []
        for _ in range(request.count):
            lt += 1
            tx = self._build_transaction(request, lt, seqno)
            lt += 1 + request.out_msgs  # each out message takes an lt too
            added.append(tx)
        self.transactions.extend(added)
        return added

    def finalise(self) -> list[dict[str, Any]]:
        """Put every pending transaction into a new masterchain block."""
        pending = [tx for tx in self.transactions if tx["mc_block_seqno"] is None]
        if pending:
            seqno = self._take_mc_seqno()
            for tx in pending:
                tx["mc_block_seqno"] = seqno
        return pending

    def query(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Transactions matching a v3 query; `BadRequest` on invalid parameters."""
        account = params.get("account")
        if not account:
            raise BadRequest("account is required")
        try:
            wanted = TonAddress.parse(account)
        except InvalidAddress as exc:
            raise BadRequest(f"invalid account: {exc}") from None
        limit = _int_param(params, "limit", DEFAULT_LIMIT)
        offset = _int_param(params, "offset", 0)
        start_lt = _int_param(params, "start_lt", None)
        end_lt = _int_param(params, "end_lt", None)
        sort = params.get("sort", "desc")
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit must be 1..{MAX_LIMIT}")
        if offset < 0:
            raise BadRequest("offset must be >= 0")
        if sort not in ("asc", "desc"):
            raise BadRequest("sort must be asc or desc")
        if wanted != self.wallet:
            return []
        selected = [
            tx
            for tx in self.transactions
            if (start_lt is None or int(tx["lt"]) >= start_lt) and (end_lt is None or int(tx["lt"]) <= end_lt)
        ]
        selected.sort(key=lambda tx: int(tx["lt"]), reverse=sort == "desc")
        return selected[offset : offset + limit]

    def next_fault(self, keyed: bool) -> tuple[int, float] | None:
        """(status, retry_after) to serve instead of the answer, or None."""
        if self.fault_errors > 0:
            self.fault_errors -= 1
            return 500, 0.0
        if self.fault_rate_limits > 0:
            self.fault_rate_limits -= 1
            return 429, self.fault_retry_after
        limit = self.keyed_rate_limit_per_second if keyed else self.rate_limit_per_second
        if limit is None:
            return None
        recent = self._recent[keyed]
        now = self.clock()
        while recent and now - recent[0] >= 1.0:
            recent.popleft()
        if len(recent) >= limit:
            return 429, 1.0
        recent.append(now)
        return None

    def reset(self) -> None:
        self.transactions.clear()
        self.fault_errors = self.fault_rate_limits = 0
        self.requests = self.served_429 = self.served_500 = 0
        for recent in self._recent.values():
            recent.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "served_429": self.served_429,
            "served_500": self.served_500,
            "transactions": len(self.transactions),
            "pending": sum(tx["mc_block_seqno"] is None for tx in self.transactions),
            "wallet": self.wallet.to_friendly(),
        }

    def _take_mc_seqno(self) -> int:
        self.next_mc_seqno += 1
        return self.next_mc_seqno

    def _build_transaction(self, request: DepositRequest, lt: int, seqno: int | None) -> dict[str, Any]:
        sender = request.sender or TonAddress(0, secrets.token_bytes(32), bounceable=False)
        body, decoded, opcode = _message_body(request, sender)
        wallet = _raw_upper(self.wallet)
        now = int(time.time())
        in_msg: dict[str, Any] = {
            "hash": _b64(secrets.token_bytes(32)),
            "source": _raw_upper(sender),
            "destination": wallet,
            "value": str(request.amount_nanoton),
            "fwd_fee": "266669",
            "ihr_fee": "0",
            "created_lt": str(lt - 1),
            "created_at": str(now),
            "opcode": None if opcode is None else f"0x{opcode:08x}",
            "ihr_disabled": True,
            "bounce": False,
            "bounced": request.bounced,
            "import_fee": None,
            "message_content": {
                "hash": _b64(secrets.token_bytes(32)),
                "body": body,
                "decoded": decoded,
            },
            "init_state": None,
        }
        out_msgs = [
            _out_message(wallet, in_msg["source"], lt + 1 + i, now, request.amount_nanoton)
            for i in range(request.out_msgs)
        ]
        success = not request.aborted
        return {
            "account": wallet,
            # Random, so hashes never repeat even across resets.
            "hash": _b64(secrets.token_bytes(32)),
            "lt": str(lt),
            "now": now,
            "mc_block_seqno": seqno,
            "trace_id": _b64(secrets.token_bytes(32)),
            "orig_status": "active",
            "end_status": "active",
            "total_fees": str(_FEE),
            "description": {
                "type": "ord",
                "aborted": request.aborted,
                "destroyed": False,
                "credit_first": True,
                "storage_ph": {"storage_fees_collected": "0", "status_change": "unchanged"},
                "credit_ph": {"credit": str(request.amount_nanoton)},
                "compute_ph": {
                    "skipped": False,
                    "success": success,
                    "exit_code": 0 if success else 33,
                },
                "action": {"success": success, "valid": True, "no_funds": False},
            },
            "in_msg": in_msg,
            "out_msgs": out_msgs,
            "emulated": False,
        }


def _message_body(request: DepositRequest, sender: TonAddress) -> tuple[str, dict[str, Any] | None, int | None]:
    """(body BoC, message_content.decoded, opcode) for a deposit request."""
    if request.bounced:
        return ton_bodies.bounced_body(request.comment.encode("utf-8")), None, ton_bodies.BOUNCED
    if request.kind == "none":
        return ton_bodies.empty_body(), None, None
    decoded: dict[str, Any] | None = None
    if request.kind == "text":
        body = ton_bodies.text_comment(request.comment)
        decoded = {"@type": "text_comment", "comment": request.comment}
    elif request.kind == "binary":
        data = request.comment.encode("utf-8")
        body = ton_bodies.binary_comment(data)
        decoded = {"@type": "binary_comment", "hex_comment": "ff" + data.hex()}
    elif request.kind == "encrypted":
        body = ton_bodies.encrypted_comment(secrets.token_bytes(48) + request.comment.encode("utf-8"))
    else:
        body = ton_bodies.jetton_notification(
            secrets.randbits(64), 10**6, (sender.workchain, sender.hash), request.comment or None
        )
    return body, decoded if request.decoded else None, ton_bodies.OPCODES[request.kind]


def _out_message(wallet: str, destination: str, lt: int, now: int, value: int) -> dict[str, Any]:
    return {
        "hash": _b64(secrets.token_bytes(32)),
        "source": wallet,
        "destination": destination,
        "value": str(max(value - _FEE, 0)),
        "created_lt": str(lt),
        "created_at": str(now),
        "opcode": None,
        "bounce": False,
        "bounced": False,
        "message_content": {
            "hash": _b64(secrets.token_bytes(32)),
            "body": ton_bodies.empty_body(),
            "decoded": None,
        },
    }


def _int_param(params: dict[str, str], name: str, default: int | None) -> Any:
    value = params.get(name)
    if value is None or value == "":
        return default
    # Plain decimal digits only: int() would also take "1_000" or " 5".
    if not (value.isascii() and value.removeprefix("-").isdigit()):
        raise BadRequest(f"{name} must be an integer")
    return int(value)


def _raw_upper(address: TonAddress) -> str:
    # toncenter v3 prints raw addresses with upper-case hex.
    return f"{address.workchain}:{address.hash.hex().upper()}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _address_book(transactions: list[dict[str, Any]]) -> dict[str, Any]:
    book: dict[str, Any] = {}
    for tx in transactions:
        for raw in (tx["account"], tx["in_msg"]["source"]):
            address = TonAddress.parse(raw)
            friendly = address.to_friendly(bounceable=raw == tx["account"])
            book[raw] = {"user_friendly": friendly, "domain": None}
    return book


# --- ASGI -----------------------------------------------------------------------------------


def build_toncenter_app(state: ToncenterState | None = None) -> ASGIApp:
    """A plain ASGI app serving `/api/v3/transactions` and `/_ton/*` from `state`."""
    app_state = state if state is not None else ToncenterState()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, payload, headers = await _dispatch(app_state, scope, receive)
        except BadRequest as exc:
            status, payload, headers = 400, {"error": str(exc)}, {}
        await _respond(send, status, payload, headers)

    return app


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _dispatch(state: ToncenterState, scope: Scope, receive: Receive) -> tuple[int, Any, dict[str, str]]:
    method, path = scope["method"], scope["path"]
    if path == "/api/v3/transactions" and method == "GET":
        return _serve_transactions(state, scope)
    if path.startswith("/_ton/"):
        route = (method, path.removeprefix("/_ton/"))
        if route == ("POST", "deposits"):
            request = DepositRequest.from_json(await _read_json(receive))
            return 200, {"transactions": state.add_deposits(request)}, {}
        if route == ("POST", "finalise"):
            return 200, {"transactions": state.finalise()}, {}
        if route == ("POST", "faults"):
            _set_faults(state, await _read_json(receive))
            return 200, {"ok": True}, {}
        if route == ("GET", "stats"):
            return 200, state.stats(), {}
        if route == ("POST", "reset"):
            state.reset()
            return 200, {"ok": True}, {}
    return 404, {"error": "not found"}, {}


def _serve_transactions(state: ToncenterState, scope: Scope) -> tuple[int, Any, dict[str, str]]:
    state.requests += 1
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    fault = state.next_fault(keyed=bool(headers.get("x-api-key")))
    if fault is not None:
        status, retry_after = fault
        if status == 429:
            state.served_429 += 1
            return 429, {"error": "Ratelimit exceeded"}, {"retry-after": f"{retry_after:g}"}
        state.served_500 += 1
        return 500, {"error": "internal server error"}, {}
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    params = {key: values[-1] for key, values in query.items()}
    transactions = state.query(params)
    return 200, {"transactions": transactions, "address_book": _address_book(transactions)}, {}


def _set_faults(state: ToncenterState, data: Any) -> None:
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    state.fault_errors = _typed(data, "errors", int, 0)
    state.fault_rate_limits = _typed(data, "rate_limit", int, 0)
    retry_after = data.get("retry_after", 1)
    valid = isinstance(retry_after, (int, float)) and not isinstance(retry_after, bool)
    if not valid or retry_after < 0:
        raise BadRequest("retry_after must be a number >= 0")
    state.fault_retry_after = float(retry_after)


async def _read_json(receive: Receive) -> Any:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None


async def _respond(send: Send, status: int, payload: Any, headers: dict[str, str]) -> None:
    body = orjson.dumps(payload)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


# --- CLI helpers ----------------------------------------------------------------------------


def inject_deposit_command(
    url: str,
    code: str,
    amount_ton: Decimal | str | int,
    *,
    sender: str | None = None,
    kind: str = "text",
    count: int = 1,
    finalised: bool = True,
    timeout: float = 5.0,
) -> list[dict[str, Any]]:
    """POST a deposit to a running fake and return the created transactions.

    `amount_ton` is converted exactly (Decimal), so "1.5" is 1_500_000_000 nanoTON.
    Raises `ValueError` on a bad amount and `OSError` if the fake is unreachable or refuses.
    """
    amount_nanoton = _ton_to_nano(amount_ton)
    payload: dict[str, Any] = {
        "comment": code,
        "amount_nanoton": amount_nanoton,
        "kind": kind,
        "count": count,
        "finalised": finalised,
    }
    if sender:
        payload["sender"] = sender
    request = urllib.request.Request(
        url.rstrip("/") + "/_ton/deposits",
        data=orjson.dumps(payload),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        transactions: list[dict[str, Any]] = orjson.loads(response.read())["transactions"]
    return transactions


def _ton_to_nano(amount_ton: Decimal | str | int) -> int:
    try:
        nano = Decimal(amount_ton) * NANO
    except InvalidOperation:
        raise ValueError(f"bad TON amount {amount_ton!r}") from None
    if not nano.is_finite() or nano < 0 or nano != nano.to_integral_value():
        raise ValueError(f"bad TON amount {amount_ton!r}: must be >= 0 with at most 9 decimals")
    return int(nano)


def add_deposit_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `simulate deposit`."""
    parser.add_argument("--code", required=True, help="deposit code sent as the comment")
    parser.add_argument("--amount-ton", required=True, help="amount in TON, e.g. 1.5")
    parser.add_argument("--url", default=DEFAULT_URL, help="URL of the running fake toncenter")
    parser.add_argument("--sender", default=None, help="sender address (default: random wallet)")
    parser.add_argument("--kind", choices=_KINDS, default="text", help="body kind (default text)")
    parser.add_argument("--count", type=int, default=1, help="number of identical deposits")
    parser.add_argument("--pending", action="store_true", help="leave the deposits unfinalised")


def run_deposit_command(args: argparse.Namespace) -> int:
    """Inject the deposit described by `args`; print each tx hash; exit status."""
    try:
        transactions = inject_deposit_command(
            args.url,
            args.code,
            args.amount_ton,
            sender=args.sender,
            kind=args.kind,
            count=args.count,
            finalised=not args.pending,
        )
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        print(f"deposit rejected: HTTP {exc.code}: {detail}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"deposit failed: {exc}", file=sys.stderr)
        return 1
    for tx in transactions:
        print(tx["hash"])
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the fake standalone: `python -m cocoon_simulator.toncenter --port N`."""
    import uvicorn

    parser = argparse.ArgumentParser(description="toncenter v3 fake for one wallet")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10000)
    parser.add_argument("--wallet", default=DEFAULT_WALLET, help="the platform wallet address")
    parser.add_argument("--rate-limit-per-second", type=float, default=None, help="limit without X-API-Key")
    parser.add_argument("--keyed-rate-limit-per-second", type=float, default=None, help="limit with X-API-Key")
    args = parser.parse_args(argv)
    try:
        wallet = TonAddress.parse(args.wallet)
    except InvalidAddress as exc:
        parser.error(f"--wallet: {exc}")
    state = ToncenterState(
        wallet=wallet,
        rate_limit_per_second=args.rate_limit_per_second,
        keyed_rate_limit_per_second=args.keyed_rate_limit_per_second,
    )
    uvicorn.run(build_toncenter_app(state), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
