"""The Messages stream's bytes (`dialects/messages.py`) against the same stream encoded the
generic way: each event a dict, encoded whole by orjson. Any chat stream, read in any pieces,
ended in any way, from any request, must give the same bytes: the same events, fields, values
and order.

`GenericStream` is that straightforward translation, kept here as the reference; it shares
nothing with the module but `usage_numbers` (what a usage object counts is not what this
compares)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon_platform.dialects.chat import decoded_chunks, frame_chunks, usage_numbers
from cocoon_platform.dialects.messages import MessagesDialect
from cocoon_platform.errors import InvalidRequest, PlatformError, UpstreamError
from cocoon_platform.proxy.events import Delta
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.proxy.relay import read_events, read_texts

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}
ERROR_TYPES = {400: "invalid_request_error", 500: "api_error", 502: "api_error", 503: "overloaded_error"}


def event(kind: str, fields: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"


class GenericStream:
    """Anthropic's events for one streamed answer, each built as a dict and encoded whole."""

    def __init__(self, stop_sequences: list[str], answer_id: str, model: str) -> None:
        self.stop_sequences = stop_sequences
        self.answer_id = answer_id
        self.model = model
        self.started = False
        self.index = -1
        self.kind: str | None = None  # of the open block: "thinking", "text" or "tool_use"
        self.answered = False
        self.finish_reason: str | None = None
        self.stop_reason: Any = None

    def _start(self) -> list[bytes]:
        self.started = True
        message = {
            "id": self.answer_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 0,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 0,
            },
        }
        return [event("message_start", {"message": message})]

    def frame(self, payloads: list[bytes]) -> bytes:
        out = [] if self.started else self._start()
        for chunk in decoded_chunks(payloads):
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                if choice.finish_reason is not None:
                    self.finish_reason, self.stop_reason = choice.finish_reason, choice.stop_reason
                if choice.delta is not None:
                    self._delta(choice.delta, out)
        return b"".join(out)

    def _delta(self, delta: Delta, out: list[bytes]) -> None:
        thought = delta.reasoning_content or delta.reasoning
        if thought:
            self._text("thinking", thought, out)
        if delta.content:
            self._text("text", delta.content, out)
        for call in delta.tool_calls or ():
            function = call.function
            if call.id is not None or self.kind != "tool_use":
                block = {
                    "type": "tool_use",
                    "id": call.id or f"toolu_{self.answer_id[4:]}",
                    "name": (function.name if function else None) or "",
                    "input": {},
                }
                self._open("tool_use", block, out)
            if function is not None and function.arguments:
                self._piece({"type": "input_json_delta", "partial_json": function.arguments}, out)

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        if self.kind != kind:
            block = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {"type": "text"}
            if kind == "text":
                block["text"] = ""
            self._open(kind, block, out)
        self._piece({"type": f"{kind}_delta", kind: text}, out)

    def _piece(self, delta: dict[str, Any], out: list[bytes]) -> None:
        out.append(event("content_block_delta", {"index": self.index, "delta": delta}))

    def _open(self, kind: str, block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self.index += 1
        self.kind = kind
        self.answered = self.answered or kind != "thinking"
        out.append(event("content_block_start", {"index": self.index, "content_block": block}))

    def _close(self, out: list[bytes]) -> None:
        if self.kind is not None:
            out.append(event("content_block_stop", {"index": self.index}))
            self.kind = None

    def finish(self, chat_usage: dict[str, Any]) -> bytes:
        out = [] if self.started else self._start()
        if not self.answered:
            self._open("text", {"type": "text", "text": ""}, out)
        self._close(out)
        reason, sequence = STOP_REASONS.get(self.finish_reason or "stop", "end_turn"), None
        if (
            self.finish_reason == "stop"
            and isinstance(self.stop_reason, str)
            and self.stop_reason in self.stop_sequences
        ):
            reason, sequence = "stop_sequence", self.stop_reason
        prompt, cached, completion, _, cost_nanoton, cost_ton = usage_numbers(chat_usage)
        numbers = {
            "input_tokens": prompt - cached,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
            "output_tokens": completion,
            "cost_nanoton": cost_nanoton,
            "cost_ton": cost_ton,
        }
        out.append(
            event("message_delta", {"delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": numbers})
        )
        out.append(event("message_stop", {}))
        return b"".join(out)

    def fail(self, error: PlatformError) -> bytes:
        out = [] if self.started else self._start()
        self._close(out)
        problem: dict[str, Any] = {"type": ERROR_TYPES[error.status], "message": error.message}
        if error.code is not None:
            problem["code"] = error.code
        out.append(event("error", {"type": "error", "error": problem}))
        return b"".join(out)


# Text that the events must carry as it is: `%` conversions, JSON's escapes, the separators of
# orjson's indented arrays, control characters, line breaks and characters beyond ASCII.
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["%d", "%b%%", "%", '"', "\\", ',\n  "x"', "}}\n\n", "\n", "\x00\x01\x02\x03", "é€😀", "a\r\nb"]),
)
PIECE = st.one_of(st.none(), TEXT)
STOP_SEQUENCES = ["END", 'q"%d', "é\n"]
OTHER = {"index": 1, "delta": {"content": "another choice"}, "finish_reason": "length"}


