"""OpenAI's Responses API (`POST /v1/responses`) as a chat request, and its answer back.

Request: `input` (a string, or items: `message` with `input_text`/`output_text` parts,
`function_call`, `function_call_output`; `reasoning` items are dropped: the model's thoughts
are not fed back), `instructions` (the first system message), `max_output_tokens`,
`temperature`, `top_p`, function `tools` (flat shape) and `tool_choice` (through the chat
path's tool support), `parallel_tool_calls`, `text.format` (`response_format`) and
`reasoning.effort` (`none`/`minimal` turn Qwen3's thinking off). Any other field goes into the
chat body as it is, so the network field filter drops or refuses it as it does for chat.

The platform keeps no conversation: `store` is treated as false, and `previous_response_id`
(or `conversation`) is a 400 that says to send the whole input.

Answer: a `response` object: `output` holds a `reasoning` item (its summary is the model's
thoughts) when the model reasoned, the `message` with its `output_text`, and `function_call`
items; `usage` has the Responses counts and the cost fields chat answers carry. A stream is
the typed event sequence, every event numbered (`sequence_number`), ending with
`response.completed` (`response.incomplete` when `max_output_tokens` cut it, `response.failed`
when the network did), with no `[DONE]`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from cocoon_platform.dialects.chat import first_choices, function_of, read_message, read_usage, text_of
from cocoon_platform.errors import InvalidRequest, PlatformError
from cocoon_platform.proxy.events import Chunk, Delta
from cocoon_platform.proxy.request import _int_field, check_json_schema, only_fields

PATH = "/v1/responses"
MESSAGE_PARTS = frozenset(("input_text", "output_text", "text", "refusal"))
OUTPUT_PARTS = frozenset(("input_text", "output_text", "text"))
ROLES = frozenset(("user", "assistant", "system", "developer"))
# Fields of the request this module reads (the rest go to the chat body for the field filter).
READ_FIELDS = frozenset(
    (
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "stream",
        "store",
        "previous_response_id",
        "conversation",
        "include",
        "truncation",
        "background",
        "stream_options",
    )
)
# Echoed in the response object as the request set them.
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


class ResponsesDialect:
    endpoint = "responses"
    id_prefix = "resp_"

    def translate(self, body: dict[str, Any]) -> ResponsesRequest:
        return ResponsesRequest(body)

    def error(self, exc: PlatformError) -> bytes:
        return exc.to_bytes()  # OpenAI's error shape, as on the chat path


class ResponsesRequest:
    """One Responses request and the chat body it becomes."""

    def __init__(self, body: dict[str, Any]) -> None:
        for name in ("previous_response_id", "conversation"):
            if body.get(name) is not None:
                raise InvalidRequest(
                    f"'{name}' is not supported: the platform keeps no conversation (store is always false). "
                    "Send the whole conversation in 'input' on every request.",
                    param=name,
                )
        if body.get("background"):
            raise InvalidRequest("'background' is not supported: answers are not stored.", param="background")
        if "input" not in body or "model" not in body:
            raise InvalidRequest("model and input are required")
        self.body = body
        chat: dict[str, Any] = {name: value for name, value in body.items() if name not in READ_FIELDS}
        chat["model"] = body["model"]
        chat["messages"] = _messages(body.get("instructions"), body["input"])
        if body.get("stream") is not None:
            chat["stream"] = body["stream"]
        for name in ("temperature", "top_p", "parallel_tool_calls"):
            if body.get(name) is not None:
                chat[name] = body[name]
        if body.get("max_output_tokens") is not None:
            # Checked here, under the caller's name for it (the chat check would name max_tokens).
            chat["max_tokens"] = _int_field(body, "max_output_tokens", 1)
        if body.get("tools"):
            chat["tools"] = [_tool(tool, index) for index, tool in enumerate(_list(body["tools"], "tools"))]
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
        text = body.get("text")
        if text is not None:
            if not isinstance(text, dict):
                raise InvalidRequest("'text' must be an object", param="text")
            if (response_format := _response_format(text.get("format"))) is not None:
                chat["response_format"] = response_format
        reasoning = body.get("reasoning")
        if isinstance(reasoning, dict) and reasoning.get("effort") in ("none", "minimal"):
            chat["chat_template_kwargs"] = {"enable_thinking": False}
        self.chat = chat

    def answer(self, document: dict[str, Any], answer_id: str) -> dict[str, Any]:
        message = read_message(document)
        suffix = answer_id.removeprefix("resp_")
        output: list[dict[str, Any]] = []
        if message.reasoning:
            output.append(_reasoning_item(suffix, message.reasoning))
        if message.text or not message.tool_calls:
            output.append(_message_item(suffix, message.text))
        for index, call in enumerate(message.tool_calls):
            name, arguments = function_of(call)
            call_id = call.get("id")
            output.append(
                _call_item(
                    suffix, index, call_id if isinstance(call_id, str) else f"call_{suffix}_{index}", name, arguments
                )
            )
        response = self._response(
            answer_id,
            str(document.get("model") or self.body["model"]),
            int(document.get("created") or time.time()),
            output,
        )
        _finish(response, message.finish_reason, document.get("usage"))
        return response

    def stream(self, answer_id: str, model: str) -> ResponsesStream:
        return ResponsesStream(self, answer_id, model)

    def _response(self, answer_id: str, model: str, created: int, output: list[dict[str, Any]]) -> dict[str, Any]:
        body = self.body
        response: dict[str, Any] = {
            "id": answer_id,
            "object": "response",
            "created_at": created,
            "status": "in_progress",
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": model,
            "output": output,
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
        return response


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"'{name}' must be a list", param=name)
    return value


def _messages(instructions: Any, items: Any) -> list[dict[str, Any]]:
    """The chat messages for `instructions` and `input`."""
    messages: list[dict[str, Any]] = []
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("'instructions' must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
        return messages
    for index, item in enumerate(_list(items, "input")):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in ROLES:  # a list or an object is no role (nor hashable)
                raise InvalidRequest(f"{where}.role must be one of user, assistant, system, developer", param="input")
            messages.append({"role": role, "content": text_of(item.get("content"), f"{where}.content", MESSAGE_PARTS)})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": text_of(output, f"{where}.output", OUTPUT_PARTS),
                }
            )
        elif kind == "reasoning":
            continue  # the model's earlier thoughts are not part of its prompt
        else:
            raise InvalidRequest(
                f"{where}: items of type {kind!r} are not supported by the COCOON network "
                "(message, function_call, function_call_output and reasoning are)",
                param="input",
            )
    return messages


def _tool(tool: Any, index: int) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise InvalidRequest(
            f"tools[{index}]: only function tools are supported (got {kind!r}); "
            "the COCOON network runs no hosted tools",
            param="tools",
        )
    function = {name: tool[name] for name in ("name", "description", "parameters", "strict") if name in tool}
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(choice, str):
        return choice
    raise InvalidRequest(
        "tool_choice must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}", param="tool_choice"
    )


def _response_format(form: Any) -> dict[str, Any] | None:
    """`text.format` as the chat request's `response_format`, checked as OpenAI checks it (the
    chat check would name `response_format`, which this caller never sent)."""
    if form is None:
        return None
    kind = form.get("type") if isinstance(form, dict) else None
    if kind == "json_schema":
        schema = {name: value for name, value in form.items() if name != "type"}
        check_json_schema(schema, "text.format", "text.format")
        return {"type": "json_schema", "json_schema": schema}
    if kind not in ("text", "json_object"):
        raise InvalidRequest("text.format.type must be text, json_object or json_schema", param="text.format")
    only_fields(form, ("type",), "text.format")
    return None if kind == "text" else {"type": "json_object"}


def _reasoning_item(suffix: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": f"rs_{suffix}", "summary": [{"type": "summary_text", "text": text}]}


def _message_item(suffix: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "type": "message",
        "id": f"msg_{suffix}",
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def _call_item(
    suffix: str, index: int, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{suffix}_{index}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _usage(chat_usage: Any) -> dict[str, Any]:
    usage = read_usage(chat_usage)
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": {"cached_tokens": usage.cached},
        "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.prompt + usage.completion,
        "cost_nanoton": usage.cost_nanoton,
        "cost_ton": usage.cost_ton,
    }


def _finish(response: dict[str, Any], finish_reason: str | None, chat_usage: Any) -> None:
    """Status, the reason an answer is incomplete, and usage, from the chat answer's end."""
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    else:
        response["status"] = "completed"
    response["usage"] = _usage(chat_usage)


