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
from functools import partial
from typing import Any

import orjson

from cocoon_platform.accounts.keys import bearer_key_hash
from cocoon_platform.accounts.refusals import key_refusal, limit_refusal
from cocoon_platform.billing import tokenizer
from cocoon_platform.billing.cost import UsageStatus, bill
from cocoon_platform.billing.prices import NetworkPrices
from cocoon_platform.billing.store import Reservation, Settlement
from cocoon_platform.config import format_ton
from cocoon_platform.dialects import Dialect
from cocoon_platform.dialects.chat import frame_chunks
from cocoon_platform.dialects.messages import PATH as MESSAGES_PATH
from cocoon_platform.dialects.messages import MessagesDialect
from cocoon_platform.dialects.responses import PATH as RESPONSES_PATH
from cocoon_platform.dialects.responses import ResponsesDialect
from cocoon_platform.errors import (
    InsufficientBalance,
    InvalidApiKey,
    InvalidRequest,
    PayloadTooLarge,
    PlatformError,
    UpstreamBusy,
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
    with_headers,
)
from cocoon_platform.proxy.assemble import Assembler, collect
from cocoon_platform.proxy.attempts import answer_usage
from cocoon_platform.proxy.events import DONE
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.proxy.relay import Frame, framed_events, openai_frame, read_texts, relay
from cocoon_platform.proxy.request import (
    CHAT_PATH,
    InferenceRequest,
    decode_body,
    parse_request,
    prepare_request,
)
from cocoon_platform.proxy.upstream_errors import map_upstream_error
from cocoon_platform.state import AppState
from cocoon_platform.tools.answer import read_choices
from cocoon_platform.tools.offer import SchemaCache
from cocoon_platform.tools.stream import StreamTranslator
from cocoon_platform.upstream.http import ConnectionBroken, PoolBusy, UpstreamResponse
from cocoon_platform.upstream.pool import NoUpstream

logger = logging.getLogger(__name__)

MAX_RESERVATION = 2**62  # fits a BIGINT with room for the balance arithmetic


def new_request_id(prefix: str = "req_") -> str:
    """`prefix` + 44-bit millisecond time (to the year 2527) + 80 random bits, in hex: unique, and
    in time order, so the unique indexes on request ids and usage references grow at their end
    instead of touching a random page per insert (fewer pages per transaction; fewer WAL frames
    on SQLite). The prefix is the answer's kind as its API writes ids (`chatcmpl-`, `cmpl-`,
    `resp_`, `msg_`): the answer's `id` is the request id. At most 40 characters (the id columns).

    The bits come from `random` (seeded from the OS, reseeded in forked workers), not a system
    call per request: an id must be unique, not secret."""
    return f"{prefix}{time.time_ns() // 1_000_000 & 0xFFFFFFFFFFF:011x}{random.getrandbits(80):020x}"