@st.composite
def chat_chunks(draw: st.DrawFn) -> list[bytes]:
    """A chat stream as a network sends it, and more: reasoning (either field), text, both in one
    chunk, tool calls (several in a delta, opened and continued, with or without id, name,
    arguments), empty deltas, a choice without delta, other choices (alone, beside the first, or
    a second first), no choice, a chunk with usage, finish reasons anywhere, with stop strings."""
    chunks = []
    for _ in range(draw(st.integers(0, 14))):
        shape = draw(st.sampled_from(["reasoning", "reasoning_alt", "text", "text", "both", "calls", "empty", "other"]))
        delta: dict[str, Any] | None
        if shape == "reasoning":
            delta = {"reasoning_content": draw(TEXT)}
        elif shape == "reasoning_alt":
            delta = {"reasoning": draw(TEXT), "content": draw(st.sampled_from([None, ""]))}
        elif shape == "text":
            delta = {"content": draw(TEXT)}
        elif shape == "both":
            delta = {"reasoning_content": draw(TEXT), "content": draw(TEXT)}
        elif shape == "calls":
            calls = [
                {
                    "index": index,
                    "id": draw(st.one_of(st.none(), st.sampled_from(["toolu_1", 'c%d"2', ""]))),
                    "type": "function",
                    "function": draw(st.one_of(st.none(), st.fixed_dictionaries({"name": PIECE, "arguments": PIECE}))),
                }
                for index in range(draw(st.integers(0, 3)))
            ]
            delta = {"tool_calls": calls, "content": draw(st.sampled_from([None, "t"]))}
        elif shape == "empty":
            delta = draw(st.sampled_from([{}, None, {"content": None}, {"content": ""}]))
        else:
            delta = {"content": "not the first choice"}
        choice: dict[str, Any] = {"index": 1 if shape == "other" else 0, "finish_reason": None}
        if delta is not None:
            choice["delta"] = delta
        if draw(st.integers(0, 4)) == 0:
            choice["finish_reason"] = draw(st.sampled_from(["stop", "length", "tool_calls", "function_call", "other"]))
            choice["stop_reason"] = draw(st.one_of(st.none(), st.sampled_from([*STOP_SEQUENCES, 7, "unknown"])))
        choices = [choice]
        if draw(st.integers(0, 5)) == 0:  # no choice, or another beside it (n > 1)
            choices = draw(st.sampled_from([[], [choice, OTHER], [OTHER, choice], [choice, choice]]))
        chunk: dict[str, Any] = {"id": "x", "object": "chat.completion.chunk", "choices": choices}
        if draw(st.integers(0, 9)) == 0:  # the relay does not decode it: the dialect does
            chunk["usage"] = {"prompt_tokens": 1, "completion_tokens": 1}
        chunks.append(json.dumps(chunk).encode())
    return chunks


USAGES = st.fixed_dictionaries(
    {
        "prompt_tokens": st.one_of(st.integers(0, 10**6), st.just(-1), st.just(True)),
        "completion_tokens": st.integers(0, 10**6),
        "cost_nanoton": st.integers(0, 10**13),
    },
    optional={
        "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(0, 100)}),
        "completion_tokens_details": st.fixed_dictionaries({"reasoning_tokens": st.integers(0, 100)}),
    },
).map(lambda usage: {**usage, "cost_ton": usage["cost_nanoton"] / 1e9})
ERRORS = st.sampled_from(
    [
        UpstreamError(502, 'The COCOON network dropped the "stream" at 100%.', "stream_cut"),
        UpstreamError(503, "Busy: é\n%d", "busy"),
        InvalidRequest("no"),
        PlatformError(),
    ]
)


