"""Anthropic's Messages API (`POST /v1/messages`) as a chat request, and its answer back.

Request: `system` (a string or text blocks), `messages` with `text`, `tool_use` and
`tool_result` blocks (`thinking` blocks in the history are dropped: the model's thoughts are
not fed back), `tools[].input_schema`, `tool_choice` (auto/any/tool/none, and
`disable_parallel_tool_use`), `stop_sequences`, `max_tokens` (required, as Anthropic requires
it), `temperature`, `top_p`, and `thinking`, which is Qwen3's reasoning switch (off unless
asked for, as Anthropic's models answer). `cache_control` is stripped wherever it is; the
network caches prompts by itself. Any other field goes into the chat body as it is, so the
network field filter drops or refuses it as it does for chat.

Answer: a `message` with content blocks (`thinking` when the model reasoned, `text`,
`tool_use` with its `input` as an object), `stop_reason` (`end_turn`, `max_tokens`, `tool_use`,
`stop_sequence`) and `usage` (`input_tokens` without the cache reads,
`cache_read_input_tokens`, `output_tokens`) with the platform's cost. A stream is Anthropic's
event sequence (`message_start`, `content_block_*`, `message_delta`, `message_stop`), and a
failure mid-stream is an `error` event. Every error is in Anthropic's shape, with its status.

A stream's events are written from bytes templates made at import from the same dicts a whole
answer is made of (`templates.py`): every event is one `%` of a few values or constant bytes,
not a dict encoded whole. Delta events carry no sequence number, so the texts of one read for
the open block are written together with no `%` at all: their JSON from one orjson call, the
separators between them replaced by the bytes between two events' texts. This runs for every
chunk of every Messages stream, which must cost little more than the chat stream it translates.
`tests/test_messages_stream.py` holds the bytes to those of every event's dict encoded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from cocoon_platform.dialects.chat import function_of, read_message, usage_numbers
from cocoon_platform.dialects.templates import (
    DECIMAL_SLOT,
    JSON_SLOT,
    LATER_JSON_SLOT,
    TEXTS,
    TEXTS_BETWEEN,
    event_templates,
)
from cocoon_platform.errors import InvalidRequest, PlatformError
from cocoon_platform.proxy.events import ChunkChoice, Delta

PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
READ_FIELDS = frozenset(
    (
        "model",
        "messages",
        "system",
        "max_tokens",
        "tools",
        "tool_choice",
        "stop_sequences",
        "temperature",
        "top_p",
        "thinking",
        "stream",
        "metadata",
        "service_tier",
        "context_management",
    )
)
# Anthropic's error type for each status the platform answers with.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}


def error_body(exc: PlatformError) -> dict[str, Any]:
    """Anthropic's error shape; the platform's own code, when it has one, rides along. The message
    is the OpenAI body's, which names a 422's field (Anthropic's shape has no `param` for it)."""
    message = exc.body()["error"]["message"]
    error: dict[str, Any] = {"type": ERROR_TYPES.get(exc.status, "api_error"), "message": message}
    if exc.code is not None:
        error["code"] = exc.code
    return {"type": "error", "error": error}


class MessagesDialect:
    endpoint = "messages"
    id_prefix = "msg_"

    def translate(self, body: dict[str, Any]) -> MessagesRequest:
        return MessagesRequest(body)

    def error(self, exc: PlatformError) -> bytes:
        return orjson.dumps(error_body(exc))


def _strip_cache_control(value: Any) -> Any:
    """`value` without any `cache_control` key, at any depth of blocks."""
    if isinstance(value, list):
        return [_strip_cache_control(item) for item in value]
    if isinstance(value, dict) and "cache_control" in value:
        return {key: item for key, item in value.items() if key != "cache_control"}
    return value


class MessagesRequest:
    """One Messages request and the chat body it becomes."""

    def __init__(self, body: dict[str, Any]) -> None:
        if body.get("model") is None or body.get("messages") is None:
            raise InvalidRequest("model and messages are required")
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise InvalidRequest("max_tokens: Field required", param="max_tokens")
        self.body = body
        self.stop_sequences = body.get("stop_sequences") or []
        chat: dict[str, Any] = {name: value for name, value in body.items() if name not in READ_FIELDS}
        chat["model"] = body["model"]
        chat["max_tokens"] = max_tokens
        chat["messages"] = [*_system(body.get("system")), *_messages(body["messages"])]
        for name in ("temperature", "top_p", "stream"):
            if body.get(name) is not None:
                chat[name] = body[name]
        if self.stop_sequences:
            chat["stop"] = self.stop_sequences
        tools = body.get("tools")
        if tools:
            if not isinstance(tools, list):
                raise InvalidRequest("tools must be a list", param="tools")
            chat["tools"] = [_tool(tool, index) for index, tool in enumerate(tools)]
        choice = body.get("tool_choice")
        if choice is not None:
            chat.update(_tool_choice(choice))
        thinking = body.get("thinking")
        enabled = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
        chat["chat_template_kwargs"] = {"enable_thinking": enabled}
        self.chat = chat

    def answer(self, document: dict[str, Any], answer_id: str) -> dict[str, Any]:
        message = read_message(document)
        content: list[dict[str, Any]] = []
        if message.reasoning:
            content.append(_thinking_block(message.reasoning))
        if message.text or not message.tool_calls:
            content.append(_text_block(message.text))
        for index, call in enumerate(message.tool_calls):
            name, arguments = function_of(call)
            call_id = call.get("id")
            block_id = call_id if isinstance(call_id, str) else f"toolu_{answer_id[4:]}_{index}"
            content.append(_tool_use_block(block_id, name, _input(arguments)))
        stop_reason, stop_sequence = self._stop(message.finish_reason, message.stop_reason)
        model = str(document.get("model") or self.body["model"])
        prompt, cached, output_tokens, _, cost_nanoton, cost_ton = usage_numbers(document.get("usage"))
        usage = _usage(prompt - cached, cached, output_tokens, cost_nanoton, cost_ton)
        return _message(answer_id, model, content, stop_reason, stop_sequence, usage)

    def _stop(self, finish_reason: str | None, stop_reason: Any) -> tuple[str, str | None]:
        if finish_reason == "stop" and isinstance(stop_reason, str) and stop_reason in self.stop_sequences:
            return "stop_sequence", stop_reason
        return STOP_REASONS.get(finish_reason or "stop", "end_turn"), None

    def stream(self, answer_id: str, model: str) -> MessagesStream:
        return MessagesStream(self, answer_id, model)


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    return [{"role": "system", "content": _text_blocks(system, "system")}]


def _text_blocks(blocks: Any, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{where} must be a string or a list of blocks", param=where)
    texts = []
    for index, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text" or not isinstance(block.get("text"), str):
            raise InvalidRequest(
                f"{where}[{index}]: only text blocks are supported by the COCOON network (got {kind!r})", param=where
            )
        texts.append(block["text"])
    return "\n".join(texts)


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list):
        raise InvalidRequest("messages must be a list", param="messages")
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"{where}.role must be 'user' or 'assistant'", param="messages")
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise InvalidRequest(f"{where}.content must be a string or a list of blocks", param="messages")
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for block_index, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            block_where = f"{where}.content[{block_index}]"
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "tool_use" and role == "assistant":
                try:
                    arguments = orjson.dumps(block.get("input") or {}).decode()
                except orjson.JSONEncodeError:  # nested deeper than orjson writes (254 levels)
                    raise InvalidRequest(
                        f"'{block_where}.input' is nested too deeply", param=f"{block_where}.input"
                    ) from None
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {"name": block.get("name"), "arguments": arguments},
                    }
                )
            elif kind == "tool_result" and role == "user":
                result = _text_blocks(block.get("content") or "", f"{block_where}.content")
                if block.get("is_error"):
                    result = f"Error: {result}"
                out.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": result})
            elif kind in ("thinking", "redacted_thinking") and role == "assistant":
                continue  # the model's earlier thoughts are not part of its prompt
            else:
                raise InvalidRequest(
                    f"{block_where}: {kind!r} blocks are not supported by the COCOON network in a " + role + " message",
                    param="messages",
                )
        if calls:
            out.append({"role": "assistant", "content": "\n".join(texts) or None, "tool_calls": calls})
        elif texts or not content:
            out.append({"role": role, "content": "\n".join(texts)})
    return out