class ResponsesStream:
    """The typed event sequence for one streamed answer. Items open as their kind of text
    arrives (reasoning, then the message, then function calls) and close when the next opens."""

    def __init__(self, request: ResponsesRequest, answer_id: str, model: str) -> None:
        self.request = request
        self.answer_id = answer_id
        self.suffix = answer_id.removeprefix("resp_")
        self.response = request._response(answer_id, model, int(time.time()), [])
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # items done
        self.kind: str | None = None  # of the open item: "reasoning", "message" or "call"
        self.text: list[str] = []  # of the open item
        self.call: dict[str, Any] | None = None  # the open function_call item
        self.calls = 0
        self.finish_reason: str | None = None
        self.delta_event = b""  # the open text item's delta event: a template (see _open)

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        self.sequence += 1
        return b"".join(
            (
                b"event: ",
                kind.encode(),
                b"\ndata: ",
                orjson.dumps({"type": kind, "sequence_number": self.sequence - 1, **fields}),
                b"\n\n",
            )
        )

    def _start(self) -> list[bytes]:
        self.started = True
        snapshot = dict(self.response)
        return [
            self._event("response.created", {"response": snapshot}),
            self._event("response.in_progress", {"response": snapshot}),
        ]

    def frame(self, payloads: list[bytes], chunks: list[Chunk | None] | None = None, /) -> bytes:
        out = [] if self.started else self._start()
        for choice in first_choices(payloads, chunks):
            if choice.finish_reason is not None:
                self.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            thought = delta.reasoning_content or delta.reasoning
            text = delta.content
            if delta.tool_calls is None and not (thought and text):
                # The usual chunk, one piece of text: inline, from the open item's template.
                if thought:
                    text, kind = thought, "reasoning"
                elif text:
                    kind = "message"
                else:
                    continue
                if kind != self.kind:
                    self._close(out)
                    self._open(kind, out)
                self.text.append(text)
                out.append(self.delta_event % (self.sequence, orjson.dumps(text)))
                self.sequence += 1
            else:
                self._choice(delta, out)
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
                out.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        {"item_id": self.call["id"], "output_index": len(self.output), "delta": function.arguments},
                    )
                )

    def _text(self, kind: str, text: str, out: list[bytes]) -> None:
        if self.kind != kind:
            self._close(out)
            self._open(kind, out)
        self.text.append(text)
        out.append(self.delta_event % (self.sequence, orjson.dumps(text)))
        self.sequence += 1

    def _open(self, kind: str, out: list[bytes]) -> None:
        self.kind = kind
        index = len(self.output)
        if kind == "reasoning":
            item: dict[str, Any] = {"type": "reasoning", "id": f"rs_{self.suffix}", "summary": []}
            part: dict[str, Any] = {"type": "summary_text", "text": ""}
            out.append(self._event("response.output_item.added", {"output_index": index, "item": item}))
            out.append(
                self._event(
                    "response.reasoning_summary_part.added",
                    {"item_id": item["id"], "output_index": index, "summary_index": 0, "part": part},
                )
            )
            event = "response.reasoning_summary_text.delta"
            position = b',"summary_index":0'
        else:
            item = _message_item(self.suffix, "", "in_progress")
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(self._event("response.output_item.added", {"output_index": index, "item": item}))
            out.append(
                self._event(
                    "response.content_part.added",
                    {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part},
                )
            )
            event = "response.output_text.delta"
            position = b',"content_index":0'
        # The hot event, one per token: a template of its sequence number and text.
        self.delta_event = b"".join(
            (
                b"event: ",
                event.encode(),
                b'\ndata: {"type":"',
                event.encode(),
                b'","item_id":"',
                item["id"].encode().replace(b"%", b"%%"),
                b'","output_index":',
                str(index).encode(),
                position,
                b',"sequence_number":%d,"delta":%b',
                b',"logprobs":[]}\n\n' if kind == "message" else b"}\n\n",
            )
        )

    def _open_call(self, call_id: str | None, name: str | None, out: list[bytes]) -> None:
        index = self.calls
        self.calls += 1
        self.kind = "call"
        self.call = _call_item(
            self.suffix, index, call_id or f"call_{self.suffix}_{index}", name or "", "", "in_progress"
        )
        out.append(self._event("response.output_item.added", {"output_index": len(self.output), "item": self.call}))

    def _close(self, out: list[bytes]) -> None:
        """Close the open item, if any: its `.done` events."""
        kind, text = self.kind, "".join(self.text)
        index = len(self.output)
        if kind == "reasoning":
            item = _reasoning_item(self.suffix, text)
            part = item["summary"][0]
            out.append(
                self._event(
                    "response.reasoning_summary_text.done",
                    {"item_id": item["id"], "output_index": index, "summary_index": 0, "text": text},
                )
            )
            out.append(
                self._event(
                    "response.reasoning_summary_part.done",
                    {"item_id": item["id"], "output_index": index, "summary_index": 0, "part": part},
                )
            )
        elif kind == "message":
            item = _message_item(self.suffix, text)
            part = item["content"][0]
            out.append(
                self._event(
                    "response.output_text.done",
                    {"item_id": item["id"], "output_index": index, "content_index": 0, "text": text, "logprobs": []},
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part},
                )
            )
        elif kind == "call":
            assert self.call is not None
            item = {**self.call, "arguments": text, "status": "completed"}
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    {"item_id": item["id"], "output_index": index, "name": item["name"], "arguments": text},
                )
            )
            self.call = None
        else:
            return
        out.append(self._event("response.output_item.done", {"output_index": index, "item": item}))
        self.output.append(item)
        self.kind = None
        self.text = []

    def finish(self, usage: dict[str, Any]) -> bytes:
        out = [] if self.started else self._start()
        if self.kind not in ("message", "call") and all(item["type"] == "reasoning" for item in self.output):
            self._close(out)
            self._open("message", out)  # an answer always has its message or a call, as a whole one
        self._close(out)
        response = {**self.response, "output": self.output}
        _finish(response, self.finish_reason, usage)
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
