"""A load driver on raw keep-alive connections, for when wrk is not installed and for streams.

Raw protocol code instead of an HTTP client library: on one core a client library saturates
well below what it must measure (aiohttp tops out near 5,000 requests/s here).
It frames answers by content-length or chunked encoding, records each answer's latency and,
for streams, the time to the first `data:` event.

With a `rate`, requests are paced: the connections still keep at most one request each in
flight, but no request starts before its turn in an even schedule of `rate` a second. Two
scenarios compared at one rate load the server alike; without it each runs as fast as the
slowest process allows, which need not be the server (the driver shares a core with the
simulator, and bigger answers cost it more), and a server's CPU per request depends on its load
(batched commits, fewer wake-ups when busy).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import cast

_CONTENT_LENGTH = re.compile(rb"content-length: *(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"transfer-encoding: *chunked", re.IGNORECASE)
_CHUNKED_END = b"\r\n0\r\n\r\n"


def http_request(host: str, path: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n{extra}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Tally:
    running: bool = True
    recording: bool = False
    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)
    answers: int = 0
    failures: int = 0
    interval: float = 0.0  # seconds between request starts when paced (0: not paced)
    next_start: float = 0.0  # the paced schedule's next turn, by time.perf_counter()


class _Connection(asyncio.Protocol):
    def __init__(self, requests: list[bytes], offset: int, tally: Tally) -> None:
        self._requests = requests
        self._next = offset
        self._tally = tally
        self._buffer = b""
        self._sent = 0.0
        self._first: float | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        request = self._requests[self._next % len(self._requests)]
        self._next += 1
        self._sent = time.perf_counter()
        self._first = None
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self._first is None and b"data:" in data:
            self._first = time.perf_counter()
        self._buffer += data
        while (head_end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:head_end]
            match = _CONTENT_LENGTH.search(head)
            if match is not None:
                end = head_end + 4 + int(match.group(1))
                if len(self._buffer) < end:
                    return
            elif _CHUNKED.search(head):
                found = self._buffer.find(_CHUNKED_END, head_end)
                if found < 0:
                    return
                end = found + len(_CHUNKED_END)
            else:
                raise RuntimeError("answer without content-length or chunked encoding")
            self._done(head.startswith(b"HTTP/1.1 200"))
            self._buffer = self._buffer[end:]

    def _done(self, ok: bool) -> None:
        now = time.perf_counter()
        tally = self._tally
        if tally.recording:
            tally.answers += 1
            if ok:
                tally.latencies.append(now - self._sent)
                if self._first is not None:
                    tally.first_bytes.append(self._first - self._sent)
            else:
                tally.failures += 1
        if tally.running:
            if tally.interval:
                turn = max(tally.next_start, now)
                tally.next_start = turn + tally.interval
                asyncio.get_running_loop().call_later(turn - now, self._send_if_running)
            else:
                self._send()

    def _send_if_running(self) -> None:
        if self._tally.running and self._transport is not None and not self._transport.is_closing():
            self._send()


@dataclass(frozen=True)
class Result:
    rate: float
    answers: int
    failures: int
    p50_ms: float
    p99_ms: float
    first_byte_p50_ms: float | None


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")


async def drive(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    seconds: float,
    warmup: float = 1.0,
    rate: float | None = None,
) -> Result:
    """Keep `connections` requests in flight for `seconds` (after a warm-up), or with a `rate`
    at most that many a second; each connection cycles through `requests` from its own offset."""
    loop = asyncio.get_running_loop()
    tally = Tally(interval=1.0 / rate if rate else 0.0, next_start=time.perf_counter())
    transports = [
        (await loop.create_connection(lambda i=i: _Connection(requests, i, tally), host, port))[0]  # type: ignore[misc]
        for i in range(connections)
    ]
    await asyncio.sleep(warmup)
    tally.recording = True
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    tally.recording = False
    elapsed = time.perf_counter() - began
    tally.running = False
    for transport in transports:
        transport.close()
    return Result(
        rate=(tally.answers - tally.failures) / elapsed,
        answers=tally.answers,
        failures=tally.failures,
        p50_ms=_percentile(tally.latencies, 0.50),
        p99_ms=_percentile(tally.latencies, 0.99),
        first_byte_p50_ms=_percentile(tally.first_bytes, 0.50) if tally.first_bytes else None,
    )
