"""How the server process serves: uvicorn's httptools protocol writing what one event-loop step
sends as one, and the garbage collector set for a long-running server.

An ASGI response is at least two messages (the start, then the body), and uvicorn writes each
to the socket as it comes: two system calls and two TCP segments for the smallest answer, and
the client wakes for each. Here the writes of one step are joined and go out when the step
ends, so a response sent in one go is one write (measured in docs/benchmarks.md).

The protocol also guards the server against slow and huge requests (#14 item 6), which
uvicorn's httptools protocol leaves unbounded:
- a request head (request line and headers) must arrive whole within the header timeout, timed
  from the connection (or, on a kept-alive connection, from the request's first byte); else 408
  and the connection is closed;
- a head over MAX_HEAD_BYTES gets 431 and the connection is closed, so memory per connection
  stays bounded while its head arrives;
- a body must arrive whole within the body timeout after its head (408, closed);
- at most `max_connections` connections are open: at the limit a new connection closes the one
  that has waited longest for its head (real clients send theirs at once; a slow-header attack
  holds them open), and only when none waits is the new one refused.
"""

from __future__ import annotations

import asyncio
import gc
import http
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from cocoon_platform.errors import HeadersTooLarge, PlatformError, RequestTimeout

# Request line plus headers; nginx's large_client_header_buffers must allow as much.
MAX_HEAD_BYTES = 64 * 1024
# What a connection awaits (HttpProtocol._phase).
HEAD, BODY = "head", "body"

# Tracked objects allocated (net) before a young-generation collection; Python's default is 700.
GC_YOUNG_THRESHOLD = 10_000


class CoalescingTransport:
    """Wraps a transport: writes wait for the end of the current event-loop step, then leave
    together. Past HIGH_WATER_LIMIT they leave at once, so the wrapped transport's flow
    control still pauses a sender that outruns its reader. Anything that ends or measures the
    output (close, write_eof, the buffer size) sees the waiting bytes first."""

    __slots__ = ("_transport", "_loop", "_pending", "_size")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))  # a caller may reuse a mutable buffer once write returns
        self._size += len(data)
        if self._size > HIGH_WATER_LIMIT:
            self.flush()

    def writelines(self, lines: Iterable[bytes]) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._size = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._size = 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._size + self._transport.get_write_buffer_size()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int
    max_head_bytes: int = MAX_HEAD_BYTES


@dataclass
class ConnectionGuard:
    """One process's connections against its limits; given to HttpProtocol (each worker process
    gets its own copy with the protocol factory). `waiting` holds the connections whose request
    head is still incomplete, oldest first."""

    limits: ConnectionLimits
    waiting: dict[HttpProtocol, None] = field(default_factory=dict)


def _refusal(error: PlatformError) -> bytes:
    """A whole answer carrying `error`, written straight to the connection, which then closes."""
    body = error.to_bytes()
    return (
        f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a CoalescingTransport, with the guard's limits when given
    one (pass as `uvicorn.run(http=functools.partial(HttpProtocol, guard=...))`).

    A timer runs only while a request is incomplete at the end of what arrived: a request that
    comes whole in one piece (nearly all of them) costs no timer, but a connection's first
    head is timed from the connection, so that one that never sends a byte is closed too."""

    transport: CoalescingTransport  # type: ignore[assignment]

    def __init__(self, *args: Any, guard: ConnectionGuard | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self._phase: str | None = None  # HEAD or BODY while that part of a request is awaited
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        guard = self.guard
        if guard is None:
            return
        if len(self.connections) > guard.limits.max_connections:
            if guard.waiting:
                next(iter(guard.waiting))._close()
            else:
                self.transport.close()  # every connection is busy with a request: refuse this one
                return
        self._await_head()
        self._start_timer()

    def _await_head(self) -> None:
        assert self.guard is not None
        self._phase = HEAD
        self._head_bytes = 0
        self.guard.waiting[self] = None

    def _start_timer(self) -> None:
        assert self.guard is not None
        limits = self.guard.limits
        if self._phase == HEAD:
            self._timer = self.loop.call_later(
                limits.header_timeout, self._refuse, RequestTimeout("Request headers not received in time")
            )
        else:
            self._timer = self.loop.call_later(
                limits.body_timeout, self._refuse, RequestTimeout("Request body not received in time")
            )

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _end_phase(self) -> None:
        self._stop_timer()
        self._phase = None
        if self.guard is not None:
            self.guard.waiting.pop(self, None)

    def _close(self) -> None:
        self._end_phase()
        self.transport.close()

    def _refuse(self, error: PlatformError) -> None:
        """Answer with `error` (unless an answer has begun) and close the connection."""
        phase = self._phase
        self._end_phase()
        if self.transport.is_closing():
            return
        # A connection that never sent a byte (a browser's preconnect) is closed without a word;
        # on a kept-alive one, a head is awaited only once its first byte came.
        if phase == HEAD:
            answer = bool(self._head_bytes) or self.cycle is not None
        else:
            answer = self.cycle is None or not self.cycle.response_started
        if answer:
            self.transport.write(_refusal(error))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # not after a refusal of ours stopped the parser
            super().send_400_response(msg)

    def data_received(self, data: bytes) -> None:
        guard = self.guard
        if guard is None:
            super().data_received(data)
            return
        if self._phase == HEAD:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._phase == HEAD and self._head_bytes > guard.limits.max_head_bytes:
            self._refuse(HeadersTooLarge(f"Request headers exceed {guard.limits.max_head_bytes} bytes"))
        elif self._phase is not None and self._timer is None and not self.transport.is_closing():
            self._start_timer()  # the request is incomplete: from now on it is timed

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.guard is not None and self._phase is None:
            self._await_head()  # a further request on a kept-alive connection

    def on_headers_complete(self) -> None:
        guard = self.guard
        if guard is None:
            super().on_headers_complete()
            return
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > guard.limits.max_head_bytes:
            self._refuse(HeadersTooLarge(f"Request headers exceed {guard.limits.max_head_bytes} bytes"))
            raise ConnectionAbortedError  # stops the parser: the request never reaches the app
        self._end_phase()
        self._phase = BODY
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self.guard is not None:
            self._end_phase()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_phase()
        super().connection_lost(exc)

    def eof_received(self) -> None:
        # The client stopped sending (a half-close): the transport closes itself when this
        # returns, and drops what is written later. The answer of this step goes out first.
        self.transport.flush()
        super().eof_received()


def tune_garbage_collector() -> None:
    """Once start-up is done: freeze what it made, and let the young generation grow larger.

    Freezing takes the start-up heap (the framework, the routes, the models: ~140,000 objects)
    out of the cyclic collector's sight, so a full collection walks only what came after. The
    larger young generation stops collections from promoting requests still in flight: with
    64 in flight, their live objects alone passed the default 700, every few requests set off a
    collection, and the survivors brought on a full one (80 ms with the heap unfrozen) every
    0.6 s. Measured at c64 on SQLite: p99 87 -> 11 ms, 8,300 -> 10,800 requests/s.
    Objects are still freed by reference counting as before; only the collector's passes change.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
