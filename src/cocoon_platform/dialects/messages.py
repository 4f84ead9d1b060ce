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
"""

from __future__ import annotations

from typing import Any

import orjson

from cocoon_platform.dialects.chat import first_choices, function_of, read_message, read_usage
from cocoon_platform.errors import InvalidRequest, PlatformError
from cocoon_platform.proxy.events import Chunk, Delta

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
            content.append({"type": "thinking", "thinking": message.reasoning, "signature": ""})
        if message.text or not message.tool_calls:
            content.append({"type": "text", "text": message.text})
        for index, call in enumerate(message.tool_calls):
            name, arguments = function_of(call)
            call_id = call.get("id")
            content.append(
                {
                    "type": "tool_use",
                    "id": call_id if isinstance(call_id, str) else f"toolu_{answer_id[4:]}_{index}",
                    "name": name,
                    "input": _input(arguments),
                }
            )
        stop_reason, stop_sequence = self._stop(message.finish_reason, message.stop_reason)
        return {
            "id": answer_id,
            "type": "message",
            "role": "assistant",
            "model": str(document.get("model") or self.body["model"]),
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": _usage(document.get("usage")),
        }

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


def _usage(chat_usage: Any) -> dict[str, Any]:
    usage = read_usage(chat_usage)
    return {
        "input_tokens": usage.prompt - usage.cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": usage.completion,
        "cost_nanoton": usage.cost_nanoton,
        "cost_ton": usage.cost_ton,
    }


def _event(kind: str, fields: dict[str, Any]) -> bytes:
    return b"".join((b"event: ", kind.encode(), b"\ndata: ", orjson.dumps({"type": kind, **fields}), b"\n\n"))


_BLOCKS: dict[str, dict[str, Any]] = {
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
    "text": {"type": "text", "text": ""},
}
_DELTA_KEYS = {
    "thinking": (b"thinking_delta", b"thinking"),
    "text": (b"text_delta", b"text"),
    "tool_use": (b"input_json_delta", b"partial_json"),
}


class MessagesStream:
    """Anthropic's event sequence for one streamed answer: a content block opens as its kind of
    text arrives (thinking, text, tool_use) and closes when the next opens."""

    def __init__(self, request: MessagesRequest, answer_id: str, model: str) -> None:
        self.request = request
        self.answer_id = answer_id
        self.model = model
        self.started = False
        self.index = -1  # of the open block
        self.kind: str | None = None
        self.answered = False  # a text or tool_use block was opened
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self.delta_event = b""  # the open block's delta event: a template (see _open)

    def _start(self) -> list[bytes]:
        self.started = True
        message: dict[str, Any] = {
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
        return [_event("message_start", {"message": message})]

    def frame(self, payloads: list[bytes], chunks: list[Chunk] | None = None, /) -> bytes:
        out = [] if self.started else self._start()
        for choice in first_choices(payloads, chunks):
            if choice.finish_reason is not None:
                self.finish_reason, self.stop_reason = choice.finish_reason, choice.stop_reason
            delta = choice.delta
            if delta is None:
                continue
            thought = delta.reasoning_content or delta.reasoning
            text = delta.content
            if delta.tool_calls is None and not (thought and text):
                # The usual chunk, one piece of text: inline, from the open block's template.
                if thought:
                    text, kind = thought, "thinking"
                elif text:
                    kind = "text"
                else:
                    continue
                if kind != self.kind:
                    self._open(kind, out, _BLOCKS[kind])
                out.append(self.delta_event % orjson.dumps(text))
            else:
                self._choice(delta, out)
        return b"".join(out)

    def _choice(self, delta: Delta, out: list[bytes]) -> None:
        thought = delta.reasoning_content or delta.reasoning
        if thought:
            self._delta("thinking", thought, out)
        if delta.content:
            self._delta("text", delta.content, out)
        for call in delta.tool_calls or ():
            function = call.function
            if call.id is not None or self.kind != "tool_use":
                self._open(
                    "tool_use",
                    out,
                    {
                        "type": "tool_use",
                        "id": call.id or f"toolu_{self.answer_id[4:]}",
                        "name": (function.name if function else None) or "",
                        "input": {},
                    },
                )
            if function is not None and function.arguments:
                self._delta("tool_use", function.arguments, out)

    def _delta(self, kind: str, text: str, out: list[bytes]) -> None:
        if self.kind != kind:
            self._open(kind, out, _BLOCKS[kind])
        out.append(self.delta_event % orjson.dumps(text))

    def _open(self, kind: str, out: list[bytes], block: dict[str, Any]) -> None:
        self._close(out)
        self.index += 1
        self.kind = kind
        self.answered = self.answered or kind != "thinking"
        out.append(_event("content_block_start", {"index": self.index, "content_block": block}))
        delta_type, key = _DELTA_KEYS[kind]
        # The hot event, one per token: a template of its text.
        self.delta_event = b"".join(
            (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":',
                str(self.index).encode(),
                b',"delta":{"type":"',
                delta_type,
                b'","',
                key,
                b'":%b}}\n\n',
            )
        )

    def _close(self, out: list[bytes]) -> None:
        if self.kind is not None:
            out.append(_event("content_block_stop", {"index": self.index}))
            self.kind = None

    def finish(self, usage: dict[str, Any]) -> bytes:
        out = [] if self.started else self._start()
        if not self.answered:
            self._open("text", out, {"type": "text", "text": ""})  # a text or tool_use block, as a whole answer
        self._close(out)
        stop_reason, stop_sequence = self.request._stop(self.finish_reason, self.stop_reason)
        out.append(
            _event(
                "message_delta",
                {"delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence}, "usage": _usage(usage)},
            )
        )
        out.append(_event("message_stop", {}))
        return b"".join(out)

    def fail(self, error: PlatformError) -> bytes:
        out = [] if self.started else self._start()
        self._close(out)
        out.append(_event("error", error_body(error)))
        return b"".join(out)
