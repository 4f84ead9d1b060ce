"""The server protocol: what one event-loop step writes leaves as one write, and nothing is lost."""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.server import ServerState

from cocoon_platform.server import GC_YOUNG_THRESHOLD, CoalescingTransport, HttpProtocol, tune_garbage_collector


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def write_eof(self) -> None:
        self.calls.append(("write_eof", None))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def wrapped() -> tuple[CoalescingTransport, RecordingTransport]:
    inner = RecordingTransport()
    return CoalescingTransport(inner, asyncio.get_running_loop()), inner  # type: ignore[arg-type]


def test_writes_of_one_step_leave_together_at_its_end() -> None:
    async def scenario() -> None:
        transport, inner = wrapped()
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.writelines([b"bo", b"dy"])
        assert inner.calls == []
        assert transport.get_write_buffer_size() == 23 + 7
        await asyncio.sleep(0)
        assert inner.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
        transport.write(b"more")
        await asyncio.sleep(0)
        assert inner.calls[-1] == ("write", b"more")

    asyncio.run(scenario())


def test_a_large_step_goes_out_at_once_so_flow_control_still_sees_it() -> None:
    async def scenario() -> None:
        transport, inner = wrapped()
        transport.write(b"x" * 1000)
        transport.write(b"y" * HIGH_WATER_LIMIT)
        assert inner.calls == [("write", b"x" * 1000 + b"y" * HIGH_WATER_LIMIT)]
        assert transport.get_write_buffer_size() == 7
        await asyncio.sleep(0)
        assert len(inner.calls) == 1

    asyncio.run(scenario())


def test_ending_the_output_sends_what_waits_first_and_nothing_after() -> None:
    async def scenario() -> None:
        transport, inner = wrapped()
        transport.write(b"last words")
        transport.write_eof()
        assert inner.calls == [("write", b"last words"), ("write_eof", None)]
        transport.write(b"closing")
        transport.close()
        transport.write(b"too late")
        await asyncio.sleep(0)
        assert inner.calls[2:] == [("write", b"closing"), ("close", None)]
        assert transport.is_closing()
        assert transport.get_extra_info("peername") == "info:peername"

        aborted, inner = wrapped()
        aborted.write(b"dropped")
        aborted.abort()
        await asyncio.sleep(0)
        assert inner.calls == [("abort", None)]

    asyncio.run(scenario())


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


async def exchange(half_close: bool) -> bytes:
    """One request over a socket pair, served by HttpProtocol; everything the client got."""
    loop = asyncio.get_running_loop()
    config = Config(app, lifespan="off", log_level="critical")
    config.load()
    state = ServerState()
    server_side, client = socket.socketpair()
    server_side.setblocking(False)
    await loop.connect_accepted_socket(
        lambda: HttpProtocol(config=config, server_state=state, app_state={}, _loop=loop), server_side
    )
    client.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    if half_close:
        client.shutdown(socket.SHUT_WR)
    client.setblocking(False)
    received = b""
    try:
        for _ in range(100):
            await asyncio.sleep(0.005)
            try:
                data = client.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                break
            received += data
            if received.endswith(b"ok"):
                break
    finally:
        client.close()
        for connection in list(state.connections):
            connection.transport.close()
        await asyncio.sleep(0)
    return received


def test_the_real_protocol_answers_in_one_piece_and_also_after_a_half_close() -> None:
    for half_close in (False, True):
        received = asyncio.run(exchange(half_close))
        assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.endswith(b"\r\n\r\nok"), (half_close, received)


def test_the_garbage_collector_is_set_for_serving() -> None:
    threshold = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
        assert gc.get_freeze_count() > 10_000  # the interpreter, pytest and the project's modules
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
