"""A non-streamed answer assembled from the network's stream (issue 14, ruling 1).

Every request goes upstream as a stream with `include_usage`, even when the caller asked for one
JSON document: the tokens generated up to any cut, timeout or departure are then known and
billed, and the final usage chunk carries the network's cost fields (`prompt_total_cost`,
`completion_total_cost`, `total_cost`). The document built here has the fields of the network's
own non-streamed answer:

- top level: the first chunk's fields (`id`, `created`, `model`, any other), `object` named as a
  whole answer (`chat.completion`, `text_completion`), `choices` in index order, then `usage`;
- a chat choice: `index`, `message` (`role`, `content`, `reasoning_content`, `tool_calls`, and any
  other field a delta carried: strings joined, tool calls merged by their index), then the
  choice's own fields (`logprobs`, `finish_reason`, ...) as the last chunk that set them said;
- a completion choice: `index`, `text`, then its own fields.

The usual chunk (the fields vLLM sends, text in the delta, no tool calls; `stop_reason` on a
choice's finishing chunk) is decoded by msgspec into typed objects and merged in a short loop; a
read holding anything else, down to one unknown field, goes through the general path, which keeps
every field. Both build the same document (`tests/test_assemble.py` holds them to it): the
general path alone cost a plain request about as much CPU as the rest of its relay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from cocoon_platform.errors import UpstreamError
from cocoon_platform.proxy.events import DECODE_ERRORS, DONE, EventSplitter
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.proxy.relay import count_delivered, first_event
from cocoon_platform.upstream.http import ConnectionBroken, UpstreamResponse

WHOLE_OBJECT = {"chat": "chat.completion", "completions": "text_completion"}


class _UsualDelta(msgspec.Struct, forbid_unknown_fields=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class _UsualChoice(msgspec.Struct, forbid_unknown_fields=True):
    index: int
    delta: _UsualDelta
    logprobs: None = None
    finish_reason: str | None = None
    # vLLM's, on a choice's finishing chunk only: the stop string or token id that ended it, or
    # null. UNSET where a chunk has none, so that the document has it only if the network said it.
    stop_reason: str | int | msgspec.UnsetType | None = msgspec.UNSET


class _UsualChunk(msgspec.Struct, forbid_unknown_fields=True):
    """A chat chunk with nothing but the fields vLLM sends; `usage` only on the last."""

    id: str
    object: str
    created: int
    model: str
    choices: list[_UsualChoice]
    usage: dict[str, Any] | None = None


_decode_usual = msgspec.json.Decoder(list[_UsualChunk]).decode


class _Choice:
    __slots__ = ("index", "parts", "fields", "tool_calls")

    def __init__(self, index: int) -> None:
        self.index = index
        self.parts: dict[str, list[str]] = {}  # text fields of the message (or `text`), in pieces
        self.fields: dict[str, Any] = {}  # other fields: the choice's own, and a message's non-text ones
        self.tool_calls: dict[int, dict[str, Any]] = {}


async def collect(
    response: UpstreamResponse, assembler: Assembler, outcome: Outcome, started: float, watch_client: Callable[[], None]
) -> None:
    """Read the network's stream into `assembler`, counting what it delivers in `outcome` as the
    relay counts a stream (`relay.count_delivered`), until it ends; a broken connection ends it
    with `outcome.error` set, the caller's deadline raises through."""
    splitter = EventSplitter()
    try:
        while True:
            if not response.buffered:
                watch_client()
            data = await response.next_piece()
            assembler.feed(splitter.feed(data) if data else splitter.finish(), outcome, started)
            if not data:
                break
    except ConnectionBroken:
        outcome.error = UpstreamError(502, "The COCOON network dropped the answer.", "stream_cut")


