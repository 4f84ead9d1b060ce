"""A lean HTTP/1.1 client for the metered hot path: pooled keep-alive connections to one upstream.

Measured on one core, aiohttp's client spent more time per request than the rest of the proxy
path together (request and response objects, header multidicts, timers, tracing hooks). This
client does only what forwarding needs: one write per request, httptools (llhttp) to parse the
answer, body pieces handed over as they arrive, and a timer only while a read actually waits.

A caller finding every connection in use waits its turn, but only for `wait_timeout` seconds:
past it the caller gets PoolBusy (nothing was sent), so no request waits unseen in a queue
without bound while its client sees nothing.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import httptools

# A slow reader makes the upstream connection stop reading past this much buffered body (and
# start again below the low mark), so a stream relayed to a slow client can't fill memory.
BUFFER_HIGH = 1024 * 1024
BUFFER_LOW = 256 * 1024


class ConnectFailed(Exception):
    """No connection could be made: nothing was sent, so another upstream may be tried."""


class PoolBusy(Exception):
    """Every connection stayed in use for the whole wait: nothing was sent."""


class ConnectionBroken(Exception):
    """The connection failed after the request was (perhaps) sent, or the answer was not HTTP."""


class UpstreamResponse:
    """The answer to one request: status and headers once the head has arrived, then the body."""

    __slots__ = (
        "status",
        "headers",
        "_connection",
        "_pieces",
        "_size",
        "_complete",
        "_error",
        "_waiter",
        "_read_timeout",
        "_keep_alive",
        "_paused",
        "_done",
        "_whole",
    )

    def __init__(self, connection: _Connection, read_timeout: float) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self._connection = connection
        self._pieces: deque[bytes] = deque()
        self._size = 0
        self._complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout = read_timeout
        self._keep_alive = False
        self._paused = False
        self._done = False  # the connection went back to the pool or was closed
        self._whole = False  # read() keeps the whole body: no flow control then

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (name in lower case)."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def buffered(self) -> bool:
        """Whether the next `next_piece()` can answer without waiting for the network."""
        return bool(self._pieces) or self._complete or self._error is not None

    async def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        self._whole = True
        self._resume()
        await self._until(lambda: self._complete)
        body = b"".join(self._pieces)
        self._pieces.clear()
        self.release()
        return body

    async def next_piece(self) -> bytes:
        """All the body that has arrived since the last call, waiting for some if none has;
        b"" once the body is complete (the connection then goes back to the pool)."""
        while True:
            if self._pieces:
                piece = self._pieces.popleft() if len(self._pieces) == 1 else b"".join(self._pieces)
                self._pieces.clear()
                self._size = 0
                self._resume()
                return piece
            if self._complete:
                self.release()
                return b""
            if self._error is not None:
                self.close()
                raise self._error
            try:
                await self._wait()
            except BaseException:
                self.close()
                raise

    def release(self) -> None:
        """Give the connection back for reuse if the answer is complete, else close it."""
        if not self._done:
            self._done = True
            self._connection.finished(
                reusable=self._complete and self._keep_alive and self._error is None and not self._paused
            )

    def close(self) -> None:
        """Drop the connection (the rest of the answer is not wanted); a read waiting on it fails."""
        self._fail(ConnectionBroken("the answer was abandoned"))
        if not self._done:
            self._done = True
            self._connection.finished(reusable=False)

    # --- fed by the connection ----------------------------------------------------------------

    async def _until(self, arrived: Callable[[], bool]) -> None:
        """Wait until `arrived()`; on a failure (or cancellation) the connection is dropped."""
        try:
            while not arrived():
                if self._error is not None:
                    raise self._error
                await self._wait()
        except BaseException:
            self.close()
            raise

    async def _wait(self) -> None:
        loop = self._connection.loop
        waiter = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(self._read_timeout, _time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _head(self, status: int, keep_alive: bool) -> None:
        self.status = status
        self._keep_alive = keep_alive
        self._wake()

    def _feed(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._size += len(piece)
        if self._size > BUFFER_HIGH and not self._paused and not self._whole:
            self._paused = True
            self._connection.pause_reading()
        self._wake()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._connection.resume_reading()

    def _finish(self) -> None:
        if self._error is None:
            self._complete = True
            self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._complete and self._error is None:
            self._error = error
            self._wake()


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("the upstream sent nothing for too long"))


def _give_up(waiter: asyncio.Future[_Connection | None]) -> None:
    if not waiter.done():
        waiter.set_exception(PoolBusy("no upstream connection came free in time"))


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses whatever arrives into the current response."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.lost = False
        self.idle_since = 0.0
        self._body_until_close = False
        self._surplus = False  # bytes after the complete answer: never reuse this connection

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self._drop()  # nothing was asked: an idle connection must stay silent
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.response._fail(ConnectionBroken(f"malformed answer from the upstream: {exc!r}"))
            self._drop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        response = self.response
        if response is not None:
            if self._body_until_close and response.status and exc is None:
                response._finish()  # no length given: the body ends with the connection
            else:
                response._fail(ConnectionBroken("the upstream closed the connection"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        assert response is not None
        if not (self._surplus or response._complete):
            response.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        if response._complete or self._surplus:
            # A second answer to one request: the connection is out of step; keep the first.
            self._surplus = True
            response._keep_alive = False
            return
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            response.headers.clear()
            return  # an interim answer: the real one follows
        names = {name for name, _ in response.headers}
        self._body_until_close = b"content-length" not in names and b"transfer-encoding" not in names
        response._head(status, self.parser.should_keep_alive() and not self._body_until_close)

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        if not self._surplus:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None and response.status and not self._surplus:
            response._finish()

    # used by the response and the pool

    def pause_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    @property
    def usable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def send(self, response: UpstreamResponse, request: bytes) -> None:
        """Write the request; ConnectFailed (nothing was sent) if the connection just went away."""
        if not self.usable:
            raise ConnectFailed("the pooled connection closed before the request was sent")
        assert self.transport is not None
        self.response = response
        self._body_until_close = False
        self.transport.write(request)

    def finished(self, reusable: bool) -> None:
        self.response = None
        if reusable and self.usable and not self._surplus:
            self.pool.put_back(self)
        else:
            self._drop()
            self.pool.forget(self)

    def _drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class HttpPool:
    """Keep-alive connections to one upstream (`http://` or `https://` base URL), at most
    `max_connections` at once; callers wait their turn beyond that, for at most `wait_timeout`
    seconds. `on_wait` is told how long each caller that had to wait waited (metrics)."""

    def __init__(
        self,
        base_url: str,
        max_connections: int,
        connect_timeout: float,
        read_timeout: float,
        keepalive: float,
        wait_timeout: float,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self.base_path = parts.path.rstrip("/")
        default_port = (parts.scheme == "https" and self.port == 443) or (parts.scheme == "http" and self.port == 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self.wait_timeout = wait_timeout
        self.on_wait = on_wait
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._waiting = 0  # callers waiting for a connection now
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def in_use(self) -> int:
        """Connections carrying a request or being opened for one (the idle ones are in `_open` too)."""
        return len(self._open) + self._opening - len(self._idle)

    @property
    def waiting(self) -> int:
        """Callers waiting for a connection to come free."""
        return self._waiting

    def head_bytes(self, path: str, content_type: str, length: int) -> bytes:
        return (
            f"POST {self.base_path}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        ).encode("latin-1")

    async def post(
        self, path: str, body: bytes, content_type: str = "application/json", read_timeout: float | None = None
    ) -> UpstreamResponse:
        """Send a POST and wait for the answer's head. Raises ConnectFailed when no connection
        could be made and PoolBusy when none came free in time (nothing was sent either way),
        ConnectionBroken or TimeoutError after that."""
        connection = await self._acquire()
        response = UpstreamResponse(connection, read_timeout or self.read_timeout)
        try:
            connection.send(response, self.head_bytes(path, content_type, len(body)) + body)
        except BaseException:
            response.close()
            raise
        await response._until(lambda: response.status != 0)
        return response

    async def close(self) -> None:
        self._closed = True
        for connection in [*self._open]:
            connection._drop()
        self._idle.clear()
        self._open.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the client is closing"))

    # --- connections --------------------------------------------------------------------------

    async def _acquire(self) -> _Connection:
        began: float | None = None  # when this caller first had to wait: one bound for all its waits
        while True:
            if self._closed:
                raise ConnectFailed("the client is closing")
            now = time.monotonic()
            while self._idle:
                connection = self._idle.pop()
                if connection.usable and now - connection.idle_since < self.keepalive:
                    return connection
                connection._drop()  # the server may close it at any moment now: don't send on it
                self.forget(connection)
            if len(self._open) + self._opening < self.max_connections:
                self._opening += 1
                return await self._connect()
            if began is None:
                began = now
            left = self.wait_timeout - (now - began)
            if left <= 0:
                raise PoolBusy("no upstream connection came free in time")
            waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
            self._waiters.append(waiter)
            self._waiting += 1
            timer = self.loop.call_later(left, _give_up, waiter)
            try:
                handed = await waiter
            except PoolBusy:
                try:
                    self._waiters.remove(waiter)  # don't leave it queued until a connection comes free
                except ValueError:
                    pass  # a connection came free meanwhile and passed it by
                raise
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    given = waiter.result()
                    if given is None:
                        self._opening -= 1  # the slot kept for this caller goes to the next one
                        self._wake_one()
                    else:
                        self.put_back(given)
                raise
            finally:
                timer.cancel()
                self._waiting -= 1
                if self.on_wait is not None:
                    self.on_wait(time.monotonic() - began)
            if handed is None:
                return await self._connect()  # a slot was kept for this caller
            if handed.usable:
                return handed
            handed._drop()  # it closed while being handed over: start again
            self.forget(handed)

    async def _connect(self) -> _Connection:
        """Open a connection in a slot already counted in `_opening`."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                )
        except BaseException as exc:
            self._opening -= 1
            self._wake_one()  # the slot is free again
            if isinstance(exc, OSError | TimeoutError):
                raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
            raise
        self._opening -= 1
        self._open.add(connection)
        return connection

    def put_back(self, connection: _Connection) -> None:
        if self._closed or not connection.usable:
            connection._drop()
            self.forget(connection)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = time.monotonic()
        self._idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        """A connection closed: its slot may go to a waiting caller."""
        if connection in self._open:
            self._open.discard(connection)
            self._wake_one()

    def _wake_one(self) -> None:
        """Give a free slot to the first waiting caller, kept for it in `_opening`."""
        if self._closed or len(self._open) + self._opening >= self.max_connections:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._opening += 1
                waiter.set_result(None)
                return
