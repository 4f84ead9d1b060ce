"""Streams at model speed: how many concurrent streams one platform core relays while keeping
the network's pace, beside the bare pass-through and the simulator alone.

    python bench/streams.py [--streams 250,500,1000] [--seconds 15] [--tokens 60] [--tpt-ms 33.3]

The simulator streams `--tokens` chunks per answer at `--tpt-ms` each (30 tokens/s by default),
on core 1 with the load driver; the platform (SQLite) or the pass-through runs alone on core 0.
Each connection streams one answer after another. For every event the driver records when it
arrived; a stream's *gaps* are the times between its consecutive events, and the figures that
matter are what a target adds to the upstream's own (the simulator measured alone at the same
load): the gap's p50/p99 and the first event's p50/p99.

A load counts as held when (#21, ruling 8): the added p99 gap is at most 10 ms, the first event's
p99 is within 50 ms of the upstream's own, streams complete at the upstream's rate (at least 95%
of the simulator-alone completions), and every stream the platform answered is billed exactly
once (usage records = answers sent; the books reconcile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from driver import http_request  # noqa: E402
from run import (  # noqa: E402
    BIN,
    LOAD_CORE,
    PLATFORM_CORE,
    answers_sent,
    machine_stalls,
    pinned,
    platform_env,
    register_accounts,
    start,
    stop,
    verify,
)
from support import base_env, db_rows, free_port  # noqa: E402

CHAT = "/v1/chat/completions"
ACCOUNTS = 64
_END = b"\r\n0\r\n\r\n"


def stream_body(tokens: int) -> bytes:
    return json.dumps(
        {
            "model": "Qwen/Qwen3-32B",
            "max_tokens": tokens + 8,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"[[sim:tokens={tokens}]] Tell me about the sea."}],
        }
    ).encode()


@dataclass
class Tally:
    recording: bool = False
    running: bool = True
    gaps: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    completed: int = 0
    failures: int = 0


class _StreamConnection(asyncio.Protocol):
    """One keep-alive connection streaming answers back to back, timing each event."""

    def __init__(self, requests: list[bytes], offset: int, tally: Tally) -> None:
        self._requests, self._next, self._tally = requests, offset, tally
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._sent = self._last = 0.0
        self._events = 0
        self._ok = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._buffer, self._events, self._ok = b"", 0, True
        self._sent = time.perf_counter()
        self._transport.write(self._requests[self._next % len(self._requests)])
        self._next += 1

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self._buffer and self._events == 0 and not data.startswith(b"HTTP/1.1 200"):
            self._ok = False
        events = data.count(b"data: ")
        if events and self._tally.recording:
            if self._events == 0:
                self._tally.firsts.append(now - self._sent)
            else:
                self._tally.gaps.append(now - self._last)
            # Several events in one read arrived together: the later ones waited for nothing.
            self._tally.gaps.extend([0.0] * (events - 1))
        if events:
            self._events += events
            self._last = now
        self._buffer = (self._buffer + data)[-16:]
        if self._buffer.endswith(_END):
            if self._tally.recording:
                if self._ok:
                    self._tally.completed += 1
                else:
                    self._tally.failures += 1
            if self._tally.running:
                self._send()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 2) if ordered else float("nan")


async def drive_streams(
    port: int, requests: list[bytes], streams: int, seconds: float, warmup: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tally = Tally()
    transports = []
    for i in range(streams):
        transport, _ = await loop.create_connection(
            lambda i=i: _StreamConnection(requests, i, tally),  # type: ignore[misc]
            "127.0.0.1",
            port,
        )
        transports.append(transport)
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # opened in waves, so the start is not one burst
    await asyncio.sleep(warmup)
    tally.recording = True
    await asyncio.sleep(seconds)
    tally.recording = False
    tally.running = False
    for transport in transports:
        transport.close()
    return {
        "completed_per_s": round(tally.completed / seconds, 1),
        "failures": tally.failures,
        "first_p50_ms": _percentile(tally.firsts, 0.5),
        "first_p99_ms": _percentile(tally.firsts, 0.99),
        "gap_p50_ms": _percentile(tally.gaps, 0.5),
        "gap_p99_ms": _percentile(tally.gaps, 0.99),
        "events": len(tally.gaps) + len(tally.firsts),
    }


def measure(port: int, keys: list[str], body: bytes, streams: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Run the driver in its own process on the load core (uvloop when installed)."""
    requests = [
        http_request("127.0.0.1", CHAT, body, {"authorization": f"Bearer {k}"} if k else None) for k in keys or [""]
    ]
    payload = json.dumps(
        {
            "port": port,
            "requests": [r.decode() for r in requests],
            "streams": streams,
            "seconds": seconds,
            "warmup": warmup,
        }
    )
    out = subprocess.run(
        pinned(LOAD_CORE, [sys.executable, __file__, "--drive"]),
        input=payload,
        text=True,
        capture_output=True,
        check=True,
    ).stdout
    return cast(dict[str, Any], json.loads(out))


