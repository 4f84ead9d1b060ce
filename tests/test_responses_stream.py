"""The Responses stream's bytes, written from templates (`dialects/responses.py`), against the
same stream encoded the generic way: each event a dict, encoded whole by orjson, as the module
did before it had templates. Any chat stream, read in any pieces, ended in any way, from any
request, must give the same bytes: the same events, fields, values and order.

`GenericStream` is that earlier translation, kept here as the reference; it shares nothing with
the module but `usage_numbers` (what a usage object counts is not what this compares)."""

from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon_platform.dialects.chat import decoded_chunks, frame_chunks, usage_numbers
from cocoon_platform.dialects.responses import ResponsesDialect
from cocoon_platform.errors import PlatformError, UpstreamError
from cocoon_platform.proxy.events import Delta
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.proxy.relay import read_events, read_texts

ECHOED = (
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tool_choice",
    "tools",
    "parallel_tool_calls",
    "metadata",
    "text",
    "reasoning",
    "user",
)


class GenericStream:
    """The Responses events for one streamed answer, each built as a dict and encoded whole."""

    def __init__(self, body: dict[str, Any], answer_id: str, model: str) -> None:
        self.suffix = answer_id.removeprefix("resp_")
        response: dict[str, Any] = {
            "id": answer_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": model,
            "output": [],
            "previous_response_id": None,
            "store": False,
            "truncation": "disabled",
            "usage": None,
        }
        for name in ECHOED:
            response[name] = body.get(name)
        response["tools"] = body.get("tools") or []
        response["tool_choice"] = body.get("tool_choice") or "auto"
        response["parallel_tool_calls"] = body.get("parallel_tool_calls", True) is not False
        response["metadata"] = body.get("metadata") or {}
        response["text"] = body.get("text") or {"format": {"type": "text"}}
        self.response = response
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []
        self.kind: str | None = None  # of the open item: "reasoning", "message" or "call"
        self.text: list[str] = []
        self.call: dict[str, Any] | None = None
        self.calls = 0
        self.finish_reason: str | None = None

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        self.sequence += 1
        data = orjson.dumps({"type": kind, "sequence_number": self.sequence - 1, **fields})
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _delta(self, text: str) -> bytes:
        """A text delta event: its fields in the order clients have always had them."""
        index = len(self.output)
        if self.kind == "reasoning":
            kind = "response.reasoning_summary_text.delta"
            fields = {"item_id": f"rs_{self.suffix}", "output_index": index, "summary_index": 0}
            after: dict[str, Any] = {}
        else:
            kind = "response.output_text.delta"
            fields = {"item_id": f"msg_{self.suffix}", "output_index": index, "content_index": 0}
            after = {"logprobs": []}
        data = {"type": kind, **fields, "sequence_number": self.sequence, "delta": text, **after}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _start(self) -> list[bytes]:
        self.started = True
        snapshot = dict(self.response)
        return [
            self._event("response.created", {"response": snapshot}),
            self._event("response.in_progress", {"response": snapshot}),
        ]

    def frame(self, payloads: list[bytes]) -> bytes:
        out = [] if self.started else self._start()
        for chunk in decoded_chunks(payloads):
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                if choice.finish_reason is not None:
                    self.finish_reason = choice.finish_reason
                if choice.delta is not None:
                    self._choice(choice.delta, out)
        return b"".join(out)

    def _choice(self, delta: Delta, out: list[bytes]) -> None:
        thought = delta.reasoning_content or delta.reasoning
        if thought:
            self._text("reasoning", thought, out)
        if delta.content:
            self._text("message", delta.content, out)
        for call in delta.tool_calls or ():
            function = call.function
            if call.id is not None or self.call is None:
                self._close(out)
                self._open_call(call.id, function.name if function else None, out)
            if function is not None and function.arguments:
                assert self.call is not None
                self.text.append(function.arguments)
                fields = {"item_id": self.call["id"], "output_index": len(self.output), "delta": function.arguments}
                out.append(self._event("response.function_call_arguments.delta", fields))

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        if self.kind != kind:
            self._close(out)
            self._open(kind, out)
        self.text.append(text)
        out.append(self._delta(text))

    def _open(self, kind: str, out: list[bytes]) -> None:
        self.kind = kind
        index = len(self.output)
        if kind == "reasoning":
            item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{self.suffix}", "summary": []}
            part: dict[str, Any] = {"type": "summary_text", "text": ""}
            event, position = "response.reasoning_summary_part.added", "summary_index"
        else:
            item = {"type": "message", "id": f"msg_{self.suffix}", "status": "in_progress", "role": "assistant"}
            item["content"] = []
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            event, position = "response.content_part.added", "content_index"
        out.append(self._event("response.output_item.added", {"output_index": index, "item": item}))
        out.append(self._event(event, {"item_id": item["id"], "output_index": index, position: 0, "part": part}))

    def _open_call(self, call_id: str | None, name: str | None, out: list[bytes]) -> None:
        index = self.calls
        self.calls += 1
        self.kind = "call"
        self.call = {
            "type": "function_call",
            "id": f"fc_{self.suffix}_{index}",
            "call_id": call_id or f"call_{self.suffix}_{index}",
            "name": name or "",
            "arguments": "",
            "status": "in_progress",
        }
        out.append(self._event("response.output_item.added", {"output_index": len(self.output), "item": self.call}))

    def _close(self, out: list[bytes]) -> None:
        kind, text = self.kind, "".join(self.text)
        index = len(self.output)
        if kind == "reasoning":
            part: dict[str, Any] = {"type": "summary_text", "text": text}
            item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{self.suffix}", "summary": [part]}
            where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
            out.append(self._event("response.reasoning_summary_text.done", {**where, "text": text}))
            out.append(self._event("response.reasoning_summary_part.done", {**where, "part": part}))
        elif kind == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item = {
                "type": "message",
                "id": f"msg_{self.suffix}",
                "status": "completed",
                "role": "assistant",
                "content": [part],
            }
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(self._event("response.output_text.done", {**where, "text": text, "logprobs": []}))
            out.append(self._event("response.content_part.done", {**where, "part": part}))
        elif kind == "call":
            assert self.call is not None
            item = {**self.call, "arguments": text, "status": "completed"}
            fields = {"item_id": item["id"], "output_index": index, "name": item["name"], "arguments": text}
            out.append(self._event("response.function_call_arguments.done", fields))
            self.call = None
        else:
            return
        out.append(self._event("response.output_item.done", {"output_index": index, "item": item}))
        self.output.append(item)
        self.kind = None
        self.text = []

    def finish(self, chat_usage: dict[str, Any]) -> bytes:
        out = [] if self.started else self._start()
        if self.kind not in ("message", "call") and all(item["type"] == "reasoning" for item in self.output):
            self._close(out)
            self._open("message", out)
        self._close(out)
        prompt, cached, completion, reasoning, cost_nanoton, cost_ton = usage_numbers(chat_usage)
        response = {**self.response, "output": self.output}
        if self.finish_reason == "length":
            response["status"] = "incomplete"
            response["incomplete_details"] = {"reason": "max_output_tokens"}
        else:
            response["status"] = "completed"
        response["usage"] = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion,
            "cost_nanoton": cost_nanoton,
            "cost_ton": cost_ton,
        }
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, {"response": response}))
        return b"".join(out)

    def fail(self, error: PlatformError) -> bytes:
        out = [] if self.started else self._start()
        self._close(out)
        response = {
            **self.response,
            "output": self.output,
            "status": "failed",
            "error": {"code": "server_error", "message": error.message},
        }
        out.append(self._event("response.failed", {"response": response}))
        return b"".join(out)


