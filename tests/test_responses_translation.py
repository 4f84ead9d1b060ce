"""The Responses request's translation (`dialects/responses.py`), which looks only at the fields
a request sends, against the straightforward one kept here: every field looked up whether sent
or not, as the module did before. Any request, with any fields in any order and any values
(absent, null, false, of the wrong type), must give the same chat body (the same fields, values
and order), the same settings echoed (the same members, values and order, the same JSON) and the
same error.

`generic_translation` shares with the module the helpers that translate one field (`_messages`,
`_tool`, `_tool_choice`, `_response_format`), the field check (`_int_field`) and the settings'
encoding (`_settings_end`): what is compared is which fields are looked at, and when."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon_platform.dialects.responses import (
    READ_FIELDS,
    ResponsesDialect,
    _messages,
    _response_format,
    _settings_end,
    _tool,
    _tool_choice,
)
from cocoon_platform.errors import InvalidRequest, PlatformError
from cocoon_platform.proxy.request import _int_field


def generic_translation(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chat body and the echoed settings, every field looked up."""
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
    chat: dict[str, Any] = {name: value for name, value in body.items() if name not in READ_FIELDS}
    chat["model"] = body["model"]
    chat["messages"] = _messages(body.get("instructions"), body["input"])
    if body.get("stream") is not None:
        chat["stream"] = body["stream"]
    for name in ("temperature", "top_p", "parallel_tool_calls"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = _int_field(body, "max_output_tokens", 1)
    if body.get("tools"):
        tools = body["tools"]
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list", param="tools")
        chat["tools"] = [_tool(tool, index) for index, tool in enumerate(tools)]
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
    echoed = {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "metadata": body.get("metadata") or {},
        "text": body.get("text") or {"format": {"type": "text"}},
        "reasoning": body.get("reasoning"),
        "user": body.get("user"),
    }
    _settings_end(echoed)  # refuses what orjson cannot write, as the module does
    return chat, echoed


TOOL = {"type": "function", "name": "f%d", "parameters": {"type": "object"}}
# Each field's values: usual ones, null, false ones, and ones of the wrong type or out of range.
FALSY: list[Any] = [None, False, 0, "", [], {}]
FIELDS: dict[str, list[Any]] = {
    "model": ["m", None],
    "input": ["hi", [{"role": "user", "content": "hi"}], 5],
    "instructions": ["Be brief.", None, 7],
    "stream": [True, False, None, "yes"],
    "temperature": [0.5, 0, None, 2.5, "hot"],
    "top_p": [1, 0.5, None],
    "parallel_tool_calls": [True, False, None, 0, "no"],
    "max_output_tokens": [64, 1, 0, -1, 64.0, 64.5, True, "64", None, 2**70],
    "tools": [[TOOL], [{"type": "web_search"}], "tools", *FALSY],
    "tool_choice": ["auto", "required", {"type": "function", "name": "f"}, 5, *FALSY],
    "text": [{"format": {"type": "json_object"}}, {"format": {"type": "xml"}}, {"format": None}, "text", *FALSY],
    "reasoning": [{"effort": "minimal"}, {"effort": "low"}, "high", *FALSY],
    "metadata": [{"k": "v"}, *FALSY],
    "user": ["u", *FALSY],
    "store": [False, True],
    "include": [["reasoning.encrypted_content"]],
    "truncation": ["auto"],
    "stream_options": [{"include_usage": True}],
    "previous_response_id": [None, "resp_1"],
    "conversation": [None, "conv_1"],
    "background": [None, False, True],
    "seed": [5],  # fields the module does not read go to the chat body as they are
    "frequency_penalty": [0.1],
}


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Any subset of the fields, in any order (model and input most often)."""
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True))
    for required in ("input", "model"):
        if required not in names and draw(st.integers(0, 9)):
            names.insert(draw(st.integers(0, len(names))), required)
    return {name: draw(st.sampled_from(FIELDS[name])) for name in names}


def outcome(translate: Any, body: dict[str, Any]) -> Any:
    """What translating `body` gives: the chat body and the settings as item lists (their order
    compared too), or the error's kind and body."""
    try:
        chat, echoed = translate(body)
    except PlatformError as exc:
        return type(exc), exc.to_bytes()
    return list(chat.items()), list(echoed.items())


def templated(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    request = ResponsesDialect().translate(body)
    assert request.settings_end == orjson.dumps(request.settings)[1:]
    return request.chat, request.settings


@settings(max_examples=1500, deadline=None)
@given(bodies())
def test_the_translation_looks_at_the_fields_sent_as_the_generic_one_at_all(body: dict[str, Any]) -> None:
    ours, theirs = outcome(templated, dict(body)), outcome(generic_translation, dict(body))
    assert ours == theirs


def test_the_usual_request_and_one_with_every_setting() -> None:
    usual = {"model": "m", "input": "hi", "instructions": "Be brief.", "max_output_tokens": 64, "stream": True}
    full = {
        **usual,
        "temperature": 0.5,
        "top_p": 1,
        "parallel_tool_calls": False,
        "tools": [TOOL],
        "tool_choice": "required",
        "text": {"format": {"type": "json_object"}},
        "reasoning": {"effort": "minimal"},
        "metadata": {"k": "v"},
        "user": "u",
        "seed": 5,
    }
    for body in (usual, full):
        assert outcome(templated, dict(body)) == outcome(generic_translation, dict(body))
    assert _settings_end(ResponsesDialect().translate(dict(usual)).settings) == (
        b'"instructions":"Be brief.","max_output_tokens":64,"temperature":null,"top_p":null,'
        b'"tool_choice":"auto","tools":[],"parallel_tool_calls":true,"metadata":{},'
        b'"text":{"format":{"type":"text"}},"reasoning":null,"user":null}'
    )
