"""Load driver for the simulator: keep-alive connections replaying one request, raw asyncio.

Raw protocol code instead of an HTTP client library, because a client library on one core
saturates well below the simulator (aiohttp tops out near 5k requests/s).
Usage: taskset -c 1 python -m cocoon_platform.simulator.cocoon_bench --port 10000
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import re
import time
from typing import cast

_CONTENT_LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)
_BODIES: dict[str, tuple[bytes, bytes]] = {
    "chat": (
        b"/v1/chat/completions",
        b'{"model":"Qwen/Qwen3-32B","max_tokens":64,"messages":['
        b'{"role":"system","content":"You are a helpful assistant."},'
        b'{"role":"user","content":"Write a haiku about the sea and the wind please."}]}',
    ),
    "completions": (
        b"/v1/completions",
        b'{"model":"ByteDance-Seed/Seed-X-PPO-7B","max_tokens":64,'
        b'"prompt":"Translate the following English sentence into Chinese: The sea is calm. <zh>"}',
    ),
    "models": (b"/v1/models", b""),
}


class _Tally:
    """Answers counted across all connections."""

    def __init__(self) -> None:
        self.answers = 0
        self.failures = 0  # status other than 200
        self.running = True


class _Connection(asyncio.Protocol):
    """Sends the request, reads one answer (content-length framed), repeats."""

    def __init__(self, request: bytes, tally: _Tally) -> None:
        self._request = request
        self._tally = tally
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (head_end := self._buffer.find(b"\r\n\r\n")) >= 0:
            match = _CONTENT_LENGTH.search(self._buffer, 0, head_end)
            if match is None:
                raise RuntimeError("the bench needs content-length framed answers")
            end = head_end + 4 + int(match.group(1))
            if len(self._buffer) < end:
                return
            if not self._buffer.startswith(b"HTTP/1.1 200"):
                self._tally.failures += 1
            self._tally.answers += 1
            self._buffer = self._buffer[end:]
            if self._tally.running and self._transport is not None:
                self._transport.write(self._request)


async def run(host: str, port: int, kind: str, connections: int, seconds: float) -> float:
    """Requests per second over `seconds`, after a one-second warm-up."""
    path, body = _BODIES[kind]
    method = b"POST " if body else b"GET "
    request = (
        method
        + path
        + b" HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % (host.encode(), len(body))
        + body
    )
    loop = asyncio.get_running_loop()
    tally = _Tally()
    transports = [
        (await loop.create_connection(lambda: _Connection(request, tally), host, port))[0]
        for _ in range(connections)
    ]
    await asyncio.sleep(1.0)
    before, began = tally.answers, time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (tally.answers - before) / (time.perf_counter() - began)
    tally.running = False
    for transport in transports:
        transport.close()
    if tally.failures:
        raise RuntimeError(f"{tally.failures} answers were not 200")
    return rate


def main() -> None:
    """Parse flags, drive load, print the rate."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10000)
    parser.add_argument("--kind", choices=sorted(_BODIES), default="chat")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    job = run(args.host, args.port, args.kind, args.connections, args.seconds)
    if importlib.util.find_spec("uvloop"):
        import uvloop

        rate = uvloop.run(job)
    else:
        rate = asyncio.run(job)
    print(f"{args.kind}: {rate:.0f} requests/s ({args.connections} connections, {args.seconds:g} s)")


if __name__ == "__main__":
    main()
