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

A stream's events are written from bytes templates that orjson makes at import from the same
dicts a whole answer is made of (`templates.py`): an event is then one `%` of a few values, not a
dict encoded whole, and the texts of one read are encoded in one call. This runs for every
Responses stream, whose fixed events (the response object three times, each item's opening and
closing events) weigh as much as its deltas in a short answer; so the values that do not change
in a stream are in its templates or written once: the settings that close every response object
(encoded once per request), the items' ids (the answer id's suffix is their templates' slot),
and the first two events (one response object written once, between constant bytes). The last
event's usage counts are written by `%d`, without a dict. The relay feeds the stream its chunks'
text in the loop that counts them (`proxy.relay.read_texts`). `tests/test_responses_stream.py`
holds the bytes to those of every event's dict encoded whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from cocoon_platform.dialects.chat import function_of, read_message, text_of, usage_numbers
from cocoon_platform.dialects.templates import (
    DECIMAL_SLOT,
    DIGITS,
    INT_SLOT,
    JSON_SLOT,
    LATER_INT_SLOT,
    LATER_JSON_SLOT,
    TEXTS,
    TEXTS_BETWEEN,
    digits_through,
    encoded_template,
    event_templates,
    with_slots,
)
from cocoon_platform.errors import InvalidRequest, PlatformError
from cocoon_platform.proxy.events import ChunkChoice, Delta
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
# Of those, the refused fields, and two groups translated only when a field of the group is sent:
# the usual request sends none of them, and each field looked up costs on every request.
REFUSED_FIELDS = frozenset(("previous_response_id", "conversation", "background"))
SAMPLING_FIELDS = frozenset(("temperature", "top_p", "parallel_tool_calls"))
SHAPING_FIELDS = frozenset(("tools", "tool_choice", "text", "reasoning"))
# The usual request's fields: all read here, none of the groups above. One subset test takes such
# a body past each group's look, and its settings are the defaults but for two (`_USUAL_SETTINGS`).
USUAL_FIELDS = READ_FIELDS - REFUSED_FIELDS - SAMPLING_FIELDS - SHAPING_FIELDS
# The settings a response object echoes (`_settings`), in their order, with their defaults;
# those of DEFAULTED_FIELDS stand for any false value too. Shared by every answer, they are never
# changed, only encoded.
DEFAULT_SETTINGS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "temperature": None,
    "top_p": None,
    "tool_choice": "auto",
    "tools": [],
    "parallel_tool_calls": True,
    "metadata": {},
    "text": {"format": {"type": "text"}},
    "reasoning": None,
    "user": None,
}
DEFAULTED_FIELDS = frozenset(("tool_choice", "tools", "metadata", "text"))


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
        usual = USUAL_FIELDS.issuperset(body)
        if not usual and not REFUSED_FIELDS.isdisjoint(body):
            _refuse(body)
        if "input" not in body or "model" not in body:
            raise InvalidRequest("model and input are required")
        self.body = body
        # The usual body holds only fields read here: nothing goes to the chat body as it is.
        chat: dict[str, Any] = (
            {}
            if usual or READ_FIELDS.issuperset(body)
            else {name: value for name, value in body.items() if name not in READ_FIELDS}
        )
        chat["model"] = body["model"]
        chat["messages"] = _messages(body.get("instructions"), body["input"])
        if body.get("stream") is not None:
            chat["stream"] = body["stream"]
        if not usual and not SAMPLING_FIELDS.isdisjoint(body):
            for name in ("temperature", "top_p", "parallel_tool_calls"):
                if body.get(name) is not None:
                    chat[name] = body[name]
        limit = body.get("max_output_tokens")
        if limit is not None:
            # Checked here, under the caller's name for it (the chat check would name max_tokens);
            # the usual value, a positive int, needs no call.
            chat["max_tokens"] = limit if type(limit) is int and limit > 0 else _int_field(body, "max_output_tokens", 1)
        if not usual and not SHAPING_FIELDS.isdisjoint(body):
            _shaping(body, chat)
        self.chat = chat
        # The settings every response object ends with, as JSON.
        self.settings_end = _usual_settings_end(body) if usual else _settings_end(self.settings)

    @property
    def settings(self) -> dict[str, Any]:
        """The settings a whole answer echoes (`settings_end` holds them as a stream writes them)."""
        return _settings(self.body)

    def answer(self, document: dict[str, Any], answer_id: str) -> dict[str, Any]:
        message = read_message(document)
        suffix = answer_id.removeprefix("resp_")
        output: list[dict[str, Any]] = []
        if message.reasoning:
            output.append(_reasoning_item(f"rs_{suffix}", [_summary_part(message.reasoning)]))
        if message.text or not message.tool_calls:
            output.append(_message_item(f"msg_{suffix}", "completed", [_output_text_part(message.text)]))
        for index, call in enumerate(message.tool_calls):
            name, arguments = function_of(call)
            call_id = call.get("id")
            output.append(
                _call_item(
                    f"fc_{suffix}_{index}",
                    call_id if isinstance(call_id, str) else f"call_{suffix}_{index}",
                    name,
                    arguments,
                    "completed",
                )
            )
        status = _status(message.finish_reason)
        return _response(
            answer_id,
            int(document.get("created") or time.time()),
            status,
            None,
            INCOMPLETE_DETAILS[status],
            str(document.get("model") or self.body["model"]),
            output,
            _usage(*_numbers(document.get("usage"))),
            self.settings,
        )

    def stream(self, answer_id: str, model: str) -> ResponsesStream:
        return ResponsesStream(self, answer_id, model)


