"""The server protocol's transport: what one event-loop step writes leaves as one write."""

from __future__ import annotations

import asyncio
from typing import Any

from cocoon_platform.server import CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_step_leave_together_at_its_end() -> None:
    asyncio.run(writes_of_one_step())


def test_close_sends_what_waits_first_and_nothing_goes_out_after() -> None:
    asyncio.run(close_sends_what_waits())


async def writes_of_one_step() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    assert inner.calls == []
    await asyncio.sleep(0)
    assert inner.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody")]
    transport.write(b"more")
    await asyncio.sleep(0)
    assert inner.calls[-1] == ("write", b"more")


async def close_sends_what_waits() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    assert inner.calls == [("write", b"last words"), ("close", None)]
    transport.write(b"too late")
    await asyncio.sleep(0)
    assert inner.calls == [("write", b"last words"), ("close", None)]
    assert transport.is_closing()
    assert transport.get_extra_info("peername") == "info:peername"
