"""The metered inference endpoints as one lean ASGI handler.

Per request: parse and check the body, reserve the worst case (one guarded UPDATE that also
authenticates the key), forward through the pooled upstream client, then settle the real
charge in a group-committed transaction before the answer (or the stream's end) goes out.
Every path that opened a hold settles it: a charge for what was delivered, or a release.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

from cocoon_platform.accounts.keys import bearer_key_hash
from cocoon_platform.billing.prices import NetworkPrices, TokenCounts
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
from cocoon_platform.proxy.events import DONE, EventSplitter, usual_event
from cocoon_platform.ops import metrics
from cocoon_platform.ops.request_log import log_request, request_log_enabled
from cocoon_platform.proxy.request import CHAT_PATH, InferenceRequest, parse_request
from cocoon_platform.proxy.upstream_errors import map_upstream_error
from cocoon_platform.state import AppState
from cocoon_platform.upstream.http import ConnectionBroken, UpstreamResponse
from cocoon_platform.upstream.pool import NoUpstream

logger = logging.getLogger("cocoon_platform.proxy")

Scope = dict[str, Any]
Receive = Any
Send = Any

MAX_RESERVATION = 2**62  # fits a BIGINT with room for the balance arithmetic
JSON_TYPE = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


def new_request_id() -> str:
    """`req_` + 48-bit millisecond time + 80 random bits, in hex: unique, and in time order, so the
    unique indexes on request ids and usage references grow at their end instead of touching a
    random page per insert (fewer pages per transaction; fewer WAL frames on SQLite).

    The bits come from `random` (seeded from the OS, reseeded in forked workers), not a system
    call per request: an id must be unique, not secret."""
    return f"req_{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


def estimate_tokens(text: str) -> int:
    """About four bytes a token: used only when the upstream never reported usage."""
    size = len(text.encode())
    return (size + 3) // 4 if size else 0


def delivered_tokens(chunks: int, characters: int) -> int:
    """Tokens relayed in a stream: one per chunk, as servers usually send them, unless the chunks
    average more than a long token's worth of text, which means they carry several each."""
    return chunks if characters <= 8 * chunks else (characters + 3) // 4


def estimate_prompt_tokens(request: InferenceRequest) -> int:
    tokens = estimate_tokens(request.text_for_estimate())
    if request.endpoint == "chat":
        tokens += 4 * len(request.payload["messages"]) + 3
    return tokens


MAX_TOKEN_COUNT = 2**31 - 1  # the usage record's token columns are 32-bit integers


