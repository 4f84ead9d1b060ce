"""A non-streamed answer assembled from the network's stream (proxy/assemble.py): the typed fast
path for the usual chunk builds the same document, and counts the same delivery, as the general
path that keeps every field; reads it cannot take fall through to the general path whole."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cocoon_platform.proxy import assemble
from cocoon_platform.proxy.assemble import Assembler
from cocoon_platform.proxy.events import DONE
from cocoon_platform.proxy.outcome import Outcome

HEAD = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1700000000, "model": "Qwen/Qwen3-32B"}
USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 5,
    "total_tokens": 35,
    "completion_tokens_details": {"reasoning_tokens": 2},
    "prompt_total_cost": 100,
    "completion_total_cost": 200,
    "total_cost": 300,
}


def chunk(
    delta: dict[str, Any], index: int = 0, finish: str | None = None, ending: dict[str, Any] | None = None, **extra: Any
) -> bytes:
    """A chat chunk; `ending` adds fields to its choice (vLLM's `stop_reason` on a finishing one)."""
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish, **(ending or {})}
    return orjson.dumps({**HEAD, "choices": [choice], **extra})


def ended_by(stop_reason: Any) -> list[bytes]:
    """The usual answer whose finishing chunk says its `stop_reason`, as vLLM's does."""
    return [
        *USUAL[:4],
        chunk({"content": ", world"}, finish="stop", ending={"stop_reason": stop_reason}),
        *USUAL[5:],
    ]


USUAL = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning_content": "Think"}),
    chunk({"reasoning_content": " 数字 42"}),
    chunk({"content": "Hello"}),
    chunk({"content": ", world"}, finish="stop"),
    orjson.dumps({**HEAD, "choices": [], "usage": USAGE}),
    DONE,
]

STREAMS: dict[str, list[bytes]] = {
    "usual": USUAL,
    "stop_reason null": ended_by(None),
    "stop_reason a stop string": ended_by("END"),
    "stop_reason a stop token": ended_by(151643),
    "stop_reason on each choice's finish": [
        chunk({"role": "assistant", "content": ""}, index=1),
        chunk({"content": "b1"}, index=1),
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "a1"}),
        chunk({"content": "b2"}, index=1, finish="length", ending={"stop_reason": None}),
        chunk({}, finish="stop", ending={"stop_reason": "\n\n"}),
        orjson.dumps({**HEAD, "choices": [], "usage": USAGE}),
        DONE,
    ],
    "two choices, interleaved": [
        chunk({"role": "assistant", "content": ""}, index=1),
        chunk({"content": "b1"}, index=1),
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "a1"}),
        chunk({"content": "b2"}, index=1, finish="length"),
        chunk({"content": "a2"}, finish="stop"),
        orjson.dumps({**HEAD, "choices": [], "usage": USAGE}),
        DONE,
    ],
    "the older build's `reasoning`": [
        chunk({"role": "assistant"}),
        chunk({"reasoning": "hmm"}),
        chunk({"content": "ok", "reasoning": None}, finish="stop"),
        DONE,
    ],
    "a choice without logprobs": [
        orjson.dumps({**HEAD, "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}),
        chunk({"content": "y"}, finish="stop"),
    ],
    "an unknown top-level field": [
        chunk({"role": "assistant", "content": ""}, system_fingerprint="fp_1"),
        chunk({"content": "x"}, finish="stop", system_fingerprint="fp_1"),
    ],
    "a tool call among text": [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Calling."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, finish="tool_calls"),
        orjson.dumps({**HEAD, "choices": [], "usage": USAGE}),
    ],
    "an error event": [
        chunk({"content": "x"}),
        orjson.dumps({**HEAD, "choices": [], "error": {"message": "worker died"}}),
    ],
    "logprobs present": [
        orjson.dumps({**HEAD, "choices": [{"index": 0, "delta": {"content": "x"}, "logprobs": {"content": []}}]}),
    ],
    "an event that is not JSON": [chunk({"content": "x"}), b"{not json", chunk({"content": "y"}, finish="stop")],
}


def assemble_stream(reads: list[list[bytes]], general_only: bool, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        if general_only:

            def refuse(data: bytes) -> Any:
                raise assemble.msgspec.DecodeError("the general path only")

            patch.setattr(assemble, "_decode_usual", refuse)
        outcome = Outcome()
        assembler = Assembler("chat")
        for read in reads:
            assembler.feed(read, outcome, 0.0)
        return (
            assembler.document(outcome.usage),
            outcome.delivered(),
            outcome.usage,
            outcome.upstream_done,
            outcome.error is not None,
            outcome.stream_id,
        )


@pytest.mark.parametrize("name", list(STREAMS))
@pytest.mark.parametrize("split", [None, 1, 2])
def test_the_fast_path_builds_what_the_general_path_builds(
    name: str, split: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = STREAMS[name]
    reads = [events] if split is None else [events[i : i + split] for i in range(0, len(events), split)]
    fast = assemble_stream(reads, general_only=False, monkeypatch=monkeypatch)
    general = assemble_stream(reads, general_only=True, monkeypatch=monkeypatch)
    assert fast == general


def test_the_usual_answer_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    document, delivered, usage, done, failed, stream_id = assemble_stream([USUAL], False, monkeypatch)
    assert document == {
        **HEAD,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello, world",
                    "reasoning_content": "Think 数字 42",
                    "tool_calls": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    assert (delivered.completion, delivered.reasoning) == (4, 2)
    assert delivered.size == len("Think") + len(" 数字 42") + len("Hello") + len(", world")
    assert (usage, done, failed, stream_id) == (USAGE, True, False, "chatcmpl-7")


def test_a_read_the_fast_path_cannot_take_goes_to_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool call in the read: the fast path declines it, and nothing of it is lost. The usual
    reads, a finishing chunk's stop_reason included, stay on the fast path."""
    calls: list[int] = []
    original = Assembler._add

    def counting(self: Assembler, chunk: dict[str, Any], outcome: Outcome) -> None:
        calls.append(1)
        original(self, chunk, outcome)

    monkeypatch.setattr(Assembler, "_add", counting)
    document = assemble_stream([STREAMS["a tool call among text"]], False, monkeypatch)[0]
    assert calls, "the general path took the read"
    assert document["choices"][0]["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    for name in ("usual", "stop_reason null", "stop_reason a stop string", "stop_reason on each choice's finish"):
        calls.clear()
        assemble_stream([STREAMS[name]], False, monkeypatch)
        assert not calls, f"the usual read stays on the fast path: {name}"


@pytest.mark.parametrize("stop_reason", [None, "END", 151643])
def test_the_networks_stop_reason_is_the_choices(stop_reason: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The document says a choice's stop_reason as the network did, null included; a stream that
    never said one leaves it out (test_the_usual_answer_in_full)."""
    document = assemble_stream([ended_by(stop_reason)], False, monkeypatch)[0]
    choice = document["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", stop_reason)
