"""Memory over a long mixed load: plain answers, streams and tool calls, on SQLite.

    python bench/soak.py [--seconds 600] [--concurrency 16]

The platform runs alone on core 0; the simulator and this driver on core 1. The platform's RSS is
sampled every 10 s after a warm-up (a minute, or a tenth of a shorter run); #21's target is an RSS
at the end within 5% of the RSS after the warm-up. The books are checked afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from driver import drive, http_request  # noqa: E402
from run import (  # noqa: E402
    BIN,
    LOAD_CORE,
    PLATFORM_CORE,
    answers_sent,
    pinned,
    platform_env,
    register_accounts,
    rss_kib,
    start,
    stop,
    verify,
)
from support import base_env, free_port  # noqa: E402

CHAT = "/v1/chat/completions"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def bodies() -> list[bytes]:
    """One of each kind the mix holds: plain, streamed, tools, tools streamed."""
    plain = {
        "model": "Qwen/Qwen3-32B",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "[[sim:tokens=20]] Write a haiku about the sea."}],
    }
    tools = {**plain, "tools": [WEATHER], "messages": [{"role": "user", "content": "Weather in Paris?"}]}
    streamed = {"stream": True, "stream_options": {"include_usage": True}}
    return [json.dumps(body).encode() for body in (plain, {**plain, **streamed}, tools, {**tools, **streamed})]


async def load_and_sample(
    port: int, pid: int, requests: list[bytes], concurrency: int, seconds: float, warmup: float
) -> dict[str, Any]:
    samples: list[tuple[float, int]] = []

    async def sample() -> None:
        began = time.monotonic()
        while True:
            await asyncio.sleep(10 if seconds >= 120 else 1)
            if time.monotonic() - began >= warmup:
                samples.append((round(time.monotonic() - began, 1), rss_kib(pid)))

    sampler = asyncio.create_task(sample())
    result = await drive("127.0.0.1", port, requests, concurrency, seconds, warmup=0)
    sampler.cancel()
    first, last = samples[0][1], samples[-1][1]
    return {
        "answers": result.answers,
        "failures": result.failures,
        "rate": round(result.rate, 1),
        "rss_kib_after_warmup": first,
        "rss_kib_at_end": last,
        "change_pct": round(100 * (last - first) / first, 2),
        "samples": samples,
        "flat": abs(last - first) <= first * 0.05,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-soak-"))
    sim_port, port = free_port(), free_port()
    sim = start(
        pinned(LOAD_CORE, [sys.executable, "-m", "cocoon_simulator", "--port", str(sim_port)]),
        base_env(),
        workdir / "simulator.log",
        f"http://127.0.0.1:{sim_port}/v1/models",
    )
    database_url = f"sqlite+aiosqlite:///{workdir / 'soak.db'}"
    try:
        platform = start(
            pinned(PLATFORM_CORE, [str(BIN / "cocoon-platform"), "serve"]),
            platform_env(database_url, f"http://127.0.0.1:{sim_port}", port),
            workdir / "platform.log",
            f"http://127.0.0.1:{port}/health",
        )
        try:
            keys = register_accounts(f"http://127.0.0.1:{port}", database_url, 16)
            requests = [
                http_request("127.0.0.1", CHAT, body, {"authorization": f"Bearer {key}"})
                for key in keys
                for body in bodies()
            ]
            warmup = min(60.0, args.seconds / 10)
            soaked = asyncio.run(load_and_sample(port, platform.pid, requests, args.concurrency, args.seconds, warmup))
            time.sleep(2)
            checks = verify(database_url, answers_sent(f"http://127.0.0.1:{port}"))
        finally:
            stop(platform)
    finally:
        stop(sim)
    print(
        f"soak: {soaked['answers']} answers ({soaked['failures']} failed) in {args.seconds:g} s; RSS "
        f"{soaked['rss_kib_after_warmup']} -> {soaked['rss_kib_at_end']} KiB ({soaked['change_pct']:+.2f}%, "
        f"{'flat' if soaked['flat'] else 'NOT flat'}: target within 5%); books: {'ok' if checks['ok'] else checks}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"soak": soaked, "checks": checks, "args": vars(args)}, indent=1))
    print("written", path)
    return 0 if checks["ok"] and soaked["flat"] and not soaked["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