# Text that templates must carry as it is: `%` conversions, JSON's escapes, the separators of
# orjson's indented arrays, markers' bytes, line breaks and characters beyond ASCII.
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["%d", "%b%%", '"', "\\", ',\n  "x"', "\n", "\x00\x01\x02\x03", "é€😀", "a\r\nb", " "]),
)
PIECE = st.one_of(st.none(), TEXT)
OTHER = {"index": 1, "delta": {"content": "another choice"}, "finish_reason": "length"}


@st.composite
def chat_chunks(draw: st.DrawFn) -> list[bytes]:
    """A chat stream as a network sends it, and more: reasoning (either field), text, both in one
    chunk, tool calls opened and continued (with or without id, name, arguments), empty deltas, a
    choice without delta, other choices (alone or beside the first), no choice, finish reasons
    anywhere."""
    chunks = []
    for _ in range(draw(st.integers(0, 14))):
        shape = draw(st.sampled_from(["reasoning", "reasoning_alt", "text", "both", "call", "empty", "other"]))
        delta: dict[str, Any] | None
        if shape == "reasoning":
            delta = {"reasoning_content": draw(TEXT)}
        elif shape == "reasoning_alt":
            delta = {"reasoning": draw(TEXT), "content": draw(st.sampled_from([None, ""]))}
        elif shape == "text":
            delta = {"content": draw(TEXT)}
        elif shape == "both":
            delta = {"reasoning_content": draw(TEXT), "content": draw(TEXT)}
        elif shape == "call":
            function = {"name": draw(PIECE), "arguments": draw(PIECE)}
            call = {
                "index": 0,
                "id": draw(st.one_of(st.none(), st.sampled_from(["call_1", 'c%d"2', ""]))),
                "type": "function",
            }
            delta = {"tool_calls": [{**call, "function": function}], "content": draw(st.sampled_from([None, "t"]))}
        elif shape == "empty":
            delta = draw(st.sampled_from([{}, None]))
        else:
            delta = {"content": "not the first choice"}
        choice: dict[str, Any] = {"index": 1 if shape == "other" else 0, "finish_reason": None}
        if delta is not None:
            choice["delta"] = delta
        if draw(st.integers(0, 5)) == 0:
            choice["finish_reason"] = draw(st.sampled_from(["stop", "length", "tool_calls"]))
        choices = [choice]
        if draw(st.integers(0, 5)) == 0:  # no choice, or another beside it (n > 1)
            choices = draw(st.sampled_from([[], [choice, OTHER], [OTHER, choice]]))
        chunks.append(json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": choices}).encode())
    return chunks


REQUESTS = st.fixed_dictionaries(
    {"model": st.just("m"), "input": st.just("hi")},
    optional={
        "instructions": TEXT,
        "max_output_tokens": st.integers(1, 100),
        "temperature": st.floats(0, 2),
        "top_p": st.sampled_from([0.5, 1]),
        "tool_choice": st.sampled_from(["auto", "required", "none", {"type": "function", "name": "f%d"}]),
        "tools": st.just([{"type": "function", "name": "f%d", "parameters": {"type": "object"}}]),
        "parallel_tool_calls": st.booleans(),
        "metadata": st.dictionaries(TEXT, TEXT, max_size=2),
        "text": st.sampled_from([{"format": {"type": "text"}}, {"format": {"type": "json_object"}}]),
        "reasoning": st.just({"effort": "low"}),
        "user": TEXT,
    },
)
USAGES = st.fixed_dictionaries(
    {
        "prompt_tokens": st.one_of(st.integers(0, 10**6), st.just(-1), st.just(True)),
        "completion_tokens": st.integers(0, 10**6),
        "cost_nanoton": st.integers(0, 10**13),
    },
    optional={
        "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(0, 100)}),
        "completion_tokens_details": st.fixed_dictionaries({"reasoning_tokens": st.integers(0, 100)}),
        "reasoning_tokens": st.integers(0, 100),
    },
).map(lambda usage: {**usage, "cost_ton": usage["cost_nanoton"] / 1e9})


def reads(chunks: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    edges = sorted({min(c, len(chunks)) for c in cuts})
    return [chunks[a:b] for a, b in zip([0, *edges], [*edges, len(chunks)], strict=True) if chunks[a:b]]


@settings(max_examples=400, deadline=None)
@given(
    REQUESTS,
    st.sampled_from(["resp_019bd2c0f1a2b3c4d5e6f7a8b9", 'resp_a%d"é\\', "no_prefix"]),
    st.sampled_from(["Qwen/Qwen3-32B", 'm%b"é']),
    chat_chunks(),
    st.lists(st.integers(0, 15), max_size=6),
    st.booleans(),
    st.one_of(USAGES, st.none()),
)
def test_the_templates_write_the_bytes_the_generic_encoding_does(
    body: dict[str, Any],
    answer_id: str,
    model: str,
    chunks: list[bytes],
    cuts: list[int],
    via_relay: bool,
    usage: dict[str, Any] | None,
) -> None:
    """`usage` None: the stream fails (cut, or the network's error) instead of finishing."""
    with mock.patch("time.time", return_value=1_767_225_600.75):
        templated = ResponsesDialect().translate(body).stream(answer_id, model)
        generic = GenericStream(body, answer_id, model)
    ours, theirs = [], []
    for read in reads(chunks, cuts):
        ours.append(read_texts(templated, Outcome(), 0.0, read) if via_relay else frame_chunks(templated, read))
        theirs.append(generic.frame(read_events(read, Outcome(), 0.0) if via_relay else read))
    error = UpstreamError(502, 'The COCOON network dropped the "stream" at 100%.', "stream_cut")
    ours.append(templated.finish(usage) if usage is not None else templated.fail(error))
    theirs.append(generic.finish(usage) if usage is not None else generic.fail(error))
    assert ours == theirs, (b"".join(ours).decode(), b"".join(theirs).decode())


def test_the_benchmark_answer_is_written_as_before() -> None:
    """The answer every benchmark streams, read whole and a chunk a read: reasoning, then text."""
    pieces = [{"reasoning_content": f" thought {i}"} for i in range(5)] + [{"content": f" word{i}"} for i in range(15)]
    chunks = [
        orjson.dumps({"id": "x", "choices": [{"index": 0, "delta": piece, "finish_reason": None}]}) for piece in pieces
    ]
    usage = {"prompt_tokens": 30, "completion_tokens": 20, "completion_tokens_details": {"reasoning_tokens": 5}}
    for size in (1, 20):
        with mock.patch("time.time", return_value=1_767_225_600.0):
            templated = ResponsesDialect().translate({"model": "m", "input": "hi"}).stream("resp_1", "m")
            generic = GenericStream({"model": "m", "input": "hi"}, "resp_1", "m")
        for start in range(0, len(chunks), size):
            read = chunks[start : start + size]
            assert read_texts(templated, Outcome(), 0.0, read) == generic.frame(read_events(read, Outcome(), 0.0))
        assert templated.finish(usage) == generic.finish(usage)


def test_usage_counts_past_64_bits_are_written_as_json() -> None:
    """The last event's counts are written by `%d`: a count orjson could not write (the network's
    usage is not ours to trust) still ends the stream in valid JSON, as the network said it."""
    stream = ResponsesDialect().translate({"model": "m", "input": "hi"}).stream("resp_1", "m")
    usage = {"prompt_tokens": 2**70, "completion_tokens": 3, "cost_nanoton": 5, "cost_ton": 5e-9}
    ended = stream.finish(usage).rpartition(b"data: ")[2]
    assert json.loads(ended)["response"]["usage"] == {
        "input_tokens": 2**70,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 3,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 2**70 + 3,
        "cost_nanoton": 5,
        "cost_ton": 5e-9,
    }


def test_a_stream_numbered_past_the_digits_held_is_written_as_before() -> None:
    """Sequence numbers are written from a table of digits that a long stream grows: an answer of
    thousands of events (texts a read and many at once, then calls, each kind of event past the
    table's end) is written as the generic encoding writes it."""
    texts = [{"reasoning_content": f"r{i}"} for i in range(3000)] + [{"content": f"w{i}%"} for i in range(3000)]
    calls = [
        {"tool_calls": [{"index": i, "id": f"call_{i}", "function": {"name": "f", "arguments": "{}"}}]}
        for i in range(2000)
    ]
    chunks = [
        orjson.dumps({"id": "x", "choices": [{"index": 0, "delta": piece, "finish_reason": None}]})
        for piece in texts + calls
    ]
    usage = {"prompt_tokens": 3, "completion_tokens": 8000, "cost_nanoton": 1}
    with mock.patch("time.time", return_value=1_767_225_600.0):
        templated = ResponsesDialect().translate({"model": "m", "input": "hi"}).stream("resp_1", "m")
        generic = GenericStream({"model": "m", "input": "hi"}, "resp_1", "m")
    start = 0
    for size in (1, 700, 1, 2500, 3, 4000, 1):
        read = chunks[start : start + size]
        assert read_texts(templated, Outcome(), 0.0, read) == generic.frame(read_events(read, Outcome(), 0.0))
        start += size
    assert start < len(chunks)
    read = chunks[start:]
    assert read_texts(templated, Outcome(), 0.0, read) == generic.frame(read_events(read, Outcome(), 0.0))
    assert templated.finish(usage) == generic.finish(usage)