def _count(value: Any) -> int:
    """A token count the upstream reported: a positive integer, at most what the record holds
    (a database refusing the record would leave the request unsettled)."""
    return min(value, MAX_TOKEN_COUNT) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_tokens(usage: Any) -> TokenCounts | None:
    """Token counts from an upstream usage object (reasoning in either place), or None when
    it holds no usable count, so the request is billed by estimate rather than as free."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (_count(prompt) or _count(completion)):
        return None
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    reasoning = _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
    reasoning = reasoning or _count(usage.get("reasoning_tokens"))
    prompt, completion = _count(prompt), _count(completion)
    return TokenCounts(prompt=prompt, completion=completion, cached=min(cached, prompt),
                       reasoning=min(reasoning, completion))


def reported_cost(usage: dict[str, Any]) -> int | None:
    cost = usage.get("total_cost")
    return cost if isinstance(cost, int) and not isinstance(cost, bool) else None


@dataclass(slots=True)
class Outcome:
    """What happened to one forwarded request, enough to settle it."""

    status: str = "ok"
    http_status: int = 200
    usage: dict[str, Any] | None = None
    estimated: bool = False
    delivered_completion: int = 0  # content chunks relayed to the client
    delivered_reasoning: int = 0
    delivered_bytes: int = 0  # of that content, for when a chunk carries several tokens
    error: PlatformError | None = None
    account_id: int | None = None
    key_id: int | None = None
    tokens: TokenCounts | None = None
    charge: int = 0
    result: str = "refused"  # the usage record's status once settled
    upstream_seconds: float | None = None
    stream_id: str | None = None  # the upstream's chunk id, reused on the usage chunk we emit
    first_token_seconds: float | None = None
    upstream_done: bool = False  # the stream's `[DONE]` arrived


class InferenceHandler:
    """ASGI callable for POST /v1/chat/completions and /v1/completions."""

    def __init__(self) -> None:
        self.state: AppState | None = None  # set by the application's lifespan

    def bind(self, state: AppState) -> None:
        self.state = state
        settings = state.settings
        ttl = settings.reservation_ttl_seconds
        # A request never outlives its hold, so the sweeper never releases a live one.
        self.deadline = max(1.0, ttl - min(60.0, ttl * 0.2))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        assert state is not None, "the application's lifespan has not run"
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
                authorization, length = _headers(scope)
                if length is not None and length > settings.max_body_bytes:
                    raise PayloadTooLarge(f"Request body exceeds {settings.max_body_bytes} bytes")
                raw = await _read_body(receive, settings.max_body_bytes)
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
                await _send_error(send, exc, request_id)
                return
            except Exception:
                logger.exception("request %s failed before forwarding", request_id)
                outcome.http_status = 500
                await _send_error(send, PlatformError(), request_id)
                return
            outcome.account_id, outcome.key_id = reservation.account_id, reservation.key_id
            state.last_used.touch(reservation.key_id, time.time())
            try:
                if request.stream:
                    await self._stream(request, reservation, prices, request_id, receive, send, outcome)
                else:
                    await self._complete(request, reservation, prices, request_id, send, outcome)
            finally:
                if outcome.status != "settled":
                    # Something unforeseen (or cancellation) ended the request: never leave the hold open.
                    await asyncio.shield(
                        self._settle(request, reservation, prices, request_id, outcome, started, failed=True)
                    )
        finally:
            if slot is not None and key_hash is not None:
                await state.limiter.release_key(key_hash, slot)
            self._observe(endpoint, request, request_id, outcome, time.perf_counter() - started)

    def _observe(self, endpoint: str, request: InferenceRequest | None, request_id: str, outcome: Outcome,
                 seconds: float) -> None:
        """Metrics and the request's log line: identifiers, counts and times, never content."""
        state = self.state
        assert state is not None
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
            "outcome": outcome.result,
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
        assert state is not None
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
        assert state is not None
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
        state = self.state
        assert state is not None
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
            outcome.status, outcome.http_status, outcome.error = "upstream_error", exc.status, exc
            await self._settle(request, reservation, prices, request_id, outcome, started)
            await _send_error(send, exc, request_id)
            return
        usage = document.get("usage")
        if not isinstance(usage, dict):
            usage = document["usage"] = {}
        outcome.usage = usage
        outcome.delivered_bytes = len(_completion_text(document).encode())
        charge = await self._settle(request, reservation, prices, request_id, outcome, started)
        usage["cost_nanoton"] = charge
        usage["cost_ton"] = charge / 1_000_000_000
        await send({"type": "http.response.start", "status": 200,
                    "headers": [JSON_TYPE, (b"x-request-id", request_id.encode())]})
        await send({"type": "http.response.body", "body": orjson.dumps(document)})

    async def _stream(
        self, request: InferenceRequest, reservation: Reservation, prices: NetworkPrices,
        request_id: str, receive: Receive, send: Send, outcome: Outcome,
    ) -> None:
        state = self.state
        assert state is not None
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
                watcher = asyncio.create_task(_wait_disconnect(receive))
                watcher.add_done_callback(client_left)

        try:
            # One deadline for the whole stream: the hold expires after the reservation TTL, so no
            # stream may outlive it, however slowly the upstream answers or the client reads.
            async with asyncio.timeout(self.deadline):
                response = await self._open(request, _UPSTREAM_PATH[request.endpoint])
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*SSE_HEADERS, (b"x-request-id", request_id.encode())]})
                await self._relay(response, send, outcome, started, watch_client)
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
            outcome.status, outcome.http_status = "upstream_error", outcome.error.status
            await self._settle(request, reservation, prices, request_id, outcome, started)
            await _send_error(send, outcome.error, request_id)
            return
        if outcome.error is None and outcome.usage is None:
            # Ended without its usage chunk: the stream was cut short, whatever closed it.
            outcome.error = UpstreamError(502, "The COCOON network ended the stream early.",
                                          "no_usage" if outcome.upstream_done else "stream_cut")
        if outcome.error is not None:
            outcome.status, outcome.http_status = "upstream_cut", outcome.error.status
        if disconnected:
            outcome.status, outcome.http_status, outcome.error = "client_disconnected", 499, None
        charge = await self._settle(request, reservation, prices, request_id, outcome, started)
        if disconnected:
            return
        if outcome.error is not None:
            await send({"type": "http.response.body", "body": _sse(outcome.error.to_bytes()), "more_body": False})
            return
        tail = b""
        if request.include_usage and outcome.usage is not None:
            usage = dict(outcome.usage)
            usage["cost_nanoton"] = charge
            usage["cost_ton"] = charge / 1_000_000_000
            tail = _sse(orjson.dumps({"id": outcome.stream_id or request_id,
                                      "object": _CHUNK_OBJECT[request.endpoint], "created": int(time.time()),
                                      "model": request.model, "choices": [], "usage": usage}))
        await send({"type": "http.response.body", "body": tail + _sse(DONE), "more_body": False})

    async def _relay(self, response: UpstreamResponse, send: Send, outcome: Outcome, started: float,
                     watch_client: Any) -> None:
        """Forward upstream events as they arrive; keep the usage for settlement. A broken
        connection ends the relay with outcome.error set; the caller's deadline raises through.

        Events that arrived in one read leave in one write: no event waits for another.
        """
        splitter = EventSplitter()
        read_events = self._read_events
        try:
            while True:
                if not response.buffered:
                    watch_client()
                data = await response.next_piece()
                if out := read_events(splitter.feed(data) if data else splitter.finish(), outcome, started):
                    await send({"type": "http.response.body", "body": b"data: " + b"\n\ndata: ".join(out) + b"\n\n",
                                "more_body": True})
                if not data:
                    break
        except ConnectionBroken:
            outcome.error = UpstreamError(502, "The COCOON network dropped the stream.", "stream_cut")

    def _read_events(self, payloads: list[bytes], outcome: Outcome, started: float) -> list[bytes]:
        """Count what the events of one read deliver; return the payloads to forward, in order.

        The usual event (one line, choices with text, no usage) is read by the typed fast path
        and counted here in one loop, as `_count_delivered` counts (inline: this runs for every
        event); any other goes through `_inspect_document`. `[DONE]` is
        not forwarded: the relay sends its own once the stream is settled."""
        out = []
        completion = reasoning = size = 0
        for payload in payloads:
            if payload == DONE:
                outcome.upstream_done = True
                continue
            event = usual_event(payload) if b"\n" not in payload else None
            if event is None:
                if (chunk := self._inspect_document(payload, outcome, started)) is not None:
                    out.append(chunk)
                continue
            if outcome.first_token_seconds is None:
                _first_event(outcome, started, event.id)
            for choice in event.choices:
                delta = choice.delta
                if delta is None:
                    text = choice.text
                else:
                    thought = delta.reasoning_content or delta.reasoning
                    if thought:  # reasoning text if the choice has some, else its answer text
                        reasoning += 1
                        completion += 1
                        size += len(thought)
                        continue
                    text = delta.content
                if text:
                    completion += 1
                    size += len(text)
            out.append(payload)
        if completion:
            outcome.delivered_completion += completion
            outcome.delivered_reasoning += reasoning
            outcome.delivered_bytes += size
        return out

    def _inspect_document(self, payload: bytes, outcome: Outcome, started: float) -> bytes | None:
        """Any event, parsed whole, every field checked by hand; returns the bytes to forward (None
        to hold the event back)."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict):
            return None
        if outcome.first_token_seconds is None:
            _first_event(outcome, started, chunk.get("id"))
        usage = chunk.get("usage")
        choices = chunk.get("choices")
        if isinstance(usage, dict):
            outcome.usage = usage
        if not choices:
            if "error" in chunk:
                outcome.error = UpstreamError(502, "The COCOON network failed mid-stream.", "stream_error")
            return None  # the usage-only chunk goes out after settlement, with its cost
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                _count_delivered(outcome, delta.get("reasoning_content") or delta.get("reasoning"),
                                 delta.get("content"))
            else:
                _count_delivered(outcome, None, choice.get("text"))
        if usage:
            del chunk["usage"]
            return orjson.dumps(chunk)
        # A payload spread over several lines would break the client's SSE parser: re-encode it.
        return orjson.dumps(chunk) if b"\n" in payload else payload

    # --- settlement -----------------------------------------------------------------------

    async def _settle(
        self, request: InferenceRequest, reservation: Reservation, prices: NetworkPrices,
        request_id: str, outcome: Outcome, started: float, failed: bool = False,
    ) -> int:
        """Charge what the outcome says, record usage, release the hold; returns the charge."""
        state = self.state
        assert state is not None
        if failed:
            outcome.status = "aborted"
        reported = usage_tokens(outcome.usage) if outcome.usage is not None else None
        if outcome.status == "upstream_error":
            tokens = TokenCounts(0, 0)
            charge = 0
        elif reported is not None and reported.completion >= outcome.delivered_completion:
            # Reported usage is the truth, even when the stream broke after reporting it.
            tokens = reported
            charge = state.pricer.charge(prices, tokens, reported_cost(outcome.usage or {}))
        else:
            # Never reported, unusable, or fewer tokens than were relayed: bill what was delivered.
            outcome.estimated = True
            completion = delivered_tokens(outcome.delivered_completion, outcome.delivered_bytes)
            tokens = TokenCounts(
                prompt=reported.prompt if reported else estimate_prompt_tokens(request),
                completion=completion,
                cached=reported.cached if reported else 0,
                reasoning=min(outcome.delivered_reasoning, completion),
            )
            charge = state.pricer.charge(prices, tokens, None)
        settlement = Settlement(
            reservation=reservation,
            charge=charge,
            request_id=request_id,
            model=request.model,
            endpoint=request.endpoint,
            prompt_tokens=tokens.prompt,
            cached_tokens=tokens.cached,
            completion_tokens=tokens.completion,
            reasoning_tokens=tokens.reasoning,
            status=outcome.status,
            http_status=outcome.http_status,
            estimated=outcome.estimated,
            duration_ms=int((time.perf_counter() - started) * 1000),
        )
        await state.billing.settle(settlement)
        outcome.status, outcome.result, outcome.tokens, outcome.charge = "settled", settlement.status, tokens, charge
        return charge


_UPSTREAM_PATH = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_CHUNK_OBJECT = {"chat": "chat.completion.chunk", "completions": "text_completion"}


def _first_event(outcome: Outcome, started: float, stream_id: Any) -> None:
    """The stream's first readable event: its time, and its id for the usage chunk we emit."""
    outcome.first_token_seconds = time.perf_counter() - started
    if isinstance(stream_id, str):
        outcome.stream_id = stream_id


def _count_delivered(outcome: Outcome, thought: Any, text: Any) -> None:
    """One choice of a chunk: reasoning text if it has some, else its answer text."""
    if isinstance(thought, str) and thought:
        outcome.delivered_reasoning += 1
        outcome.delivered_completion += 1
        outcome.delivered_bytes += len(thought)
    elif isinstance(text, str) and text:
        outcome.delivered_completion += 1
        outcome.delivered_bytes += len(text)


def _sse(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def _completion_text(document: dict[str, Any]) -> str:
    parts = []
    for choice in document.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message")
            if isinstance(message, dict):
                parts.append(str(message.get("content") or "") + str(message.get("reasoning_content") or ""))
            parts.append(str(choice.get("text") or ""))
    return "".join(parts)


def _headers(scope: Scope) -> tuple[str | None, int | None]:
    authorization = None
    length = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None
    return authorization, length


async def _read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send_error(send: Send, exc: PlatformError, request_id: str) -> None:
    headers = [JSON_TYPE, (b"x-request-id", request_id.encode())]
    headers.extend((k.lower().encode(), v.encode()) for k, v in exc.headers.items())
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": exc.to_bytes()})