def billing_check(database_url: str, served: int) -> dict[str, Any]:
    """`run.verify`, for streams: those still running when the driver stopped were cut by the
    client and billed for what they relayed, so every usage record (not only the completed ones)
    has exactly one charge, and the completed ones are the answers the platform counted."""
    checks = verify(database_url, served)
    records = int(str(db_rows(database_url, "SELECT COUNT(*) FROM usage_records")[0][0]))
    checks["usage_records_all"] = records
    checks["ok"] = (
        checks["charges_written"] == records
        and checks["usage_records_ok"] == served
        and checks["records_without_charge"] == 0
        and checks["reconcile_clean"]
    )
    return checks


def _drive_from_stdin() -> None:
    job = json.loads(sys.stdin.read())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        drive_streams(job["port"], [r.encode() for r in job["requests"]], job["streams"], job["seconds"], job["warmup"])
    )
    print(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="250,500,1000")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--tpt-ms", type=float, default=33.3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        _drive_from_stdin()
        return 0
    levels = [int(n) for n in args.streams.split(",")]
    body = stream_body(args.tokens)
    warmup = max(3.0, args.tokens * args.tpt_ms / 1000)  # every connection has begun its second stream
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-streams-"))
    sim_port, pass_port, plat_port = free_port(), free_port(), free_port()
    sim = start(
        pinned(
            LOAD_CORE,
            [
                sys.executable,
                "-m",
                "cocoon_simulator",
                "--port",
                str(sim_port),
                "--ttft-ms",
                "0",
                "--tpt-ms",
                str(args.tpt_ms),
            ],
        ),
        base_env(),
        workdir / "simulator.log",
        f"http://127.0.0.1:{sim_port}/v1/models",
    )
    upstream = f"http://127.0.0.1:{sim_port}"
    database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    rows: list[dict[str, Any]] = []
    try:
        passthrough = start(
            pinned(
                PLATFORM_CORE,
                [
                    sys.executable,
                    str(ROOT / "bench" / "passthrough.py"),
                    "--port",
                    str(pass_port),
                    "--upstream",
                    upstream,
                    "--connections",
                    "0",
                ],
            ),
            base_env(),
            workdir / "passthrough.log",
            f"http://127.0.0.1:{pass_port}/",
        )
        platform = start(
            pinned(PLATFORM_CORE, [str(BIN / "cocoon-platform"), "serve"]),
            platform_env(database_url, upstream, plat_port),
            workdir / "platform.log",
            f"http://127.0.0.1:{plat_port}/health",
        )
        try:
            keys = register_accounts(f"http://127.0.0.1:{plat_port}", database_url, ACCOUNTS)
            print("stalls:", machine_stalls(), flush=True)
            for streams in levels:
                own = measure(sim_port, [], body, streams, args.seconds, warmup)
                for target, port, target_keys in (
                    ("bare pass-through", pass_port, []),
                    ("platform (SQLite)", plat_port, keys),
                ):
                    got = measure(port, target_keys, body, streams, args.seconds, warmup)
                    row = {
                        "target": target,
                        "streams": streams,
                        **got,
                        "added_gap_p50_ms": round(got["gap_p50_ms"] - own["gap_p50_ms"], 2),
                        "added_gap_p99_ms": round(got["gap_p99_ms"] - own["gap_p99_ms"], 2),
                        "added_first_p99_ms": round(got["first_p99_ms"] - own["first_p99_ms"], 2),
                        "upstream": own,
                    }
                    row["held"] = (
                        row["added_gap_p99_ms"] <= 10
                        and row["added_first_p99_ms"] <= 50
                        and got["failures"] == 0
                        and got["completed_per_s"] >= 0.95 * own["completed_per_s"]
                    )
                    rows.append(row)
                    print(
                        f"  {target:<18} {streams:>5} streams: {got['completed_per_s']:7.1f} done/s "
                        f"(alone {own['completed_per_s']:.1f}); gap p50/p99 {got['gap_p50_ms']}/{got['gap_p99_ms']} ms "
                        f"(+{row['added_gap_p50_ms']}/+{row['added_gap_p99_ms']}); first p50/p99 "
                        f"{got['first_p50_ms']}/{got['first_p99_ms']} ms (+{row['added_first_p99_ms']} p99); "
                        f"failures {got['failures']}; {'held' if row['held'] else 'NOT held'}",
                        flush=True,
                    )
            time.sleep(2)
            checks = billing_check(database_url, answers_sent(f"http://127.0.0.1:{plat_port}"))
            print("billing check:", checks, flush=True)
        finally:
            stop(platform)
            stop(passthrough)
    finally:
        stop(sim)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"streams-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"rows": rows, "checks": checks, "args": vars(args)}, indent=1))
    print("written", path)
    held = [r["streams"] for r in rows if r["target"].startswith("platform") and r["held"]]
    print(f"most streams held by the platform: {max(held) if held else 0}")
    return 0 if checks["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