def _tool(tool: Any, index: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "custom") != "custom" or not isinstance(tool.get("name"), str):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise InvalidRequest(
            f"tools[{index}]: only custom tools with a name and input_schema are supported "
            f"(got {kind!r}); the COCOON network runs no server tools",
            param="tools",
        )
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": _strip_cache_control(tool.get("input_schema")) or {"type": "object"},
    }
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> dict[str, Any]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    chat: dict[str, Any]
    if kind == "auto":
        chat = {"tool_choice": "auto"}
    elif kind == "any":
        chat = {"tool_choice": "required"}
    elif kind == "none":
        chat = {"tool_choice": "none"}
    elif kind == "tool":
        chat = {"tool_choice": {"type": "function", "function": {"name": choice.get("name")}}}
    else:
        raise InvalidRequest("tool_choice.type must be auto, any, tool or none", param="tool_choice")
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False
    return chat


def _input(arguments: str) -> Any:
    """A tool call's arguments as the object `tool_use.input` is."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# A message, its content blocks and its usage: whole answers' and (with markers for their values)
# a stream's templates'.
def _message(
    answer_id: Any, model: Any, content: list[Any], stop_reason: Any, stop_sequence: Any, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": answer_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


def _thinking_block(thinking: Any) -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": ""}


def _text_block(text: Any) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _tool_use_block(block_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": block_id, "name": name, "input": arguments}


def _usage(input_tokens: Any, cache_read: Any, output_tokens: Any, cost_nanoton: Any, cost_ton: Any) -> dict[str, Any]:
    """`input_tokens` counts the prompt's tokens without the cache reads."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output_tokens,
        "cost_nanoton": cost_nanoton,
        "cost_ton": cost_ton,
    }


