"""The raw ASGI application of the COCOON client simulator (routing, streaming, control)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from cocoon_simulator.cocoon_fields import NETWORK_SHARE, check_fields, timeout_seconds
from cocoon_simulator.cocoon_infer import (
    ERROR_FAULTS,
    HTML_TYPE,
    JSON_TYPE,
    Answer,
    Job,
    RequestError,
    ServedModel,
    decode_request,
    error_json,
    fault_error,
    final_events,
    plan_answer,
    read_job,
    response_body,
    token_events,
)
from cocoon_simulator.cocoon_options import (
    FAULT_MODES,
    SimulatorOptions,
    apply_changes,
    public_config,
)
from cocoon_simulator.cocoon_text import PrefixCache

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LAST_REQUESTS = 50
REMEMBERED_REQUESTS = 1024  # requests counted for [[sim:fault_attempt=N]]
WALLET_ADDRESS = "UQAR0S80abJTQA-vSKzZeYQavnNfM_VUUpEHTeRhLmyuvSW1"  # a valid, unowned address
PROXY_ADDRESS = "127.0.0.1:8888"
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_OTHER_PATHS = "other"  # unknown paths share one counter so stats stay bounded


class SimulatedCut(Exception):
    """Raised after a partial answer so the server drops the connection (fault "cut")."""


class _HideSimulatedCuts(logging.Filter):
    """The server logs app exceptions with a traceback; deliberate cuts are not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedCut))


def hide_cut_tracebacks() -> None:
    """Install the filter on uvicorn's error logger once."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideSimulatedCuts) for f in logger.filters):
        logger.addFilter(_HideSimulatedCuts())


async def read_body(receive: Receive) -> bytes:
    """The whole request body (one message in the common case)."""
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = JSON_TYPE,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """A complete response with an explicit content-length (no chunked encoding)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _until_disconnect(receive: Receive) -> None:
    """Return once the client is gone; the body was already read, so nothing else arrives."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _hang(receive: Receive, send: Send) -> None:
    """Fault "hang": never answer while the client waits; at server shutdown, say so instead."""
    try:
        await _until_disconnect(receive)
    except asyncio.CancelledError:
        # The server cancels leftover requests after its grace period; a clean 503 beats a
        # traceback plus a generic 500, and nothing else cancels a hung request.
        await respond(send, 503, orjson.dumps({"error_code": 503, "error": "simulator shutting down"}))


class DisconnectWatch:
    """Notices a client disconnect while a stream is paused between tokens."""

    __slots__ = ("_task",)

    def __init__(self, receive: Receive) -> None:
        self._task = asyncio.get_running_loop().create_task(_until_disconnect(receive))

    @property
    def gone(self) -> bool:
        """True once the client went away."""
        return self._task.done()

    async def pause(self, seconds: float) -> bool:
        """Wait up to `seconds` (0: no wait at all), returning early if the client leaves."""
        if seconds > 0:
            await asyncio.wait((self._task,), timeout=seconds)
        return self._task.done()

    def close(self) -> None:
        self._task.cancel()


class Arrivals:
    """How many times each request has arrived (the last `REMEMBERED_REQUESTS`, by checksum), so a
    fault can strike one attempt of a request its client sends again. A request is its body but
    its `timeout`: a client sends a retry with the time it has left."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}

    def count(self, request: dict[str, Any]) -> int:
        """This request's arrivals so far, this one included."""
        key = zlib.crc32(
            orjson.dumps({k: v for k, v in request.items() if k != "timeout"}, option=orjson.OPT_SORT_KEYS)
        )
        arrivals = self._counts.pop(key, 0) + 1
        self._counts[key] = arrivals  # last in the dict: the most recent
        if len(self._counts) > REMEMBERED_REQUESTS:
            del self._counts[next(iter(self._counts))]
        return arrivals


@dataclass
class Stats:
    """Counters for /_sim/stats; in-flight counts live in the app and survive a reset."""

    requests: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    errors: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    streams_started: int = 0
    streams_completed: int = 0
    streams_disconnected: int = 0
    tokens_sent_on_disconnected: int = 0
    last_requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LAST_REQUESTS))

    def remember(self, path: str, request: dict[str, Any]) -> None:
        """Keep what the platform forwarded, so tests can check it."""
        self.last_requests.append(
            {
                "path": path,
                "model": request.get("model"),
                "stream": request.get("stream"),
                "max_tokens": request.get("max_tokens"),
                "max_completion_tokens": request.get("max_completion_tokens"),
                "max_coefficient": request.get("max_coefficient"),
                "stream_options": request.get("stream_options"),
                "stop": request.get("stop"),
                "timeout": request.get("timeout"),
                "messages": request.get("messages"),
                "fields": sorted(request),
            }
        )

    def as_json(self, in_flight: int, cached_prefixes: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": in_flight,
            "completed": self.completed,
            "errors": self.errors,
            "faults": self.faults,
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_disconnected": self.streams_disconnected,
            "tokens_sent_on_disconnected": self.tokens_sent_on_disconnected,
            "cached_prefixes": cached_prefixes,
            "last_requests": list(self.last_requests),
        }


