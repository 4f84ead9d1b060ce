"""The stream relay's own cost: what the platform's CPU does for one streamed answer's events.

    python bench/relay.py [--chunks 20] [--rounds 20000]

Feeds one simulator-made stream (the chunks, the usage chunk, [DONE]) through the production
`proxy.relay.relay` with an upstream that has it all buffered and a client that takes
every write at once, as in the suite's zero-latency stream point; prints microseconds per stream.
In-process and single-threaded: no network, no database, so it shows changes of a few percent
that the end-to-end points cannot. The stream's deadline (one `asyncio.timeout`, about 4 us) is
set by the caller since 2026-11-26 and no longer counted here.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from functools import partial
from typing import Any

from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.proxy.relay import framed_events, openai_frame, relay
from cocoon_simulator.cocoon_infer import Answer, final_events, token_events
from cocoon_simulator.cocoon_text import ENGLISH_WORDS


class BufferedResponse:
    """An upstream answer that has fully arrived: one piece, then the end."""

    buffered = True

    def __init__(self, body: bytes) -> None:
        self._pieces = [body, b""]

    async def next_piece(self) -> bytes:
        return self._pieces.pop(0)


def stream_body(chunks: int) -> bytes:
    answer = Answer(
        id="chatcmpl-bench",
        created=int(time.time()),
        chat=True,
        model="Qwen/Qwen3-32B",
        words=ENGLISH_WORDS,
        offset=7,
        prompt_tokens=40,
        cached_tokens=0,
        completion_tokens=chunks,
        reasoning_tokens=chunks // 4,
        finish_reason="stop",
        prompt_cost=1600,
        completion_cost=3200,
    )
    return b"".join(token_events(answer, bare=False)) + final_events(answer, bare=False)


async def measure(body: bytes, rounds: int) -> float:
    written = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal written
        written += len(message.get("body", b""))

    def watch_client() -> None:
        raise AssertionError("a buffered stream never waits for the network")

    started = time.perf_counter()
    for _ in range(rounds):
        outcome = Outcome()
        read = partial(framed_events, openai_frame(outcome, "chatcmpl-bench"), outcome, time.perf_counter())
        await relay(BufferedResponse(body), send, outcome, watch_client, read)  # type: ignore[arg-type]
        assert outcome.usage is not None and outcome.error is None
    elapsed = time.perf_counter() - started
    assert written > 0
    return elapsed / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    body = stream_body(args.chunks)
    results = [asyncio.run(measure(body, args.rounds)) for _ in range(3)]
    print(
        f"relay of a {args.chunks}-chunk stream ({len(body)} bytes): best {min(results):.1f} us, "
        f"runs {', '.join(f'{r:.1f}' for r in results)} us per stream"
    )


if __name__ == "__main__":
    main()