def _settings(body: dict[str, Any]) -> dict[str, Any]:
    """The request's settings as a response object echoes them: as it set them, or their defaults
    (`DEFAULT_SETTINGS`). Only the fields sent are looked at (most requests send a handful)."""
    settings = DEFAULT_SETTINGS.copy()
    for name in body:
        if name in DEFAULT_SETTINGS:
            value = body[name]
            if name in DEFAULTED_FIELDS:
                if value:
                    settings[name] = value
            elif name == "parallel_tool_calls":
                settings[name] = value is not False
            else:
                settings[name] = value
    return settings


def _usual_settings_end(body: dict[str, Any]) -> bytes:
    """`_settings_end` of a usual request's settings (`USUAL_FIELDS`), from their template: its
    two settings are checked by now (an int too large for JSON goes the general way, refused)."""
    try:
        return _USUAL_SETTINGS % (orjson.dumps(body.get("instructions")), orjson.dumps(body.get("max_output_tokens")))
    except orjson.JSONEncodeError:
        return _settings_end(_settings(body))


def _settings_end(settings: dict[str, Any]) -> bytes:
    """`settings` as the last members of a response object's JSON (and its closing brace),
    written once: every response object of a stream ends with them. A setting nested deeper than
    orjson writes (254 levels; `metadata`, `reasoning` and `user` are echoed but never forwarded)
    is a 400 naming it, before anything is held, not a failed answer."""
    try:
        return orjson.dumps(settings)[1:]
    except orjson.JSONEncodeError:
        for name, value in settings.items():
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError:
                raise InvalidRequest(f"'{name}' is nested too deeply to be echoed", param=name) from None
        raise