def _served_models(options: SimulatorOptions) -> dict[str, ServedModel]:
    """Model specs resolved against the process-wide coefficient and worker count."""
    return {
        spec.id: ServedModel(
            spec.id,
            spec.reasoning,
            options.coefficient if spec.coefficient is None else spec.coefficient,
            options.workers_per_model,
        )
        for spec in options.models
    }


class SimulatorApp:
    """ASGI app answering like a COCOON client; unknown paths go to `fallback` (or 404)."""

    def __init__(self, options: SimulatorOptions, fallback: ASGIApp | None = None) -> None:
        self._fallback = fallback
        self._stats = Stats()
        self._in_flight: dict[str, int] = {}  # by model id
        self._id_prefix = secrets.token_hex(4)  # answer ids stay unique across restarts
        self._next_id = 0
        self._options = options
        self._models = _served_models(options)
        self._cache = PrefixCache(options.prompt_cache_entries)
        self._arrivals = Arrivals()
        self._routes: dict[str, dict[str, ASGIApp]] = {
            "/v1/chat/completions": {"POST": self._chat},
            "/v1/completions": {"POST": self._completions},
            "/v1/models": {"GET": self._list_models},
            "/jsonstats": {"GET": self._jsonstats},
            "/stats": {"GET": self._stats_page},
            "/_sim/config": {"GET": self._get_config, "POST": self._post_config},
            "/_sim/stats": {"GET": self._get_stats},
            "/_sim/reset": {"POST": self._reset},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if self._fallback is not None:
                await self._fallback(scope, receive, send)
            elif scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return  # a websocket without fallback is refused by the server
        path = scope["path"]
        route = self._routes.get(path)
        counts = self._stats.requests
        key = path if route is not None else _OTHER_PATHS
        counts[key] = counts.get(key, 0) + 1
        if route is None:
            if self._fallback is not None:
                await self._fallback(scope, receive, send)
            else:
                await respond(send, 404, orjson.dumps({"error_code": 404, "error": f"no route {path}"}))
            return
        handler = route.get(scope["method"])
        if handler is None:
            await respond(send, 405, orjson.dumps({"error_code": 405, "error": "method not allowed"}))
            return
        await handler(scope, receive, send)

    # --- inference -------------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._inference(scope, receive, send, chat=True)

    async def _completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._inference(scope, receive, send, chat=False)

    async def _inference(self, scope: Scope, receive: Receive, send: Send, chat: bool) -> None:
        """Validate, pick the fault, then answer; in-flight counts cover the whole answer."""
        started = time.time()
        body = await read_body(receive)
        stats = self._stats
        try:
            request = decode_request(body)
            stats.remember(scope["path"], request)
            check_fields(request, chat, self._options.client_build)
            budget = timeout_seconds(request) * NETWORK_SHARE
            job = read_job(body, request, chat, self._models)
            fault = self._pick_fault(scope, job, request)
        except RequestError as err:
            stats.errors += 1
            await respond(send, err.status, err.body, err.content_type)
            return
        if fault is not None:
            stats.faults[fault] = stats.faults.get(fault, 0) + 1
        model = job.model.id
        in_flight = self._in_flight
        in_flight[model] = in_flight.get(model, 0) + 1
        try:
            if fault is not None and fault in ERROR_FAULTS:
                stats.errors += 1
                answer = fault_error(fault, model)
                await respond(send, answer.status, answer.body, answer.content_type)
            elif fault == "hang":
                await _hang(receive, send)
            elif job.stream:
                await self._stream(self._answer(job, started), fault, budget, receive, send)
            else:
                await self._reply(self._answer(job, started), fault, started, budget, send)
        finally:
            in_flight[model] -= 1

    def _pick_fault(self, scope: Scope, job: Job, request: dict[str, Any]) -> str | None:
        """Header X-Sim-Fault beats a [[sim:fault=...]] marker beats the process-wide fault. With
        [[sim:fault_attempt=N]] the fault strikes only the Nth arrival of this same request (a
        client's retry sends it again, `Arrivals`): the others are answered whole."""
        chosen = job.marker_fault
        if job.fault_attempt is not None and self._arrivals.count(request) != job.fault_attempt:
            chosen = "none"
        for name, value in scope["headers"]:
            if name == b"x-sim-fault":
                chosen = value.decode("latin-1").strip()
                if chosen != "none" and chosen not in FAULT_MODES:
                    raise error_json(400, f"unknown sim fault {chosen}")
        if chosen is None:
            return self._options.fault
        return None if chosen == "none" else chosen

    def _answer(self, job: Job, started: float) -> Answer:
        """Consult and feed the prompt cache, then plan tokens and costs."""
        seen = self._cache.remember(job.prompt.keys, job.prompt.lengths)
        self._next_id += 1
        kind = "chatcmpl" if job.chat else "cmpl"
        answer_id = f"{kind}-{self._id_prefix}{self._next_id:x}"
        return plan_answer(job, seen, self._options, answer_id, int(started))

    async def _reply(self, answer: Answer, fault: str | None, started: float, budget: float, send: Send) -> None:
        """Non-streaming: wait the generation time, then one JSON document; a 504 once the
        network's share of the request's timeout (`budget`, seconds) runs out first."""
        options = self._options
        delay = options.ttft_ms + options.tpt_ms * (answer.completion_tokens - 1)
        if fault == "stall" or delay / 1000 > budget:  # a stalled worker runs out of time too
            await asyncio.sleep(budget)
            self._stats.errors += 1
            timed_out = fault_error("timeout", answer.model)
            await respond(send, timed_out.status, timed_out.body, timed_out.content_type)
            return
        if delay > 0:
            await asyncio.sleep(delay / 1000)
        body = response_body(answer)
        if fault == "cut":
            # Promise the full length, deliver half, drop the connection: an abrupt upstream loss.
            headers = [(b"content-type", JSON_TYPE), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise SimulatedCut
        timing = ((b"x-cocoon-client-start", b"%.6f" % started), (b"x-cocoon-client-end", b"%.6f" % time.time()))
        await respond(send, 200, body, JSON_TYPE, timing)
        self._stats.completed += 1

    async def _stream(self, answer: Answer, fault: str | None, budget: float, receive: Receive, send: Send) -> None:
        """One chunk per token, then usage and [DONE]; "cut" stops half way and drops the
        connection, "stall" stops half way and sends nothing more (a worker that stopped
        mid-answer), "bare_json" unframes. When the network's share of the timeout (`budget`,
        seconds) runs out, the client answers 504 if nothing was sent yet, else just ends the
        stream (no usage, no [DONE])."""
        bare = fault == "bare_json"
        events = token_events(answer, bare)
        if fault in ("cut", "stall"):
            events = events[: max(2, len(events) // 2)]
        self._stats.streams_started += 1
        options = self._options
        watch = DisconnectWatch(receive)
        deadline = asyncio.get_running_loop().time() + budget
        try:
            sent = 0
            stalled = False
            if options.ttft_ms / 1000 > budget:
                if not await watch.pause(budget):
                    self._stats.errors += 1
                    timed_out = fault_error("timeout", answer.model)
                    await respond(send, timed_out.status, timed_out.body, timed_out.content_type)
                return
            if not await watch.pause(options.ttft_ms / 1000):
                await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                sent = await _send_events(events, options.tpt_ms / 1000, watch, send, deadline)
                if fault == "stall" and sent == len(events):
                    # Nothing more arrives: the client's timeout ends it as any answer out of time.
                    await watch.pause(deadline - asyncio.get_running_loop().time())
                    stalled = True
            stats = self._stats  # looked up after the waits: a reset may have replaced it
            if watch.gone:
                stats.streams_disconnected += 1
                stats.tokens_sent_on_disconnected += sent
                return
            if sent < len(events) or stalled:
                stats.errors += 1
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if fault == "cut":
                raise SimulatedCut
            await send({"type": "http.response.body", "body": final_events(answer, bare)})
            stats.streams_completed += 1
            stats.completed += 1
        finally:
            watch.close()

    # --- client status -------------------------------------------------------------------

    async def _list_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Model list with per-worker load; "object" appears twice, as the real client writes it."""
        if await read_body(receive):
            await respond(send, 400, orjson.dumps({"error_code": 400, "error": "unexpected request body"}))
            return
        limit = self._options.max_running_requests
        data = []
        for model in self._models.values():
            per_worker, extra = divmod(self._in_flight.get(model.id, 0), model.workers)
            workers = [
                {
                    "coefficient": model.coefficient,
                    "running_requests": per_worker + (1 if i < extra else 0),
                    "max_running_requests": limit,
                }
                for i in range(model.workers)
            ]
            data.append({"id": model.id, "object": "model", "created": 0, "owned_by": "?", "workers": workers})
        await respond(send, 200, b'{"object":"list","data":' + orjson.dumps(data) + b',"object":"list"}')

    def _allowed(self, scope: Scope) -> bool:
        """With an access hash configured, status pages need ?access_hash=<it>."""
        expected = self._options.access_hash
        if expected is None:
            return True
        given = parse_qs(scope["query_string"].decode("latin-1")).get("access_hash", [""])[0]
        return secrets.compare_digest(given.encode(), expected.encode())

    def _status(self) -> dict[str, Any]:
        """The parts of /jsonstats the platform reads."""
        options = self._options
        return {
            "status": {
                "wallet_balance": options.wallet_balance,
                "ton_last_synced_at": int(time.time()),
                "enabled": True,
            },
            "wallet": {"address": WALLET_ADDRESS, "balance": options.wallet_balance},
            "proxy_connections": [{"address": PROXY_ADDRESS, "is_ready": options.fault != "no_proxy"}],
            "root_contract_config": {
                "price_per_token": options.price_per_token,
                "worker_fee_per_token": options.worker_fee_per_token,
                "prompt_tokens_price_multiplier": options.prompt_multiplier,
                "cached_tokens_price_multiplier": options.cached_multiplier,
                "completion_tokens_price_multiplier": options.completion_multiplier,
                "reasoning_tokens_price_multiplier": options.reasoning_multiplier,
            },
        }

    async def _jsonstats(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._allowed(scope):
            await respond(send, 403, orjson.dumps({"error_code": 403, "error": "access denied"}))
            return
        await respond(send, 200, orjson.dumps(self._status()))

    async def _stats_page(self, scope: Scope, receive: Receive, send: Send) -> None:
        """/stats: the /jsonstats facts as a small HTML page."""
        if not self._allowed(scope):
            await respond(send, 403, b"<html><body>access denied</body></html>", HTML_TYPE)
            return
        rows = "".join(
            f"<tr><th>{section}.{name}</th><td>{value}</td></tr>"
            for section, values in self._status().items()
            if isinstance(values, dict)
            for name, value in values.items()
        )
        page = f"<html><head><title>cocoon client</title></head><body><table>{rows}</table></body></html>"
        await respond(send, 200, page.encode(), HTML_TYPE)

    # --- simulator control -----------------------------------------------------------------

    async def _get_config(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, orjson.dumps(public_config(self._options)))

    async def _post_config(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Change options at runtime from a JSON object of field values."""
        try:
            changes = decode_request(await read_body(receive))
            options = apply_changes(self._options, changes)
        except RequestError as err:
            await respond(send, err.status, err.body, err.content_type)
            return
        except (ValueError, TypeError) as exc:
            await respond(send, 400, orjson.dumps({"error_code": 400, "error": str(exc)}))
            return
        if options.prompt_cache_entries != self._options.prompt_cache_entries:
            self._cache = PrefixCache(options.prompt_cache_entries)
        self._options = options
        self._models = _served_models(options)
        await respond(send, 200, orjson.dumps(public_config(options)))

    async def _get_stats(self, scope: Scope, receive: Receive, send: Send) -> None:
        in_flight = sum(self._in_flight.values())
        await respond(send, 200, orjson.dumps(self._stats.as_json(in_flight, len(self._cache))))

    async def _reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Forget counters and cached prompts (requests still running keep counting in-flight)."""
        self._stats = Stats()
        self._cache = PrefixCache(self._options.prompt_cache_entries)
        self._arrivals = Arrivals()
        await respond(send, 200, b'{"ok":true}')


async def _send_events(events: list[bytes], gap: float, watch: DisconnectWatch, send: Send, deadline: float) -> int:
    """Send token events `gap` seconds apart (all in one write when 0) until the loop's clock
    reaches `deadline`; return how many went out."""
    if gap <= 0:
        await send({"type": "http.response.body", "body": b"".join(events), "more_body": True})
        return len(events)
    clock = asyncio.get_running_loop().time
    for i, event in enumerate(events):
        if i and clock() + gap > deadline:
            await watch.pause(deadline - clock())
            return i
        if i and await watch.pause(gap):
            return i
        await send({"type": "http.response.body", "body": event, "more_body": True})
    return len(events)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to set up or tear down; just acknowledge."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