def reads(chunks: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    edges = sorted({min(c, len(chunks)) for c in cuts})
    return [chunks[a:b] for a, b in zip([0, *edges], [*edges, len(chunks)], strict=True) if chunks[a:b]]


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(STOP_SEQUENCES), max_size=3),
    st.sampled_from(["msg_019bd2c0f1a2b3c4d5e6f7a8b9", 'msg_a%d"é\\', "no_prefix"]),
    st.sampled_from(["Qwen/Qwen3-32B", 'm%b"é']),
    chat_chunks(),
    st.lists(st.integers(0, 15), max_size=6),
    st.booleans(),
    st.one_of(USAGES, st.none(), st.just({})),
    ERRORS,
)
def test_the_stream_writes_the_bytes_the_generic_encoding_does(
    stop_sequences: list[str],
    answer_id: str,
    model: str,
    chunks: list[bytes],
    cuts: list[int],
    via_relay: bool,
    usage: dict[str, Any] | None,
    error: PlatformError,
) -> None:
    """`usage` None: the stream fails (cut, or the network's error) instead of finishing."""
    body: dict[str, Any] = {"model": "m", "max_tokens": 5, "messages": [], "stop_sequences": stop_sequences}
    ours_stream = MessagesDialect().translate(body).stream(answer_id, model)
    generic = GenericStream(stop_sequences, answer_id, model)
    ours, theirs = [], []
    for read in reads(chunks, cuts):
        ours.append(read_texts(ours_stream, Outcome(), 0.0, read) if via_relay else frame_chunks(ours_stream, read))
        theirs.append(generic.frame(read_events(read, Outcome(), 0.0) if via_relay else read))
    ours.append(ours_stream.finish(usage) if usage is not None else ours_stream.fail(error))
    theirs.append(generic.finish(usage) if usage is not None else generic.fail(error))
    assert ours == theirs, (b"".join(ours).decode(), b"".join(theirs).decode())


def test_the_benchmark_answer_is_written_as_the_generic_encoding_does() -> None:
    """The answer every benchmark streams, read whole and a chunk a read: reasoning, then text;
    and a stream that fails before anything, or ends with nothing."""
    pieces = [{"reasoning_content": f" thought {i}"} for i in range(5)] + [{"content": f" word{i}"} for i in range(15)]
    chunks = [
        orjson.dumps({"id": "x", "choices": [{"index": 0, "delta": piece, "finish_reason": None}]}) for piece in pieces
    ]
    usage = {"prompt_tokens": 30, "completion_tokens": 20, "completion_tokens_details": {"reasoning_tokens": 5}}
    request = MessagesDialect().translate({"model": "m", "max_tokens": 5, "messages": []})
    for size in (1, 3, 20):
        ours, generic = request.stream("msg_1", "m"), GenericStream([], "msg_1", "m")
        for start in range(0, len(chunks), size):
            read = chunks[start : start + size]
            assert read_texts(ours, Outcome(), 0.0, read) == generic.frame(read_events(read, Outcome(), 0.0))
        assert ours.finish(usage) == generic.finish(usage)
    error = UpstreamError(502, "The COCOON network dropped the stream.", "stream_cut")
    assert request.stream("msg_1", "m").fail(error) == GenericStream([], "msg_1", "m").fail(error)
    assert request.stream("msg_1", "m").finish(usage) == GenericStream([], "msg_1", "m").finish(usage)


def test_an_answer_of_many_blocks_is_written_as_the_generic_encoding_does() -> None:
    """Blocks beyond the first indices, whose events are not made at import: a text and a tool
    call in every chunk, each its own block."""
    chunks = [
        orjson.dumps(
            {
                "id": "x",
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "content": f"t{i}%",
                            "tool_calls": [{"index": i, "id": f"c{i}", "function": {"name": "f", "arguments": "{}"}}],
                        },
                    }
                ],
            }
        )
        for i in range(24)
    ]
    request = MessagesDialect().translate({"model": "m", "max_tokens": 5, "messages": []})
    for size in (1, 24):
        ours, generic = request.stream("msg_1", "m"), GenericStream([], "msg_1", "m")
        for start in range(0, len(chunks), size):
            read = chunks[start : start + size]
            assert read_texts(ours, Outcome(), 0.0, read) == generic.frame(read_events(read, Outcome(), 0.0))
        assert ours.finish({}) == generic.finish({})