# The stream's events. `_STARTED`: the bytes around the answer id and the model (JSON). `_ENDED`,
# the last two events, one for each stop reason; slots: the stop sequence (JSON), the usage's
# numbers (`_usage`'s: its ints, then its float as JSON). `_FAILED`'s slot: the error (JSON).
_STARTED = event_templates(
    (
        "message_start",
        {
            "message": _message(
                JSON_SLOT,
                JSON_SLOT,
                [],
                None,
                None,
                {"input_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 0},
            )
        },
    )
).split(b"%b")
_ENDED = {
    reason: event_templates(
        (
            "message_delta",
            {
                "delta": {"stop_reason": reason, "stop_sequence": JSON_SLOT},
                "usage": _usage(*(DECIMAL_SLOT,) * 4, JSON_SLOT),
            },
        ),
        ("message_stop", {}),
    )
    for reason in {*STOP_REASONS.values(), "stop_sequence"}
}
_FAILED = event_templates(("error", {"error": JSON_SLOT}))
# The events that name a block's index are written for the first indices at import (a `%` costs
# as much as a Python call): an answer seldom has more blocks. Beyond, they are filled.
_INDEXED = 16
_STOPPED = event_templates(("content_block_stop", {"index": DECIMAL_SLOT}))  # slot: the index
_STOPPED_AT = tuple(_STOPPED % index for index in range(_INDEXED))
_DELTA_END = b"}}\n\n"  # every delta event's bytes after its text's JSON


@dataclass(frozen=True, slots=True)
class _Block:
    """A kind of content block: its opening event, and its delta events' bytes before their
    text's JSON, each a template of the index and made for the first indices (a tool_use's
    opening event is then a template of its id and name, JSON)."""

    opened: bytes
    delta: bytes
    opened_at: tuple[bytes, ...]
    delta_at: tuple[bytes, ...]


def _block(block: dict[str, Any], delta_type: str, key: str) -> _Block:
    opened = event_templates(("content_block_start", {"index": DECIMAL_SLOT, "content_block": block}))
    delta = event_templates(
        ("content_block_delta", {"index": DECIMAL_SLOT, "delta": {"type": delta_type, key: JSON_SLOT}})
    )
    head, _, end = delta.rpartition(b"%b")
    if end != _DELTA_END:
        raise ValueError(f"a delta event does not end with its text: {delta!r}")
    indices = range(_INDEXED)
    return _Block(opened, head, tuple(opened % i for i in indices), tuple(head % i for i in indices))


_THINKING = _block(_thinking_block(""), "thinking_delta", "thinking")
_TEXT = _block(_text_block(""), "text_delta", "text")
_TOOL_USE = _block(_tool_use_block(LATER_JSON_SLOT, LATER_JSON_SLOT, {}), "input_json_delta", "partial_json")


class MessagesStream:
    """Anthropic's event sequence for one streamed answer: a content block opens as its kind of
    text arrives (thinking, text, tool_use) and closes when the next opens.

    The texts of one read for the open block are held, and their delta events written together
    at the end of the read, or when the block closes (`write_held`)."""

    __slots__ = (
        "request",
        "answer_id",
        "model",
        "started",
        "index",
        "open",
        "answered",
        "finish_reason",
        "stop_reason",
        "held",
        "delta_head",
    )
    delta_head: bytes  # set when a block opens: its delta events' bytes before their text
    # The kinds of block reasoning and answer text go in (`proxy.relay.read_texts`).
    thinking = _THINKING
    answering = _TEXT

    def __init__(self, request: MessagesRequest, answer_id: str, model: str) -> None:
        self.request = request
        self.answer_id = answer_id
        self.model = model
        self.started = False
        self.index = -1  # of the open block
        self.open: _Block | None = None  # of the open block
        self.answered = False  # a text or tool_use block was opened
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self.held: list[str] = []  # of the open block, the texts whose delta events are not written yet

    def begin(self) -> list[bytes]:
        """The first event (called once: `started` says when)."""
        self.started = True
        before, between, after = _STARTED
        return [before, orjson.dumps(self.answer_id), between, orjson.dumps(self.model), after]

    def choices(self, choices: list[ChunkChoice], out: list[bytes]) -> None:
        """Any chunk's choices: the first's ending and delta, if it is there."""
        for choice in choices:
            if not choice.index:
                if choice.finish_reason is not None:
                    self.finish_reason, self.stop_reason = choice.finish_reason, choice.stop_reason
                if choice.delta is not None:
                    self._delta(choice.delta, out)

    def _delta(self, delta: Delta, out: list[bytes]) -> None:
        """Any delta: its reasoning, its text, its tool calls, in this order."""
        thought = delta.reasoning_content or delta.reasoning
        if thought:
            self._text(_THINKING, thought, out)
        if delta.content:
            self._text(_TEXT, delta.content, out)
        for call in delta.tool_calls or ():
            function = call.function
            if call.id is not None or self.open is not _TOOL_USE:
                block_id = orjson.dumps(call.id or f"toolu_{self.answer_id[4:]}")
                self._open(_TOOL_USE, out, block_id, orjson.dumps((function.name if function else None) or ""))
            if function is not None and function.arguments:
                self.held.append(function.arguments)

    def _text(self, kind: _Block, text: str, out: list[bytes]) -> None:
        if kind is not self.open:
            self._open(kind, out)
        self.held.append(text)

    def write_held(self, out: list[bytes]) -> None:
        """The delta events of the held texts. A stream read at the model's pace brings one text
        a read, between its event's head and end. Several are encoded in one call, and the
        separators between their JSON replaced by the bytes between two events' texts."""
        held = self.held
        head = self.delta_head
        if len(held) == 1:
            out += (head, orjson.dumps(held[0]), _DELTA_END)
        else:
            texts = orjson.dumps(held, option=orjson.OPT_INDENT_2)[TEXTS]
            out += (head, texts.replace(TEXTS_BETWEEN, _DELTA_END + head), _DELTA_END)
        held.clear()

    def _open(self, kind: _Block, out: list[bytes], *block: bytes) -> None:
        """Open a block of `kind` (`block`: a tool_use's id and name, JSON), closing the open one
        (if any: a call costs more than the check)."""
        if self.open is not None:
            self._close(out)
        self.index = index = self.index + 1
        self.open = kind
        if kind is not _THINKING:
            self.answered = True
        if index < _INDEXED:
            opened, self.delta_head = kind.opened_at[index], kind.delta_at[index]
        else:
            opened, self.delta_head = kind.opened % index, kind.delta % index
        out.append(opened % block if block else opened)

    switch = _open  # `TextStream.switch`

    def _close(self, out: list[bytes]) -> None:
        """Close the open block, if any: its held deltas, then its stop event."""
        if self.open is not None:
            if self.held:
                self.write_held(out)
            index = self.index
            out.append(_STOPPED_AT[index] if index < _INDEXED else _STOPPED % index)
            self.open = None

    def finish(self, usage: dict[str, Any]) -> bytes:
        out = [] if self.started else self.begin()
        if not self.answered:
            self._open(_TEXT, out)  # a text or tool_use block, as a whole answer has
        self._close(out)
        stop_reason, stop_sequence = self.request._stop(self.finish_reason, self.stop_reason)
        prompt, cached, output_tokens, _, cost_nanoton, cost_ton = usage_numbers(usage)
        out.append(
            _ENDED[stop_reason]
            % (
                b"null" if stop_sequence is None else orjson.dumps(stop_sequence),
                prompt - cached,
                cached,
                output_tokens,
                cost_nanoton,
                orjson.dumps(cost_ton),  # as orjson writes a float (Python's `%r` does not)
            )
        )
        return b"".join(out)

    def fail(self, error: PlatformError) -> bytes:
        out = [] if self.started else self.begin()
        self._close(out)
        out.append(_FAILED % orjson.dumps(error_body(error)["error"]))
        return b"".join(out)
