"""The lean upstream HTTP client against scripted servers on real sockets: framing, keep-alive,
connection limits, failures and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from cocoon_platform.upstream import http as http_module
from cocoon_platform.upstream.http import ConnectFailed, ConnectionBroken, HttpPool, PoolBusy

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """A TCP server answering each request with whatever its script writes; counts connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.open_now = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                await self.script(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


def answer(body: bytes, extra: bytes = b"") -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body)
        await writer.drain()

    return script


def pool(url: str, **options: float) -> HttpPool:
    settings = {
        "max_connections": 4,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "keepalive": 3.0,
        "wait_timeout": 5.0,
        **options,
    }
    return HttpPool(url, int(settings.pop("max_connections")), **settings)


def test_requests_reuse_one_keep_alive_connection_and_send_a_proper_request() -> None:
    async def scenario() -> None:
        async with ScriptedServer(answer(b'{"ok":true}', b"Content-Type: application/json\r\n")) as server:
            client = pool(server.url + "/base/")
            for _ in range(3):
                response = await client.post("/v1/chat/completions", b'{"a":1}')
                assert response.status == 200
                assert response.header(b"content-type") == b"application/json"
                assert await response.read() == b'{"ok":true}'
            await client.close()
            assert server.connections == 1
            first = server.requests[0]
            assert first.startswith(b"POST /base/v1/chat/completions HTTP/1.1\r\n")
            assert f"Host: 127.0.0.1:{server.url.rsplit(':', 1)[1]}".encode() in first
            assert first.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')

    asyncio.run(scenario())


def test_chunked_bodies_arrive_piece_by_piece() -> None:
    async def scenario() -> None:
        go_on = asyncio.Event()

        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await go_on.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()

        async with ScriptedServer(script) as server:
            client = pool(server.url)
            response = await client.post("/v1/chat/completions", b"{}")
            assert await response.next_piece() == b"first"
            assert not response.buffered
            go_on.set()
            assert await response.next_piece() == b"second"
            assert await response.next_piece() == b""
            again = await client.post("/v1/chat/completions", b"{}")  # the connection was given back
            go_on.set()
            assert await again.read() == b"firstsecond"
            assert server.connections == 1
            await client.close()

    asyncio.run(scenario())


def test_a_body_without_length_ends_with_the_connection() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            client = pool(server.url)
            assert await (await client.post("/x", b"{}")).read() == b"all of it"
            assert await (await client.post("/x", b"{}")).read() == b"all of it"
            assert server.connections == 2
            await client.close()

    asyncio.run(scenario())


def test_no_more_connections_than_the_limit_and_every_caller_is_served() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.02)
        await answer(b"done")(reader, writer)

    async def scenario() -> None:
        async with ScriptedServer(slow) as server:
            client = pool(server.url, max_connections=2)

            async def one() -> bytes:
                return await (await client.post("/x", b"{}")).read()

            assert await asyncio.gather(*(one() for _ in range(9))) == [b"done"] * 9
            assert server.most_open <= 2
            # A caller that gives up while waiting for a connection does not take a slot with it.
            waiting = asyncio.create_task(one())
            blockers = [asyncio.create_task(one()) for _ in range(2)]
            await asyncio.sleep(0)
            waiting.cancel()
            await asyncio.gather(*blockers)
            assert await asyncio.wait_for(asyncio.gather(one(), one()), 2) == [b"done", b"done"]
            await client.close()

    asyncio.run(scenario())


def held_answers() -> tuple[Script, asyncio.Event]:
    """A script whose answers send their head and first piece, then wait for the event to end."""
    go_on = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return script, go_on


def test_a_caller_waiting_past_the_bound_is_refused_and_takes_no_slot() -> None:
    async def scenario() -> None:
        script, go_on = held_answers()
        async with ScriptedServer(script) as server:
            waits: list[float] = []
            client = HttpPool(
                server.url,
                1,
                connect_timeout=1.0,
                read_timeout=2.0,
                keepalive=3.0,
                wait_timeout=0.05,
                on_wait=waits.append,
            )
            held = await client.post("/x", b"{}")
            assert (client.in_use, client.waiting) == (1, 0)
            with pytest.raises(PoolBusy):
                await client.post("/x", b"{}")
            assert len(waits) == 1  # the refused caller's wait was reported
            assert (client.in_use, client.waiting) == (1, 0)
            assert not client._waiters  # nothing left queued for the connection to go to
            assert server.requests and len(server.requests) == 1  # the refused request was never sent
            go_on.set()
            assert await held.read() == b"first"
            assert client.in_use == 0
            # The slot is whole: the next caller gets the connection back, at once.
            assert await (await client.post("/x", b"{}")).read() == b"first"
            assert server.connections == 1
            await client.close()

    asyncio.run(scenario())


