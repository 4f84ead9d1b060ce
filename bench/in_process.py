"""The metered path's CPU without the HTTP server: the platform's ASGI application called
directly, on SQLite, with the simulator as its upstream in a process of its own.

    python bench/in_process.py [--requests 20000] [--concurrency 16] [--tools-rounds N]

Prints, for non-streaming and streaming (20 chunks) chat, the CPU time of this process per
request: auth, reservation, forwarding through the upstream client, relay, settlement, usage
record and metrics, without uvicorn and without the client's socket. With `--tools-rounds N` it
compares instead the chat request with and without five tools (bench/cpu.py's `tools5`, answered
with a call), alternating N rounds of each, and prints the medians and their ratio. Set against the suite's
figures it tells what the server and the client connection cost. This process runs on core 0,
the simulator on core 1, as in bench/run.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from run import BODY, CHAT, STREAM_BODY, platform_env  # noqa: E402
from support import base_env, free_port, fund, wait_http  # noqa: E402

ACCOUNTS = 64


class Client:
    """Calls the ASGI application as a server would, one complete request body per call."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state  # the lifespan's state, copied into each request's scope as servers do

    async def call(self, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
        delivered = False
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never leaves
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": self.state.copy(),
        }
        await self.app(scope, receive, send)
        return sent


async def lifespan(app: Any, startup: bool, queue: asyncio.Queue[dict[str, Any]], done: asyncio.Queue[Any]) -> None:
    await queue.put({"type": f"lifespan.{'startup' if startup else 'shutdown'}"})
    message = await done.get()
    assert message["type"].endswith(".complete"), message


async def drive(
    client: Client, keys: list[str], body: bytes, requests: int, concurrency: int, path: str = CHAT
) -> None:
    started = 0

    async def worker() -> None:
        nonlocal started
        while started < requests:
            started += 1
            headers = [(b"authorization", f"Bearer {keys[started % len(keys)]}".encode())]
            sent = await client.call(path, body, headers)
            assert sent[0]["status"] == 200, sent

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def timed(
    client: Client, keys: list[str], body: bytes, requests: int, concurrency: int, path: str = CHAT
) -> tuple[float, float]:
    """(requests/s, µs of CPU per request) over one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    await drive(client, keys, body, requests, concurrency, path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return requests / wall, cpu / requests * 1e6


async def compare(
    client: Client, keys: list[str], requests: int, concurrency: int, rounds: int, names: list[str]
) -> None:
    """bench/cpu.py's scenarios against the first, alternated (A B C, C B A, ...), medians."""
    from cpu import SCENARIOS

    for name in names:
        await drive(client, keys, SCENARIOS[name][1], requests // 4, concurrency, SCENARIOS[name][0])  # warm-up
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            path, body = SCENARIOS[name]
            rate, used = await timed(client, keys, body, requests, concurrency, path)
            cpu[name].append(used)
            print(f"{name:<16} c{concurrency}: {rate:7.0f} requests/s, {used:6.1f} us of CPU per request", flush=True)
    first = statistics.median(cpu[names[0]])
    print(
        "medians: "
        + ", ".join(
            f"{name} {statistics.median(cpu[name]):.1f} us ({statistics.median(cpu[name]) / first:.3f})"
            for name in names
        )
    )


async def start_platform(database_url: str) -> tuple[Client, list[str], Callable[[], Awaitable[None]]]:
    """The application, its lifespan started, with ACCOUNTS funded accounts: a client, their keys,
    and the coroutine function that stops it."""
    from cocoon_platform.app import create_app

    app = create_app()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    done: asyncio.Queue[Any] = asyncio.Queue()
    state: dict[str, Any] = {}
    running = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, queue.get, done.put)
    )
    await lifespan(app, True, queue, done)
    client = Client(app, state)
    keys = []
    for _ in range(ACCOUNTS):
        sent = await client.call("/api/register", b"", [])
        keys.append(orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))["api_key"])
    for key in keys:
        await asyncio.to_thread(fund, database_url, key, 10_000 * 10**9)

    async def stop() -> None:
        await lifespan(app, False, queue, done)
        await running

    return client, keys, stop


async def measure(
    database_url: str, requests: int, concurrency: int, rounds: int = 0, names: tuple[str, ...] = ()
) -> None:
    client, keys, stop = await start_platform(database_url)
    if rounds:
        await compare(client, keys, requests, concurrency, rounds, list(names))
    for label, body in () if rounds else (("chat", BODY), ("stream 20 chunks", STREAM_BODY)):
        await drive(client, keys, body, requests // 4, concurrency)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        await drive(client, keys, body, requests, concurrency)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"{label:<17} c{concurrency}: {requests / wall:7.0f} requests/s, {cpu / requests * 1e6:6.1f} us of CPU "
            f"per request",
            flush=True,
        )
    await stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tools-rounds", type=int, default=0, help="compare chat with and without five tools")
    parser.add_argument(
        "--compare",
        default="",
        help="bench/cpu.py scenarios to compare with the first, "
        "comma-separated (e.g. stream,responses_stream,messages_stream)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds of --compare")
    args = parser.parse_args()
    names = tuple(args.compare.split(",")) if args.compare else ("chat", "tools5") if args.tools_rounds else ()
    rounds = args.tools_rounds or (args.rounds if names else 0)
    with tempfile.TemporaryDirectory() as directory:
        port = free_port()
        simulator = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, "-m", "cocoon_simulator", "--port", str(port)],
            env=base_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/v1/models", proc=simulator)
            database_url = f"sqlite+aiosqlite:///{directory}/bench.db"
            env = platform_env(database_url, f"http://127.0.0.1:{port}", 8000)
            subprocess.run(
                [str(Path(sys.executable).parent / "cocoon-platform"), "migrate"],
                env=env,
                check=True,
                capture_output=True,
            )
            os.environ.update(env)
            os.sched_setaffinity(0, {0})
            uvloop.run(measure(database_url, args.requests, args.concurrency, rounds, names))
        finally:
            simulator.terminate()
            simulator.wait(10)


if __name__ == "__main__":
    main()