class ClientWatch:
    """Notices the caller leaving while its answer is read from the network, and then drops the
    upstream answer at once: the network stops generating, and the relay or assembly reading it
    ends with it. `start` is the relay's `watch_client`, called once it first has to wait for the
    network: an answer that arrives in one go is written out before a departure could be noticed
    anyway, so most requests never start the task."""

    __slots__ = ("_receive", "_task", "_response", "left")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[None] | None = None
        self._response: UpstreamResponse | None = None
        self.left = False  # the caller went away; its answer was dropped

    def follow(self, response: UpstreamResponse) -> None:
        """The answer now being read (a retry's replaces the first): dropped at once if the caller
        has already left."""
        self._response = response
        if self.left:
            response.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(wait_disconnect(self._receive))
            self._task.add_done_callback(self._caller_left)

    def _caller_left(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and self._response is not None:
            self.left = True
            self._response.close()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class InferenceHandler:
    """ASGI callable for every metered inference path: POST /v1/chat/completions and
    /v1/completions, and the dialects' /v1/responses and /v1/messages (`DIALECTS`), which are
    translated to chat and served on the same path."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        settings = state.settings
        # The network's own deadline (the `timeout` sent with the request) comes first, by a margin;
        # and a request never outlives its hold, so the sweeper never releases a live one.
        self.deadline = settings.upstream_deadline
        self.margin = settings.upstream_deadline - settings.upstream_timeout_sent  # a retry keeps it too
        tokenizer.warm()  # exact estimates for cut answers, loaded off the event loop
        self.schemas = SchemaCache()  # tools' compiled JSON Schemas, shared by requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        started = time.perf_counter()
        settings = state.settings
        dialect = DIALECTS.get(scope["path"])
        if dialect is None:
            endpoint = "chat" if scope["path"] == CHAT_PATH else "completions"
            request_id = new_request_id(_ID_PREFIX[endpoint])
        else:
            endpoint, request_id = dialect.endpoint, new_request_id(dialect.id_prefix)
        outcome = Outcome()
        request: InferenceRequest | None = None
        account_id = 0
        slot: str | None = None
        try:
            try:
                authorization, length = request_headers(scope)
                if length is not None and length > settings.max_body_bytes:
                    raise PayloadTooLarge(f"Request body exceeds {settings.max_body_bytes} bytes")
                if state.limiter.blocked_until:
                    state.limiter.refuse_if_blocked(state.client_addresses.bucket_of(scope))
                raw = await read_body(receive, settings.max_body_bytes)
                key_hash = bearer_key_hash(authorization)
                if key_hash is None:
                    raise InvalidApiKey()
                if state.limiter.checks_accounts:
                    known = await state.key_accounts.account_of(key_hash)
                    if known is None:
                        raise InvalidApiKey()
                    account_id = known
                    slot, rate_headers = await state.limiter.admit_account(account_id)
                    if rate_headers:
                        send = with_headers(send, rate_headers)
                if dialect is None:
                    request = parse_request(
                        scope["path"],
                        raw,
                        max_tokens_cap=settings.max_tokens_cap,
                        default_max_tokens=settings.default_max_tokens,
                        max_coefficient=settings.max_coefficient,
                        extra_fields=settings.upstream_extra_field_set,
                        tool_format_of=self._tool_format,
                        schemas=self.schemas,
                        request_timeout=settings.upstream_timeout_sent,
                    )
                else:
                    request = self._translate(dialect, raw)
                request.set_model(state.network.canonical(request.model))
                prices = state.prices
                prompt_bound = request.prompt_bound(len(raw))
                amount = state.pricer.worst_case(prices, prompt_bound, request.completion_bound())
                if amount >= MAX_RESERVATION:
                    raise InvalidRequest("This request is too large to price; lower max_tokens, n or the prompt.")
                reservation = await state.billing.reserve(
                    key_hash,
                    amount,
                    settings.min_balance_nanoton,
                    settings.max_overdraft_nanoton,
                    request_id,
                    settings.reservation_ttl_seconds,
                    model=request.model,
                    overdraft_min_credits=settings.overdraft_min_credits_nanoton,
                )
                if reservation is None:
                    raise await self._refusal(key_hash, amount, prices, prompt_bound, request)
            except PlatformError as exc:
                if isinstance(exc, InvalidApiKey):
                    exc = await state.limiter.failed_authentication(state.client_addresses.bucket_of(scope)) or exc
                outcome.http_status = exc.status
                await send_error(send, exc, request_id, dialect)
                return
            except Exception:
                logger.exception("request %s failed before forwarding", request_id)
                outcome.http_status = 500
                await send_error(send, PlatformError(), request_id, dialect)
                return
            outcome.account_id, outcome.key_id = reservation.account_id, reservation.key_id
            state.last_used.touch(reservation.key_id, time.time())
            try:
                if request.stream:
                    await self._stream(request, reservation, prices, request_id, receive, send, outcome)
                else:
                    await self._complete(request, reservation, prices, request_id, receive, send, outcome)
            finally:
                if not outcome.settled:
                    # Something unforeseen (or cancellation) ended the request: never leave the hold open.
                    outcome.status = UsageStatus.ABORTED
                    await asyncio.shield(self._settle(request, reservation, prices, request_id, outcome, started))
        finally:
            if slot is not None:
                await state.limiter.release_account(account_id, slot)
            self._observe(endpoint, request, request_id, outcome, time.perf_counter() - started)

    def _observe(
        self, endpoint: str, request: InferenceRequest | None, request_id: str, outcome: Outcome, seconds: float
    ) -> None:
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
        log_request(
            {
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
            }
        )

    # --- refusal --------------------------------------------------------------------------

    async def _refusal(
        self, key_hash: bytes, amount: int, prices: NetworkPrices, prompt_bound: int, request: InferenceRequest
    ) -> PlatformError:
        state = self.state
        settings = state.settings
        funds = await state.billing.funds(key_hash)
        if funds is None:
            return InvalidApiKey()
        now = time.time()
        refused = key_refusal(funds, request.model, now)
        if refused is not None:
            return refused
        # The overdraft only for accounts whose lifetime credits reach the minimum (#14).
        overdraft = settings.max_overdraft_nanoton if funds.credited >= settings.overdraft_min_credits_nanoton else 0
        if funds.balance < settings.min_balance_nanoton:
            return InsufficientBalance(
                f"Insufficient balance: {format_ton(funds.balance)} TON. "
                f"Minimum: {format_ton(settings.min_balance_nanoton, 2)} TON. Top up via /v1/deposit."
            )
        available = funds.balance - funds.reserved + overdraft
        per_max_token = request.choices * request.attempts
        if amount <= available:  # the funds would do: the key's own limit refused it
            key_left = (funds.credit_limit or 0) - funds.limit_spent - funds.limit_reserved
            fits = state.pricer.largest_max_tokens(prices, prompt_bound, min(available, key_left)) // per_max_token
            limited = limit_refusal(funds, amount, fits, now)
            if limited is not None:
                return limited
        fits = state.pricer.largest_max_tokens(prices, prompt_bound, available) // per_max_token
        hint = (
            f" The largest max_tokens that fits is {fits}."
            if fits > 0
            else " Top up via /v1/deposit or shorten the prompt."
        )

        def ton(nanoton: int) -> str:
            return format_ton(nanoton, 9, trim=True)

        if overdraft == 0 and settings.max_overdraft_nanoton > 0:
            hint += (
                f" An overdraft of {ton(settings.max_overdraft_nanoton)} TON opens once your deposits reach "
                f"{ton(settings.overdraft_min_credits_nanoton)} TON in all."
            )

        return InsufficientBalance(
            f"Insufficient balance for this request: it needs up to {ton(amount)} TON "
            f"(max_tokens={request.max_tokens}) but {ton(max(available, 0))} TON is available "
            f"(balance {ton(funds.balance)} TON, {ton(funds.reserved)} TON held by requests "
            f"in flight, overdraft {ton(overdraft)} TON).{hint}"
        )

    def _tool_format(self, model: str) -> str | None:
        """The catalog's tool format for a model named by its id or alias."""
        return self.state.catalog.tool_format(self.state.network.canonical(model))

    def _translate(self, dialect: Dialect, raw: bytes) -> InferenceRequest:
        """A dialect's request as a chat request, through the chat path's checks and filter."""
        settings = self.state.settings
        translated = dialect.translate(decode_body(raw))
        request = prepare_request(
            translated.chat,
            True,
            max_tokens_cap=settings.max_tokens_cap,
            default_max_tokens=settings.default_max_tokens,
            max_coefficient=settings.max_coefficient,
            extra_fields=settings.upstream_extra_field_set,
            tool_format_of=self._tool_format,
            schemas=self.schemas,
            request_timeout=settings.upstream_timeout_sent,
        )
        request.dialect, request.translated = dialect, translated
        return request

    # --- forwarding -----------------------------------------------------------------------

    def _retry_timeout(self, started: float) -> float | None:
        """The `timeout` a retry is sent with: what is left of the request's deadline (counted from
        `started`) less the margin the first request keeps, so that the network still ends first
        and says what it generated (ruling 1 of #23); None when nothing would be left."""
        left = self.deadline - (time.perf_counter() - started) - self.margin
        return left if left > 0 else None

    async def _open(self, request: InferenceRequest, path: str, timeout: float | None = None) -> UpstreamResponse:
        """The network's answer to `request`, its head read; sent with the request's own `timeout`
        unless another (a retry's) is given."""
        state = self.state
        sent = request.payload_json if timeout is None else orjson.dumps({**request.payload, "timeout": timeout})
        try:
            response = await state.pool.post(path, sent)
        except NoUpstream:
            raise UpstreamError(
                503, "The COCOON network is unavailable right now. Try again shortly.", "unreachable"
            ) from None
        except PoolBusy:
            raise UpstreamBusy() from None
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

    async def _fetch(
        self,
        request: InferenceRequest,
        timeout: float,
        outcome: Outcome,
        receive: Receive,
        retry_timeout: float | None = None,
    ) -> dict[str, Any]:
        """One non-streamed answer, read from the network's stream and assembled (`assemble.py`),
        so that what the network generated is counted in `outcome` whatever ends the request.
        Raises UpstreamError; `outcome.answering` says whether the network had begun answering
        (then what it generated is billed), `outcome.client_left` whether the caller went away.
        A retry (the second attempt, sent with `retry_timeout` as its `timeout`) sets the first
        attempt's report aside once the network takes it (`Outcome.second_attempt`): both are
        billed."""
        started = time.perf_counter()
        assembler = Assembler(request.endpoint)
        response: UpstreamResponse | None = None
        watch = ClientWatch(receive)
        try:
            async with asyncio.timeout(timeout):
                response = await self._open(request, _UPSTREAM_PATH[request.endpoint], retry_timeout)
                if retry_timeout is not None:
                    outcome.second_attempt()
                outcome.answering = True
                watch.follow(response)
                await collect(response, assembler, outcome, started, watch.start)
        except TimeoutError:
            if response is None:
                raise UpstreamError(504, "The COCOON network did not answer in time.", "timeout") from None
            raise UpstreamError(
                504, "The COCOON network stopped answering mid-answer; what it generated is billed.", "timeout"
            ) from None
        finally:
            watch.stop()
            if watch.left:
                outcome.client_left = True
            if response is not None:
                response.close()
        if outcome.error is not None:
            raise outcome.error
        if outcome.usage is None and not outcome.upstream_done:
            raise UpstreamError(
                502, "The COCOON network ended the answer early; what it generated is billed.", "stream_cut"
            )
        return assembler.document(outcome.usage)

    async def _complete(
        self,
        request: InferenceRequest,
        reservation: Reservation,
        prices: NetworkPrices,
        request_id: str,
        receive: Receive,
        send: Send,
        outcome: Outcome,
    ) -> None:
        started = time.perf_counter()
        try:
            try:
                document = await self._fetch(request, self.deadline, outcome, receive)
            finally:
                outcome.upstream_seconds = time.perf_counter() - started
        except PlatformError as exc:
            if outcome.client_left:
                outcome.status, outcome.http_status, outcome.error = UsageStatus.CLIENT_DISCONNECTED, 499, None
                await self._settle(request, reservation, prices, request_id, outcome, started)
                return
            # Once the network began answering, what it generated is billed (ruling 1).
            outcome.status = UsageStatus.UPSTREAM_CUT if outcome.answering else UsageStatus.UPSTREAM_ERROR
            outcome.http_status, outcome.error = exc.status, exc
            await self._settle(request, reservation, prices, request_id, outcome, started)
            await send_error(send, exc, request_id, request.dialect)
            return
        # The answer's tool calls read (tools/answer.py); a required call the model did not make
        # is asked for once more.
        if request.tools is not None and not read_choices(document, request.tools) and request.attempts > 1:
            document = await self._retry_for_call(request, document, outcome, started, receive)
            if outcome.status is UsageStatus.CLIENT_DISCONNECTED:
                outcome.http_status = 499
                await self._settle(request, reservation, prices, request_id, outcome, started)
                return
        charge = await self._settle(request, reservation, prices, request_id, outcome, started)
        usage = answer_usage(outcome)
        if usage is None:
            usage = {}
        document["usage"] = usage
        usage["cost_nanoton"] = charge
        usage["cost_ton"] = charge / 1_000_000_000
        document["id"] = request_id
        if request.translated is not None:
            document = request.translated.answer(document, request_id)
        await send_json(send, document, request_id)

    async def _retry_for_call(
        self,
        request: InferenceRequest,
        document: dict[str, Any],
        outcome: Outcome,
        started: float,
        receive: Receive,
    ) -> dict[str, Any]:
        """The answer to keep when a call was required and the model (its answer read) made none:
        it is asked once more within the request's deadline, with a `timeout` that keeps the
        network's end before it (`_retry_timeout`); both attempts are billed (the reservation
        covered both), each for what the network generated (`bill`).

        If the second attempt fails, the first answer stands: it is whole and paid for, the second
        is not. Never taken by the network (refused, unreachable, no time left), the second costs
        nothing. Begun and broken off (cut, timed out), what it generated is billed with the first
        (its usage if the network sent it, else estimated from what arrived), and the record says
        `upstream_cut` with the 200 the caller got. Left by the caller: the same bill, recorded
        `client_disconnected` (499), and nothing is sent."""
        assert request.tools is not None
        sent = self._retry_timeout(started)
        if sent is None:  # no time left for the network to answer before the deadline: never sent
            return document
        try:
            second = await self._fetch(request, self.deadline - (time.perf_counter() - started), outcome, receive, sent)
        except PlatformError as exc:
            if outcome.earlier is not None:  # the network took it: what it generated is billed
                left = outcome.client_left
                outcome.status = UsageStatus.CLIENT_DISCONNECTED if left else UsageStatus.UPSTREAM_CUT
                outcome.error = None if left else exc
            return document
        finally:
            outcome.upstream_seconds = time.perf_counter() - started
        read_choices(second, request.tools)
        return second

    async def _stream(
        self,
        request: InferenceRequest,
        reservation: Reservation,
        prices: NetworkPrices,
        request_id: str,
        receive: Receive,
        send: Send,
        outcome: Outcome,
    ) -> None:
        started = time.perf_counter()
        response: UpstreamResponse | None = None
        translation = None if request.translated is None else request.translated.stream(request_id, request.model)
        watch = ClientWatch(receive)
        held: StreamTranslator | None = None  # the first answer's text, while a retry waits to be taken
        try:
            # One deadline for the whole stream: the hold expires after the reservation TTL, so no
            # stream may outlive it, however slowly the upstream answers or the client reads.
            async with asyncio.timeout(self.deadline):
                response = await self._open(request, _UPSTREAM_PATH[request.endpoint])
                watch.follow(response)
                await start_sse(send, request_id)
                # The payloads of one read as the client's bytes: chat's SSE, or the dialect's events.
                frame: Frame = (
                    openai_frame(outcome, request_id) if translation is None else partial(frame_chunks, translation)
                )
                if request.tools is None:
                    read = (
                        partial(framed_events, frame, outcome, started)
                        if translation is None
                        else partial(read_texts, translation, outcome, started)  # counted and translated in one loop
                    )
                    await relay(response, send, outcome, watch.start, read)
                else:
                    # Text is held back while a call is required, so a retry can replace the answer.
                    translator = StreamTranslator(request.tools, hold_text=request.attempts > 1)

                    def tool_frame(payloads: list[bytes]) -> bytes:
                        out = translator.translate(payloads)  # new payloads: the dialect decodes them
                        return frame(out) if out else b""

                    read = partial(framed_events, tool_frame, outcome, started)
                    await relay(response, send, outcome, watch.start, read)
                    if translator.waiting and outcome.error is None and not watch.left:
                        # The model made no call though one was required: once more, in the time
                        # left (`_retry_timeout`), both billed, the second for what it generated
                        # however it ends (`attempts.py`).
                        response.close()
                        held = translator
                        # Never sent (no time left) or never taken, it costs nothing: the first answer stands.
                        retried: UpstreamResponse | None = None
                        sent = self._retry_timeout(started)
                        if sent is not None:
                            try:
                                retried = await self._open(request, _UPSTREAM_PATH[request.endpoint], sent)
                            except PlatformError:
                                pass
                        held = None
                        if retried is not None:
                            response = retried
                            outcome.second_attempt()
                            watch.follow(response)
                            translator = StreamTranslator(request.tools, envelope=translator.envelope)
                            await relay(response, send, outcome, watch.start, read)
                    if (rest := translator.finish()) and not watch.left:
                        await send({"type": "http.response.body", "body": frame(rest), "more_body": True})
        except TimeoutError:
            if held is not None:
                pass  # the deadline came before the network took the retry: as if refused, the first answer stands
            elif response is not None:
                outcome.error = UpstreamError(504, "The COCOON network stopped answering mid-stream.", "timeout")
            else:
                outcome.error = UpstreamError(504, "The COCOON network did not answer in time.", "timeout")
        except PlatformError as exc:
            outcome.error = exc  # from _open: nothing was sent yet
        finally:
            watch.stop()
            if response is not None:
                response.close()
            outcome.upstream_seconds = time.perf_counter() - started
        if held is not None and (rest := held.finish()) and not watch.left:
            await send({"type": "http.response.body", "body": frame(rest), "more_body": True})
        if response is None:
            assert outcome.error is not None
            outcome.status, outcome.http_status = UsageStatus.UPSTREAM_ERROR, outcome.error.status
            await self._settle(request, reservation, prices, request_id, outcome, started)
            await send_error(send, outcome.error, request_id, request.dialect)
            return
        if outcome.error is None and outcome.usage is None:
            # Ended without its usage chunk: the stream was cut short, whatever closed it.
            outcome.error = UpstreamError(
                502, "The COCOON network ended the stream early.", "no_usage" if outcome.upstream_done else "stream_cut"
            )
        if outcome.error is not None:
            outcome.status, outcome.http_status = UsageStatus.UPSTREAM_CUT, outcome.error.status
        if watch.left:
            outcome.status, outcome.http_status, outcome.error = UsageStatus.CLIENT_DISCONNECTED, 499, None
        charge = await self._settle(request, reservation, prices, request_id, outcome, started)
        if watch.left:
            return
        if outcome.error is not None:
            last = sse(outcome.error.to_bytes()) if translation is None else translation.fail(outcome.error)
            await send({"type": "http.response.body", "body": last, "more_body": False})
            return
        usage = dict(answer_usage(outcome) or {})
        usage["cost_nanoton"] = charge
        usage["cost_ton"] = charge / 1_000_000_000
        if translation is not None:
            await send({"type": "http.response.body", "body": translation.finish(usage), "more_body": False})
            return
        tail = b""
        if request.include_usage and outcome.usage is not None:
            tail = sse(
                orjson.dumps(
                    {
                        "id": request_id,
                        "object": _CHUNK_OBJECT[request.endpoint],
                        "created": int(time.time()),
                        "model": request.model,
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        await send({"type": "http.response.body", "body": tail + sse(DONE), "more_body": False})

    # --- settlement -----------------------------------------------------------------------

    async def _settle(
        self,
        request: InferenceRequest,
        reservation: Reservation,
        prices: NetworkPrices,
        request_id: str,
        outcome: Outcome,
        started: float,
    ) -> int:
        """Charge what the outcome says, record usage, release the hold; returns what was charged
        (the bill, or less where the store had to cap it: billing/store/records.py, cap_charges)."""
        state = self.state
        charged = bill(
            state.pricer,
            prices,
            outcome.status,
            outcome.usage,
            outcome.delivered(),
            request.estimate_prompt_tokens,
            outcome.earlier,
        )
        tokens = charged.tokens
        outcome.estimated = charged.estimated
        settlement = Settlement(
            reservation=reservation,
            charge=charged.charge,
            request_id=request_id,
            model=request.model,
            endpoint=request.endpoint if request.dialect is None else request.dialect.endpoint,
            prompt_tokens=tokens.prompt,
            cached_tokens=tokens.cached,
            completion_tokens=tokens.completion,
            reasoning_tokens=tokens.reasoning,
            status=outcome.status.value,
            http_status=outcome.http_status,
            estimated=charged.estimated,
            duration_ms=int((time.perf_counter() - started) * 1000),
        )
        charge = await state.billing.settle(settlement)
        outcome.settled, outcome.tokens, outcome.charge = True, tokens, charge
        return charge


_ID_PREFIX = {"chat": "chatcmpl-", "completions": "cmpl-"}
DIALECTS: dict[str, Dialect] = {RESPONSES_PATH: ResponsesDialect(), MESSAGES_PATH: MessagesDialect()}
_UPSTREAM_PATH = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
_CHUNK_OBJECT = {"chat": "chat.completion.chunk", "completions": "text_completion"}
