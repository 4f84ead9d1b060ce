"""The JSON work of one metered request, timed with each JSON library that is installed.

    python bench/json_libs.py [--rounds 20000]

Per plain request the platform parses the client's body, serialises the payload it forwards,
parses the upstream's answer and serialises the answer it sends back; per 20-chunk stream it
parses each event instead of the answer. The documents are the suite's own: its request body and
the simulator's answers. Libraries that are not installed are skipped (orjson is a dependency;
`pip install msgspec ujson` to compare those too).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay import stream_body
from run import BODY

from cocoon_simulator.cocoon_infer import Answer, response_body
from cocoon_simulator.cocoon_text import ENGLISH_WORDS

Codec = tuple[Callable[[bytes], Any], Callable[[Any], bytes]]


def codecs() -> dict[str, Codec]:
    found: dict[str, Codec] = {"json (stdlib)": (json.loads, lambda value: json.dumps(value).encode())}
    for name in ("orjson", "msgspec", "ujson"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if name == "msgspec":
            found[name] = (module.json.decode, module.json.encode)
        elif name == "ujson":
            found[name] = (module.loads, lambda value, dumps=module.dumps: dumps(value).encode())
        else:
            found[name] = (module.loads, module.dumps)
    return found


def documents() -> tuple[bytes, bytes, list[bytes]]:
    answer = Answer(
        id="chatcmpl-bench",
        created=int(time.time()),
        chat=True,
        model="Qwen/Qwen3-32B",
        words=ENGLISH_WORDS,
        offset=7,
        prompt_tokens=40,
        cached_tokens=0,
        completion_tokens=20,
        reasoning_tokens=5,
        finish_reason="stop",
        prompt_cost=1600,
        completion_cost=3200,
    )
    events = [event[6:] for event in stream_body(20).split(b"\n\n") if event.startswith(b"data: {")]
    return BODY, response_body(answer), events


def per_request(
    loads: Callable[[bytes], Any],
    dumps: Callable[[Any], bytes],
    request: bytes,
    answer: bytes,
    events: list[bytes],
    rounds: int,
) -> tuple[float, float]:
    """Microseconds per plain request and per stream (best of three)."""
    plain, stream = [], []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(rounds):
            payload = loads(request)
            payload["stream_options"] = {"include_usage": True}
            dumps(payload)
            document = loads(answer)
            document["usage"]["cost_nanoton"] = 1
            dumps(document)
        plain.append((time.perf_counter() - started) / rounds * 1e6)
        started = time.perf_counter()
        for _ in range(rounds):
            dumps(loads(request))
            for event in events:
                loads(event)
        stream.append((time.perf_counter() - started) / rounds * 1e6)
    return min(plain), min(stream)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20000)
    args = parser.parse_args()
    request, answer, events = documents()
    print(f"request {len(request)} B, answer {len(answer)} B, {len(events)} stream events")
    for name, (loads, dumps) in codecs().items():
        plain, stream = per_request(loads, dumps, request, answer, events, args.rounds)
        print(f"  {name:<14} plain request {plain:6.1f} us   stream {stream:6.1f} us")


if __name__ == "__main__":
    main()