class Assembler:
    """Feed the stream's event payloads, then take the `document`."""

    __slots__ = ("endpoint", "head", "choices")

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.head: dict[str, Any] | None = None
        self.choices: dict[int, _Choice] = {}

    def feed(self, payloads: list[bytes], outcome: Outcome, started: float) -> None:
        """The events of one read: parsed in one call (each alone if one is not JSON), merged into
        the answer, and what they deliver counted."""
        if payloads and payloads[-1] == DONE:
            outcome.upstream_done = True
            payloads = [p for p in payloads if p != DONE]
        if not payloads:
            return
        joined = b"[" + b",".join(payloads) + b"]"
        if self.endpoint == "chat":
            try:
                usual = _decode_usual(joined)
            except DECODE_ERRORS:
                pass
            else:
                self._add_usual(usual, outcome, started)
                return
        try:
            chunks = orjson.loads(joined)
        except orjson.JSONDecodeError:
            chunks = []
            for payload in payloads:
                if payload == DONE:
                    outcome.upstream_done = True
                    continue
                try:
                    chunks.append(orjson.loads(payload))
                except orjson.JSONDecodeError:
                    continue
        for chunk in chunks:
            if not isinstance(chunk, dict):
                continue
            if outcome.first_token_seconds is None:
                first_event(outcome, started, chunk.get("id"))
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                outcome.usage = usage
            if not chunk.get("choices") and "error" in chunk:
                outcome.error = UpstreamError(502, "The COCOON network failed mid-answer.", "stream_error")
            self._add(chunk, outcome)

    def _add_usual(self, chunks: list[_UsualChunk], outcome: Outcome, started: float) -> None:
        """The general path's merge (`_add`), for the typed usual chunks: the same fields land in
        the same places, counted as `count_delivered` counts."""
        if self.head is None and chunks:
            first = chunks[0]
            self.head = {"id": first.id, "object": first.object, "created": first.created, "model": first.model}
        if outcome.first_token_seconds is None and chunks:
            first_event(outcome, started, chunks[0].id)
        completion = reasoning = size = 0
        for chunk in chunks:
            if chunk.usage is not None:
                outcome.usage = chunk.usage
            for raw in chunk.choices:
                choice = self.choices.get(raw.index)
                if choice is None:
                    choice = self.choices[raw.index] = _Choice(raw.index)
                parts, fields, delta = choice.parts, choice.fields, raw.delta
                if delta.role is not None:
                    fields["message.role"] = delta.role
                if delta.content is not None:
                    parts.setdefault("content", []).append(delta.content)
                if delta.reasoning_content is not None:
                    parts.setdefault("reasoning_content", []).append(delta.reasoning_content)
                if delta.reasoning is not None:
                    parts.setdefault("reasoning", []).append(delta.reasoning)
                if "logprobs" not in fields:
                    fields["logprobs"] = None
                if raw.finish_reason is not None or "finish_reason" not in fields:
                    fields["finish_reason"] = raw.finish_reason
                stop = raw.stop_reason
                if stop is not msgspec.UNSET and (stop is not None or "stop_reason" not in fields):
                    fields["stop_reason"] = stop
                thought = delta.reasoning_content or delta.reasoning
                if thought:
                    reasoning += 1
                    completion += 1
                    size += len(thought)
                elif delta.content:
                    completion += 1
                    size += len(delta.content)
        outcome.delivered_completion += completion
        outcome.delivered_reasoning += reasoning
        outcome.delivered_bytes += size

    def _add(self, chunk: dict[str, Any], outcome: Outcome) -> None:
        if self.head is None:
            self.head = {k: v for k, v in chunk.items() if k not in ("choices", "usage")}
        for raw in chunk.get("choices") or ():
            if not isinstance(raw, dict):
                continue
            index = raw.get("index")
            index = index if isinstance(index, int) else 0
            choice = self.choices.get(index)
            if choice is None:
                choice = self.choices[index] = _Choice(index)
            fields = choice.fields
            for name, value in raw.items():
                if name == "delta":
                    if isinstance(value, dict):
                        self._add_delta(choice, value)
                        count_delivered(
                            outcome, value.get("reasoning_content") or value.get("reasoning"), value.get("content")
                        )
                elif name == "text":
                    if isinstance(value, str):
                        choice.parts.setdefault("text", []).append(value)
                        count_delivered(outcome, None, value)
                elif name != "index" and (value is not None or name not in fields):
                    fields[name] = value

    @staticmethod
    def _add_delta(choice: _Choice, delta: dict[str, Any]) -> None:
        for name, value in delta.items():
            if isinstance(value, str) and name != "role":
                choice.parts.setdefault(name, []).append(value)
            elif name == "tool_calls" and isinstance(value, list):
                for call in value:
                    if isinstance(call, dict):
                        _merge_call(choice.tool_calls, call)
            elif value is not None:
                choice.fields["message." + name] = value

    def document(self, usage: dict[str, Any] | None) -> dict[str, Any]:
        """The whole answer, with `usage` (None: the network never reported it)."""
        document = dict(self.head or {})
        document["object"] = WHOLE_OBJECT[self.endpoint]
        document["choices"] = [self._choice(self.choices[i]) for i in sorted(self.choices)]
        if usage is not None:
            document["usage"] = usage
        return document

    def _choice(self, choice: _Choice) -> dict[str, Any]:
        texts = {name: "".join(parts) for name, parts in choice.parts.items()}
        out: dict[str, Any] = {"index": choice.index}
        if self.endpoint == "chat":
            message: dict[str, Any] = {
                "role": choice.fields.get("message.role", "assistant"),
                "content": texts.pop("content", None),
                "reasoning_content": texts.pop("reasoning_content", None),
                "tool_calls": [choice.tool_calls[i] for i in sorted(choice.tool_calls)],
            }
            message.update(texts)
            for name, value in choice.fields.items():
                if name.startswith("message.") and name != "message.role":
                    message[name[8:]] = value
            out["message"] = message
        else:
            out["text"] = texts.get("text", "")
        for name, value in choice.fields.items():
            if not name.startswith("message."):
                out[name] = value
        out.setdefault("logprobs", None)
        out.setdefault("finish_reason", None)
        return out


def _merge_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    """A tool call's delta merged into the call of its index (OpenAI's streaming rule: the first
    delta names it, later ones append to `function.arguments`)."""
    index = delta.get("index")
    index = index if isinstance(index, int) else len(calls)
    call = calls.get(index)
    if call is None:
        call = calls[index] = {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
    for name, value in delta.items():
        if name == "function" and isinstance(value, dict):
            function = call["function"]
            for key, part in value.items():
                if key == "arguments" and isinstance(part, str):
                    function["arguments"] += part
                elif part is not None:
                    function[key] = part
        elif name != "index" and value is not None:
            call[name] = value