def _response(
    answer_id: Any,
    created: Any,
    status: Any,
    error: Any,
    incomplete_details: Any,
    model: Any,
    output: Any,
    usage: Any,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """A response object, whole answers' and (with markers for its values) a stream's template's."""
    return {
        "id": answer_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "model": model,
        "output": output,
        "previous_response_id": None,
        "store": False,
        "truncation": "disabled",
        "usage": usage,
        **settings,
    }


def _refuse(body: dict[str, Any]) -> None:
    """Refuse what asks the platform to keep or look up an answer."""
    for name in ("previous_response_id", "conversation"):
        if body.get(name) is not None:
            raise InvalidRequest(
                f"'{name}' is not supported: the platform keeps no conversation (store is always false). "
                "Send the whole conversation in 'input' on every request.",
                param=name,
            )
    if body.get("background"):
        raise InvalidRequest("'background' is not supported: answers are not stored.", param="background")


def _shaping(body: dict[str, Any], chat: dict[str, Any]) -> None:
    """The chat fields for `tools`, `tool_choice`, `text` and `reasoning`, in this order."""
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


# The output items and their parts, whole answers' and (with markers for their values) a stream's
# templates'.
def _reasoning_item(item_id: Any, summary: list[Any]) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": summary}


def _summary_part(text: Any) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


def _message_item(item_id: Any, status: str, content: list[Any]) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _output_text_part(text: Any) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _call_item(item_id: Any, call_id: Any, name: Any, arguments: Any, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _usage(
    input_tokens: Any, cached: Any, output_tokens: Any, reasoning: Any, total: Any, cost_nanoton: Any, cost_ton: Any
) -> dict[str, Any]:
    """A usage object, whole answers' and (with markers for its numbers) a stream's template's."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": total,
        "cost_nanoton": cost_nanoton,
        "cost_ton": cost_ton,
    }


def _numbers(chat_usage: Any) -> tuple[int, int, int, int, int, int, float]:
    """The usage object's numbers (`_usage`'s arguments) for a chat answer's usage."""
    prompt, cached, completion, reasoning, cost_nanoton, cost_ton = usage_numbers(chat_usage)
    return prompt, cached, completion, reasoning, prompt + completion, cost_nanoton, cost_ton


def _status(finish_reason: str | None) -> str:
    """A finished answer's status: incomplete when `max_output_tokens` cut it."""
    return "incomplete" if finish_reason == "length" else "completed"


INCOMPLETE_DETAILS = {"completed": None, "incomplete": {"reason": "max_output_tokens"}}  # by status


def _delta_event(kind: str, fields: dict[str, Any]) -> tuple[bytes, bytes]:
    """A delta event's template, and its bytes after its text (`fields` hold LATER_JSON_SLOT)."""
    template = event_templates((kind, fields))
    return template, template.rpartition(b"%%b")[2]


def _item_added(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "response.output_item.added", {"sequence_number": INT_SLOT, "output_index": INT_SLOT, "item": item}


def _marked_response(status: str, error: Any, incomplete_details: Any, output: Any, usage: Any) -> orjson.Fragment:
    """A response object with markers for its id, created_at and model, and for its settings last
    (`ResponsesStream.settings`: they close the object), as a part of an event's template."""
    encoded = orjson.dumps(
        _response(JSON_SLOT, INT_SLOT, status, error, incomplete_details, JSON_SLOT, output, usage, {})
    )
    return orjson.Fragment(encoded.removesuffix(b"}") + b",\x00")


# The first two events, each with the in-progress response: the bytes before, between and after
# the two (the sequence numbers are always these), and the response (slots: id, created_at,
# model, settings).
_STARTED = event_templates(
    ("response.created", {"sequence_number": 0, "response": JSON_SLOT}),
    ("response.in_progress", {"sequence_number": 1, "response": JSON_SLOT}),
).split(b"%b")
# A usual request's settings, as `_settings_end` writes them (slots: instructions,
# max_output_tokens).
_USUAL_SETTINGS = with_slots(
    orjson.dumps({**DEFAULT_SETTINGS, "instructions": JSON_SLOT, "max_output_tokens": JSON_SLOT})[1:]
)
_IN_PROGRESS = encoded_template(_marked_response("in_progress", None, None, [], None))
# The last event, by status. Slots of the finished ones: the sequence number, id, created_at,
# model, the items (JSON, comma-separated), the usage's numbers (`_numbers`: six ints by `%d`,
# the cost in TON as JSON), settings; of the failed one: the sequence number, id, created_at,
# error, model, the items, settings.
_ITEMS = orjson.Fragment(b"[\x00]")
_ENDED_COMPLETED, _ENDED_INCOMPLETE = (
    event_templates(
        (
            f"response.{status}",
            {
                "sequence_number": INT_SLOT,
                "response": _marked_response(
                    status, None, INCOMPLETE_DETAILS[status], _ITEMS, _usage(*(DECIMAL_SLOT,) * 6, JSON_SLOT)
                ),
            },
        )
    )
    for status in ("completed", "incomplete")
)
_FAILED = event_templates(
    (
        "response.failed",
        {"sequence_number": INT_SLOT, "response": _marked_response("failed", JSON_SLOT, None, _ITEMS, None)},
    )
)
# Slots: the sequence number, the index, the item.
_ITEM_DONE = ("response.output_item.done", {"sequence_number": INT_SLOT, "output_index": INT_SLOT, "item": JSON_SLOT})


@dataclass(frozen=True, slots=True)
class _TextItem:
    """A kind of item that holds one text (reasoning's summary, the message's output text): its
    templates, all filled alike (`ResponsesStream._open`, `write_held`, `_close`)."""

    # Their slots (`suffix`: of the item's id, the answer id's suffix):
    opened: bytes  # sequence number, index, suffix; + 1, suffix, index
    # A delta event (suffix, index; then its sequence number, its text's JSON), and its bytes
    # after its text.
    delta: tuple[bytes, bytes]
    item: bytes  # suffix, text
    closed: bytes  # sequence number, suffix, index, text; + 1, suffix, index, text; + 2, index, item


# The text items' ids, in their templates: the answer id's suffix is their slot.
_RS_ID = orjson.Fragment(b'"rs_\x00"')
_MSG_ID = orjson.Fragment(b'"msg_\x00"')
_REASONING = _TextItem(
    opened=event_templates(
        _item_added(_reasoning_item(_RS_ID, [])),
        (
            "response.reasoning_summary_part.added",
            {
                "sequence_number": INT_SLOT,
                "item_id": _RS_ID,
                "output_index": INT_SLOT,
                "summary_index": 0,
                "part": _summary_part(""),
            },
        ),
    ),
    delta=_delta_event(
        "response.reasoning_summary_text.delta",
        {
            "item_id": _RS_ID,
            "output_index": INT_SLOT,
            "summary_index": 0,
            "sequence_number": LATER_INT_SLOT,
            "delta": LATER_JSON_SLOT,
        },
    ),
    item=encoded_template(_reasoning_item(_RS_ID, [_summary_part(JSON_SLOT)])),
    closed=event_templates(
        (
            "response.reasoning_summary_text.done",
            {
                "sequence_number": INT_SLOT,
                "item_id": _RS_ID,
                "output_index": INT_SLOT,
                "summary_index": 0,
                "text": JSON_SLOT,
            },
        ),
        (
            "response.reasoning_summary_part.done",
            {
                "sequence_number": INT_SLOT,
                "item_id": _RS_ID,
                "output_index": INT_SLOT,
                "summary_index": 0,
                "part": _summary_part(JSON_SLOT),
            },
        ),
        _ITEM_DONE,
    ),
)
_MESSAGE = _TextItem(
    opened=event_templates(
        _item_added(_message_item(_MSG_ID, "in_progress", [])),
        (
            "response.content_part.added",
            {
                "sequence_number": INT_SLOT,
                "item_id": _MSG_ID,
                "output_index": INT_SLOT,
                "content_index": 0,
                "part": _output_text_part(""),
            },
        ),
    ),
    delta=_delta_event(
        "response.output_text.delta",
        {
            "item_id": _MSG_ID,
            "output_index": INT_SLOT,
            "content_index": 0,
            "sequence_number": LATER_INT_SLOT,
            "delta": LATER_JSON_SLOT,
            "logprobs": [],
        },
    ),
    item=encoded_template(_message_item(_MSG_ID, "completed", [_output_text_part(JSON_SLOT)])),
    closed=event_templates(
        (
            "response.output_text.done",
            {
                "sequence_number": INT_SLOT,
                "item_id": _MSG_ID,
                "output_index": INT_SLOT,
                "content_index": 0,
                "text": JSON_SLOT,
                "logprobs": [],
            },
        ),
        (
            "response.content_part.done",
            {
                "sequence_number": INT_SLOT,
                "item_id": _MSG_ID,
                "output_index": INT_SLOT,
                "content_index": 0,
                "part": _output_text_part(JSON_SLOT),
            },
        ),
        _ITEM_DONE,
    ),
)
# A function call's. Slots of `_CALL_OPENED`: sequence number, index, id, call id, name;
# `_CALL_DELTA`: sequence number, id, index, arguments; `_CALL_ITEM`: id, call id, name,
# arguments; `_CALL_CLOSED`: sequence number, id, index, name, arguments; + 1, index, item.
_CALL_OPENED = event_templates(_item_added(_call_item(JSON_SLOT, JSON_SLOT, JSON_SLOT, "", "in_progress")))
_CALL_DELTA = event_templates(
    (
        "response.function_call_arguments.delta",
        {"sequence_number": INT_SLOT, "item_id": JSON_SLOT, "output_index": INT_SLOT, "delta": JSON_SLOT},
    )
)
_CALL_ITEM = encoded_template(_call_item(JSON_SLOT, JSON_SLOT, JSON_SLOT, JSON_SLOT, "completed"))
_CALL_CLOSED = event_templates(
    (
        "response.function_call_arguments.done",
        {
            "sequence_number": INT_SLOT,
            "item_id": JSON_SLOT,
            "output_index": INT_SLOT,
            "name": JSON_SLOT,
            "arguments": JSON_SLOT,
        },
    ),
    _ITEM_DONE,
)


class ResponsesStream:
    """The typed event sequence for one streamed answer. Items open as their kind of text
    arrives (reasoning, then the message, then function calls) and close when the next opens.

    Every event is written from its template (above); the response object's settings are
    encoded once per request, each text once (a closed item's text fills its three closing events
    and the final response). The texts of one read are held and their delta events written
    together: the texts encoded in one call, the events made by one `%`."""

    __slots__ = (
        "answer_id",
        "created",
        "model",
        "settings",
        "suffix",
        "started",
        "sequence",
        "output",
        "answered",
        "open",
        "item_id",
        "text",
        "held",
        "delta_event",
        "call",
        "calls",
        "finish_reason",
    )
    # Set when an item opens: a function call's id, as JSON; a text item's delta event, a template
    # of its sequence number and text's JSON.
    item_id: bytes
    delta_event: bytes
    # The kinds of item reasoning and answer text go in (`proxy.relay.read_texts`).
    thinking = _REASONING
    answering = _MESSAGE

    def __init__(self, request: ResponsesRequest, answer_id: str, model: str) -> None:
        self.answer_id = answer_json = orjson.dumps(answer_id)
        self.created = b"%d" % int(time.time())  # digits, as the integer slots take them
        self.model = orjson.dumps(model)
        self.settings = request.settings_end  # each response object's last members
        # Of the items' ids, as JSON: the answer id's without its prefix (JSON escapes characters
        # one by one).
        self.suffix = answer_json[6:-1] if answer_id.startswith("resp_") else answer_json[1:-1]
        self.started = False  # the first two events are written
        self.sequence = 0  # of the next event
        self.output: list[bytes] = []  # the items done, as JSON
        self.answered = False  # a message or a function call was opened
        self.open: _TextItem | None = None  # the open text item's kind
        self.text: list[str] = []  # of the open item, its delta events written
        self.held: list[str] = []  # of the open text item, its delta events not written yet
        self.call: tuple[bytes, bytes] | None = None  # the open function call's call id and name, as JSON
        self.calls = 0
        self.finish_reason: str | None = None

    def begin(self) -> list[bytes]:
        """The first two events (called once: `started` says when)."""
        self.started = True
        self.sequence = 2
        response = _IN_PROGRESS % (self.answer_id, self.created, self.model, self.settings)
        before, between, after = _STARTED
        return [before, response, between, response, after]

    def choices(self, choices: list[ChunkChoice], out: list[bytes]) -> None:
        """Any chunk's choices: the first's ending and delta, if it is there."""
        for choice in choices:
            if not choice.index:
                if choice.finish_reason is not None:
                    self.finish_reason = choice.finish_reason
                if choice.delta is not None:
                    self._delta(choice.delta, out)

    def _delta(self, delta: Delta, out: list[bytes]) -> None:
        """Any delta: its reasoning, its text, its tool calls, in this order."""
        thought = delta.reasoning_content or delta.reasoning
        if thought:
            self._text(_REASONING, thought, out)
        if delta.content:
            self._text(_MESSAGE, delta.content, out)
        for call in delta.tool_calls or ():
            function = call.function
            if call.id is not None or self.call is None:
                self._close(out)
                self._open_call(call.id, function.name if function else None, out)
            if function is not None and function.arguments:
                self.text.append(function.arguments)
                arguments = orjson.dumps(function.arguments)
                sequence = self.sequence
                digits = DIGITS if sequence < len(DIGITS) else digits_through(sequence)
                out.append(_CALL_DELTA % (digits[sequence], self.item_id, digits[len(self.output)], arguments))
                self.sequence = sequence + 1

    def _text(self, kind: _TextItem, text: str, out: list[bytes]) -> None:
        if kind is not self.open:
            self._open(kind, out)
        self.held.append(text)

    def write_held(self, out: list[bytes]) -> None:
        """The delta events of the held texts. A stream read at the model's pace brings one text
        a read, written from the item's delta template. Several texts get one template (each
        text's JSON between the delta event's head and tail), filled with their sequence numbers,
        and their JSON from one call: that costs more for one text, less from two."""
        held = self.held
        sequence = self.sequence
        end = sequence + len(held)
        digits = DIGITS if end < len(DIGITS) else digits_through(end)
        if end == sequence + 1:
            out.append(self.delta_event % (digits[sequence], orjson.dumps(held[0])))
        else:
            assert self.open is not None
            tail = self.open.delta[1]
            head = self.delta_event[: -len(tail) - 2]  # before the text's slot
            texts = orjson.dumps(held, option=orjson.OPT_INDENT_2)[TEXTS]
            events = head + texts.replace(b"%", b"%%").replace(TEXTS_BETWEEN, tail + head) + tail
            out.append(events % tuple(digits[sequence:end]))
        self.sequence = end
        self.text += held
        held.clear()

    def _open(self, kind: _TextItem, out: list[bytes]) -> None:
        """Open an item of `kind`, closing the open one (if any: a call costs ~900 instructions)."""
        if self.open is not None or self.call is not None:
            self._close(out)
        self.open = kind
        if kind is _MESSAGE:
            self.answered = True
        suffix, sequence = self.suffix, self.sequence
        digits = DIGITS if sequence + 1 < len(DIGITS) else digits_through(sequence + 1)
        index = digits[len(self.output)]
        out.append(kind.opened % (digits[sequence], index, suffix, digits[sequence + 1], suffix, index))
        self.sequence = sequence + 2
        self.delta_event = kind.delta[0] % (suffix.replace(b"%", b"%%"), index)

    switch = _open  # `TextStream.switch`: one call, not two

    def _open_call(self, call_id: str | None, name: str | None, out: list[bytes]) -> None:
        index = self.calls
        self.calls += 1
        self.answered = True
        self.item_id = b'"fc_%b_%d"' % (self.suffix, index)
        call_id_json = orjson.dumps(call_id) if call_id else b'"call_%b_%d"' % (self.suffix, index)
        self.call = (call_id_json, orjson.dumps(name or ""))
        sequence = self.sequence
        digits = DIGITS if sequence < len(DIGITS) else digits_through(sequence)
        out.append(_CALL_OPENED % (digits[sequence], digits[len(self.output)], self.item_id, *self.call))
        self.sequence = sequence + 1

    def _close(self, out: list[bytes]) -> None:
        """Close the open item, if any: its held deltas, then its `.done` events."""
        kind = self.open
        if kind is not None:
            if self.held:
                self.write_held(out)
            suffix, sequence = self.suffix, self.sequence
            digits = DIGITS if sequence + 2 < len(DIGITS) else digits_through(sequence + 2)
            index = digits[len(self.output)]
            text = orjson.dumps("".join(self.text))
            item = kind.item % (suffix, text)
            out.append(
                kind.closed
                % (
                    digits[sequence],
                    suffix,
                    index,
                    text,
                    digits[sequence + 1],
                    suffix,
                    index,
                    text,
                    digits[sequence + 2],
                    index,
                    item,
                )
            )
            self.sequence = sequence + 3
            self.open = None
        elif self.call is not None:
            item_id, sequence = self.item_id, self.sequence
            digits = DIGITS if sequence + 1 < len(DIGITS) else digits_through(sequence + 1)
            index = digits[len(self.output)]
            call_id, name = self.call
            arguments = orjson.dumps("".join(self.text))
            item = _CALL_ITEM % (item_id, call_id, name, arguments)
            out.append(
                _CALL_CLOSED % (digits[sequence], item_id, index, name, arguments, digits[sequence + 1], index, item)
            )
            self.sequence = sequence + 2
            self.call = None
        else:
            return
        self.output.append(item)
        self.text = []

    def finish(self, usage: dict[str, Any]) -> bytes:
        out = [] if self.started else self.begin()
        if not self.answered:
            self._open(_MESSAGE, out)  # an answer always has its message or a call, as a whole one
        self._close(out)
        # The usage's numbers (`_numbers`, inline: this runs for every stream): its counts are ints
        # (`usage_numbers`), written by `%d` as JSON writes them, its cost in TON as orjson writes a float.
        prompt, cached, completion, reasoning, cost_nanoton, cost_ton = usage_numbers(usage)
        ended = _ENDED_INCOMPLETE if self.finish_reason == "length" else _ENDED_COMPLETED  # as `_status` says
        out.append(
            ended
            % (
                b"%d" % self.sequence,
                self.answer_id,
                self.created,
                self.model,
                b",".join(self.output),
                prompt,
                cached,
                completion,
                reasoning,
                prompt + completion,
                cost_nanoton,
                orjson.dumps(cost_ton),
                self.settings,
            )
        )
        return b"".join(out)

    def fail(self, error: PlatformError) -> bytes:
        out = [] if self.started else self.begin()
        self._close(out)
        problem = orjson.dumps({"code": "server_error", "message": error.message})
        items = b",".join(self.output)
        out.append(
            _FAILED % (b"%d" % self.sequence, self.answer_id, self.created, problem, self.model, items, self.settings)
        )
        return b"".join(out)