def test_a_caller_served_within_the_bound_proceeds() -> None:
    async def scenario() -> None:
        script, go_on = held_answers()
        async with ScriptedServer(script) as server:
            waits: list[float] = []
            client = HttpPool(
                server.url,
                1,
                connect_timeout=1.0,
                read_timeout=2.0,
                keepalive=3.0,
                wait_timeout=30.0,
                on_wait=waits.append,
            )
            held = await client.post("/x", b"{}")
            second = asyncio.create_task(client.post("/x", b"{}"))
            while client.waiting == 0:
                await asyncio.sleep(0)
            assert (client.in_use, client.waiting) == (1, 1)
            go_on.set()
            assert await held.read() == b"first"
            assert await (await second).read() == b"first"
            assert (client.in_use, client.waiting, len(waits)) == (0, 0, 1)
            assert server.connections == 1
            await client.close()

    asyncio.run(scenario())


def test_refused_connection_is_connect_failed() -> None:
    async def scenario() -> None:
        async with ScriptedServer(answer(b"")) as server:
            url = server.url
        await asyncio.sleep(0.05)  # the port is closed now
        with pytest.raises(ConnectFailed):
            await pool(url).post("/x", b"{}")

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",  # closed mid-body
        b"garbage that is not http\r\n\r\n",
    ],
)
def test_a_broken_answer_is_connection_broken(reply: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            client = pool(server.url)
            with pytest.raises(ConnectionBroken):
                await (await client.post("/x", b"{}")).read()
            await client.close()

    asyncio.run(scenario())


def test_an_upstream_that_goes_quiet_times_out_and_is_not_reused() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            client = pool(server.url, read_timeout=0.2)
            response = await client.post("/x", b"{}")
            assert await response.next_piece() == b"abc"
            with pytest.raises(TimeoutError):
                await response.next_piece()
            response.close()
            await client.close()

    asyncio.run(scenario())


def test_an_idle_connection_past_its_keepalive_is_not_reused() -> None:
    async def scenario() -> None:
        async with ScriptedServer(answer(b"x")) as server:
            client = pool(server.url, keepalive=0.05)
            await (await client.post("/x", b"{}")).read()
            await asyncio.sleep(0.1)
            await (await client.post("/x", b"{}")).read()
            assert server.connections == 2
            await client.close()

    asyncio.run(scenario())


def test_a_slow_reader_pauses_the_upstream_and_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_module, "BUFFER_HIGH", 64 * 1024)
    piece = b"z" * 16 * 1024
    count = 200

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(count):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            client = pool(server.url)
            response = await client.post("/x", b"{}")
            received = 0
            largest = 0
            while data := await response.next_piece():
                received += len(data)
                largest = max(largest, len(data))
                await asyncio.sleep(0.001)
            assert received == len(piece) * count
            # What waited in memory stayed near the high mark, not the whole body.
            assert largest < 64 * 1024 + 256 * 1024
            await client.close()

    asyncio.run(scenario())


def test_a_large_answer_read_whole_needs_no_reader_and_leaves_the_connection_reusable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_module, "BUFFER_HIGH", 64 * 1024)
    body = b"y" * (1024 * 1024)

    async def scenario() -> None:
        async with ScriptedServer(answer(body)) as server:
            client = pool(server.url, read_timeout=1.0)
            for _ in range(2):
                assert await (await client.post("/x", b"{}")).read() == body
            assert server.connections == 1
            await client.close()

    asyncio.run(scenario())


def test_an_error_answer_that_stalls_frees_its_connection_slot() -> None:
    calls = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            writer.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\npart")
            await writer.drain()
            await asyncio.sleep(5)
        else:
            await answer(b"fine")(reader, writer)

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            client = pool(server.url, max_connections=1, read_timeout=0.2)
            response = await client.post("/x", b"{}")
            assert response.status == 500
            with pytest.raises(TimeoutError):
                await response.read()
            assert await asyncio.wait_for((await client.post("/x", b"{}")).read(), 2) == b"fine"
            await client.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500 Late\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    ],
)
def test_an_answer_out_of_step_is_never_reused(reply: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(reply)
        await writer.drain()

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            client = pool(server.url)
            for _ in range(2):
                try:
                    response = await client.post("/x", b"{}")
                    assert (response.status, await response.read()) == (200, b"ok")
                    assert response.headers == [(b"content-length", b"2")]
                except ConnectionBroken:
                    assert reply.startswith(b"HTTP/1.1 101")
            assert server.connections == 2
            await client.close()

    asyncio.run(scenario())
