"""The metered inference endpoints as one lean ASGI handler.

Per request: parse and check the body, reserve the worst case as a hold (one guarded UPDATE
that also authenticates the key; the billing store returns it as a `Reservation`), forward
through the pooled upstream client, then settle the real charge in a group-committed
transaction before the answer (or the stream's end) goes out. Every path that opened a hold
settles it: a charge for what was delivered, or a release.

The handler is made by the application's lifespan with the running state, and found by the
front door in `scope["state"]`. The stream relay is in `relay.py`, the ASGI plumbing in
`asgi.py`, and what a request costs in `billing/cost.py`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import orjson

from cocoon_platform.accounts.keys import bearer_key_hash
from cocoon_platform.billing.cost import UsageStatus, bill, completion_text
from cocoon_platform.billing.prices import NetworkPrices
from cocoon_platform.billing.store import Reservation, Settlement
from cocoon_platform.config import format_ton
from cocoon_platform.errors import (
    InsufficientBalance,
    InvalidApiKey,
    InvalidRequest,
    PayloadTooLarge,
    PlatformError,
    UpstreamError,
)
from cocoon_platform.ops import metrics
from cocoon_platform.ops.request_log import log_request, request_log_enabled
from cocoon_platform.proxy.asgi import (
    Receive,
    Scope,
    Send,
    read_body,
    request_headers,
    send_error,
    send_json,
    sse,
    start_sse,
    wait_disconnect,
)
from cocoon_platform.proxy.events import DONE
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.proxy.relay import relay
from cocoon_platform.proxy.request import CHAT_PATH, InferenceRequest, parse_request
from cocoon_platform.proxy.upstream_errors import map_upstream_error
from cocoon_platform.state import AppState
from cocoon_platform.upstream.http import ConnectionBroken, UpstreamResponse
from cocoon_platform.upstream.pool import NoUpstream

logger = logging.getLogger("cocoon_platform.proxy")

MAX_RESERVATION = 2**62  # fits a BIGINT with room for the balance arithmetic


def new_request_id() -> str:
    """`req_` + 48-bit millisecond time + 80 random bits, in hex: unique, and in time order, so the
    unique indexes on request ids and usage references grow at their end instead of touching a
    random page per insert (fewer pages per transaction; fewer WAL frames on SQLite).

    The bits come from `random` (seeded from the OS, reseeded in forked workers), not a system
    call per request: an id must be unique, not secret."""
    return f"req_{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


class InferenceHandler:
    """ASGI callable for POST /v1/chat/completions and /v1/completions."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        settings = state.settings
        # The network's own deadline (the `timeout` sent with the request) comes first, by a margin;
        # and a request never outlives its hold (Settings checks it), so the sweeper never releases
        # a live one.
        self.deadline = settings.upstream_request_timeout + settings.upstream_deadline_margin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        started = time.perf_counter()
        request_id = new_request_id()
        settings = state.settings
        endpoint = "chat" if scope["path"] == CHAT_PATH else "completions"
        outcome = Outcome()
        request: InferenceRequest | None = None
        key_hash: bytes | None = None
        slot: str | None = None
        try:
            try:
                authorization, length = request_headers(scope)
                if length is not None and length > settings.max_body_bytes:
                    raise PayloadTooLarge(f"Request body exceeds {settings.max_body_bytes} bytes")
                raw = await read_body(receive, settings.max_body_bytes)
                key_hash = bearer_key_hash(authorization)
                if key_hash is None:
                    raise InvalidApiKey()
                if state.limiter.checks_keys:
                    slot = await state.limiter.admit_key(key_hash)
                request = parse_request(
                    scope["path"],
                    raw,
                    max_tokens_cap=settings.max_tokens_cap,
                    default_max_tokens=settings.default_max_tokens,
                    max_coefficient=settings.max_coefficient,
                    extra_fields=settings.upstream_extra_field_set,
                    request_timeout=settings.upstream_request_timeout,
                )
                prices = state.prices
                amount = state.pricer.worst_case(prices, len(raw), request.max_tokens * request.choices)
                if amount >= MAX_RESERVATION:
                    raise InvalidRequest("This request is too large to price; lower max_tokens, n or the prompt.")
                reservation = await state.billing.reserve(
                    key_hash, amount, settings.min_balance_nanoton, settings.max_overdraft_nanoton,
                    request_id, settings.reservation_ttl_seconds,
                )
                if reservation is None:
                    raise await self._refusal(key_hash, amount, prices, len(raw), request)
            except PlatformError as exc:
                outcome.http_status = exc.status
                await send_error(send, exc, request_id)
                return
            except Exception:
                logger.exception("request %s failed before forwarding", request_id)
                outcome.http_status = 500
                await send_error(send, PlatformError(), request_id)
                return
            outcome.account_id, outcome.key_id = reservation.account_id, reservation.key_id
            state.last_used.touch(reservation.key_id, time.time())
            try:
                if request.stream:
                    await self._stream(request, reservation, prices, request_id, receive, send, outcome)
                else:
                    await self._complete(request, reservation, prices, request_id, send, outcome)
            finally:
                if not outcome.settled:
                    # Something unforeseen (or cancellation) ended the request: never leave the hold open.
                    outcome.status = UsageStatus.ABORTED
                    await asyncio.shield(self._settle(request, reservation, prices, request_id, outcome, started))
        finally:
            if slot is not None and key_hash is not None:
                await state.limiter.release_key(key_hash, slot)
            self._observe(endpoint, request, request_id, outcome, time.perf_counter() - started)

    def _observe(self, endpoint: str, request: InferenceRequest | None, request_id: str, outcome: Outcome,
                 seconds: float) -> None:
        """Metrics and the request's log line: identifiers, counts and times, never content."""
        state = self.state
        model = request.model if request is not None else None
        label = model if model is not None and state.network.knows(model) else "other"
        metrics.requests_by(endpoint, label, str(outcome.http_status)).inc()
        metrics.request_seconds_by(endpoint).observe(seconds)
        if outcome.upstream_seconds is not None:
            metrics.upstream_seconds_by(endpoint).observe(outcome.upstream_seconds)
        if outcome.first_token_seconds is not None:
            metrics.first_token_seconds_by(endpoint).observe(outcome.first_token_seconds)
        if outcome.error is not None and isinstance(outcome.error, UpstreamError):
            metrics.upstream_errors_by(outcome.error.kind).inc()
        tokens = outcome.tokens
        if tokens is not None:
            metrics.tokens_by(label, "prompt").inc(tokens.prompt - tokens.cached)
            metrics.tokens_by(label, "cached").inc(tokens.cached)
            metrics.tokens_by(label, "completion").inc(tokens.completion - tokens.reasoning)
            metrics.tokens_by(label, "reasoning").inc(tokens.reasoning)
            metrics.billed_by(label).inc(outcome.charge)
        if not request_log_enabled():
            return
        log_request({
            "request_id": request_id,
            "account_id": outcome.account_id,
            "key_id": outcome.key_id,
            "endpoint": endpoint,
            "model": model,
            "stream": request.stream if request is not None else None,
            "status": outcome.http_status,
            "outcome": outcome.status.value if outcome.settled else "refused",
            "prompt_tokens": tokens.prompt if tokens else 0,
            "cached_tokens": tokens.cached if tokens else 0,
            "completion_tokens": tokens.completion if tokens else 0,
            "reasoning_tokens": tokens.reasoning if tokens else 0,
            "estimated": outcome.estimated,
            "cost_nanoton": outcome.charge,
            "duration_ms": round(seconds * 1000, 2),
        })

    # --- refusal --------------------------------------------------------------------------

    async def _refusal(
        self, key_hash: bytes, amount: int, prices: NetworkPrices, prompt_bound: int, request: InferenceRequest
    ) -> PlatformError:
        state = self.state
        settings = state.settings
        funds = await state.billing.funds(key_hash)
        if funds is None:
            return InvalidApiKey()
        if funds.balance < settings.min_balance_nanoton:
            return InsufficientBalance(
                f"Insufficient balance: {format_ton(funds.balance)} TON. "
                f"Minimum: {format_ton(settings.min_balance_nanoton, 2)} TON. Top up via /v1/deposit."
            )
        available = funds.balance - funds.reserved + settings.max_overdraft_nanoton
        fits = state.pricer.largest_max_tokens(prices, prompt_bound, available) // request.choices
        hint = (f" The largest max_tokens that fits is {fits}." if fits > 0
                else " Top up via /v1/deposit or shorten the prompt.")
        return InsufficientBalance(
            f"Insufficient balance for this request: it needs up to {format_ton(amount, 9)} TON "
            f"(max_tokens={request.max_tokens}) but {format_ton(max(available, 0), 9)} TON is available "
            f"(balance {format_ton(funds.balance, 9)} TON, {format_ton(funds.reserved, 9)} TON held by requests "
            f"in flight, overdraft {format_ton(settings.max_overdraft_nanoton, 9)} TON).{hint}"
        )

    # --- forwarding -----------------------------------------------------------------------

    async def _open(self, request: InferenceRequest, path: str) -> UpstreamResponse:
        state = self.state
        try:
            response = await state.pool.post(path, orjson.dumps(request.payload))
        except NoUpstream:
            raise UpstreamError(503, "The COCOON network is unavailable right now. Try again shortly.",
                                "unreachable") from None
        except TimeoutError:
            raise UpstreamError(504, "The COCOON network did not answer in time.", "timeout") from None
        except ConnectionBroken:
            raise UpstreamError(502, "The connection to the COCOON network failed.", "connection") from None
        if response.status != 200:
            try:
                body = await response.read()
            except (ConnectionBroken, TimeoutError):
                body = b""
            raise map_upstream_error(response.status, body, request.model, state.settings.max_coefficient)
        return response

    async def _complete(
        self, request: InferenceRequest, reservation: Reservation, prices: NetworkPrices,
        request_id: str, send: Send, outcome: Outcome,
    ) -> None:
        started = time.perf_counter()
        try:
            try:
                async with asyncio.timeout(self.deadline):
                    response = await self._open(request, _UPSTREAM_PATH[request.endpoint])
                    raw = await response.read()  # gives the connection back, or drops it on failure
            except TimeoutError:
                raise UpstreamError(504, "The COCOON network did not answer in time.", "timeout") from None
            except ConnectionBroken:
                raise UpstreamError(502, "The COCOON network dropped the answer.", "connection") from None
            finally:
                outcome.upstream_seconds = time.perf_counter() - started
            try:
                document = orjson.loads(raw)
            except orjson.JSONDecodeError:
                document = None
            if not isinstance(document, dict) or not isinstance(document.get("choices"), list):
                raise UpstreamError(502, "Bad response from the COCOON network (not a completion).", "bad_response")
        except PlatformError as exc:
            outcome.status, outcome.http_status, outcome.error = UsageStatus.UPSTREAM_ERROR, exc.status, exc
            await self._settle(request, reservation, prices, request_id, outcome, started)
            await send_error(send, exc, request_id)
            return
        usage = document.get("usage")
        if not isinstance(usage, dict):
            usage = document["usage"] = {}
        outcome.usage = usage
        outcome.delivered_bytes = len(completion_text(document).encode())
        charge = await self._settle(request, reservation, prices, request_id, outcome, started)
        usage["cost_nanoton"] = charge
        usage["cost_ton"] = charge / 1_000_000_000
        await send_json(send, document, request_id)

    async def _stream(
        self, request: InferenceRequest, reservation: Reservation, prices: NetworkPrices,
        request_id: str, receive: Receive, send: Send, outcome: Outcome,
    ) -> None:
        started = time.perf_counter()
        response: UpstreamResponse | None = None
        disconnected = False
        watcher: asyncio.Task[None] | None = None

        def client_left(task: asyncio.Task[None]) -> None:
            nonlocal disconnected
            if not task.cancelled() and response is not None:
                disconnected = True
                response.close()  # stop the upstream at once: the relay ends with it

        def watch_client() -> None:
            # Started only once the relay has to wait for the network: a stream that arrives in
            # one go is written out before a departure could be noticed anyway.
            nonlocal watcher
            if watcher is None:
                watcher = asyncio.create_task(wait_disconnect(receive))
                watcher.add_done_callback(client_left)

        try:
            # One deadline for the whole stream: the hold expires after the reservation TTL, so no
            # stream may outlive it, however slowly the upstream answers or the client reads.
            async with asyncio.timeout(self.deadline):
                response = await self._open(request, _UPSTREAM_PATH[request.endpoint])
                await start_sse(send, request_id)
                await relay(response, send, outcome, started, watch_client)
        except TimeoutError:
            if response is not None:
                outcome.error = UpstreamError(504, "The COCOON network stopped answering mid-stream.", "timeout")
            else:
                outcome.error = UpstreamError(504, "The COCOON network did not answer in time.", "timeout")
        except PlatformError as exc:
            outcome.error = exc  # from _open: nothing was sent yet
        finally:
            if watcher is not None:
                watcher.cancel()
            if response is not None:
                response.close()
            outcome.upstream_seconds = time.perf_counter() - started
        if response is None:
            assert outcome.error is not None
            outcome.status, outcome.http_status = UsageStatus.UPSTREAM_ERROR, outcome.error.status
            await self._settle(request, reservation, prices, request_id, outcome, started)
            await send_error(send, outcome.error, request_id)
            return
        if outcome.error is None and outcome.usage is None:
            # Ended without its usage chunk: the stream was cut short, whatever closed it.
            outcome.error = UpstreamError(502, "The COCOON network ended the stream early.",
                                          "no_usage" if outcome.upstream_done else "stream_cut")
        if outcome.error is not None:
            outcome.status, outcome.http_status = UsageStatus.UPSTREAM_CUT, outcome.error.status
        if disconnected:
            outcome.status, outcome.http_status, outcome.error = UsageStatus.CLIENT_DISCONNECTED, 499, None
        charge = await self._settle(request, reservation, prices, request_id, outcome, started)
        if disconnected:
            return
        if outcome.error is not None:
            await send({"type": "http.response.body", "body": sse(outcome.error.to_bytes()), "more_body": False})
            return
        tail = b""
        if request.include_usage and outcome.usage is not None:
            usage = dict(outcome.usage)
            usage["cost_nanoton"] = charge
            usage["cost_ton"] = charge / 1_000_000_000
            tail = sse(orjson.dumps({"id": outcome.stream_id or request_id,
                                      "object": _CHUNK_OBJECT[request.endpoint], "created": int(time.time()),
                                      "model": request.model, "choices": [], "usage": usage}))
        await send({"type": "http.response.body", "body": tail + sse(DONE), "more_body": False})

    # --- settlement -----------------------------------------------------------------------

    async def _settle(
        self, request: InferenceRequest, reservation: Reservation, prices: NetworkPrices,
        request_id: str, outcome: Outcome, started: float,
    ) -> int:
        """Charge what the outcome says, record usage, release the hold; returns the charge."""
        state = self.state
        charged = bill(state.pricer, prices, outcome.status, outcome.usage, outcome.delivered(),
                       request.estimate_prompt_tokens)
        tokens = charged.tokens
        outcome.estimated = charged.estimated
        settlement = Settlement(
            reservation=reservation,
            charge=charged.charge,
            request_id=request_id,
            model=request.model,
            endpoint=request.endpoint,
            prompt_tokens=tokens.prompt,
            cached_tokens=tokens.cached,
            completion_tokens=tokens.completion,
            reasoning_tokens=tokens.reasoning,
            status=outcome.status.value,
            http_status=outcome.http_status,
            estimated=charged.estimated,
            duration_ms=int((time.perf_counter() - started) * 1000),
        )
        await state.billing.settle(settlement)
        outcome.settled, outcome.tokens, outcome.charge = True, tokens, charged.charge
        return charged.charge


_UPSTREAM_PATH = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_CHUNK_OBJECT = {"chat": "chat.completion.chunk", "completions": "text_completion"}
