"""A chat request with tools as parse_request prepares it: what is forwarded, and what is reserved."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cocoon_platform.errors import PlatformError, UnsupportedParameter
from cocoon_platform.proxy.request import InferenceRequest, decode_chat_body, parse_request
from cocoon_platform.tools.hermes import tools_text
from cocoon_platform.tools.offer import SchemaCache
from cocoon_platform.upstream.catalog import ModelCatalog

CATALOG = ModelCatalog.load(None)
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Données «x»",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}


def parse(body: dict[str, Any] | bytes, schemas: SchemaCache | None = None) -> InferenceRequest:
    return parse_request(
        "/v1/chat/completions",
        body if isinstance(body, bytes) else orjson.dumps(body),
        max_tokens_cap=1000,
        default_max_tokens=100,
        max_coefficient=1000,
        tool_format_of=CATALOG.tool_format,
        schemas=SchemaCache() if schemas is None else schemas,
    )


def outcome(body: bytes, schemas: SchemaCache) -> tuple[str, Any]:
    """What parse_request makes of a body: the forwarded payload and the offer, or the error."""
    try:
        request = parse(body, schemas)
    except PlatformError as error:
        return "error", (type(error), error.status, str(error), getattr(error, "param", None))
    offered = None if request.tools is None else (request.tools.tool_set.lines, request.tools.choice)
    return "request", (request.payload, offered, request.added_prompt_bytes, request.attempts)


TOOLS_JSON = orjson.dumps([TOOL])
SAME_TOOLS = [
    # Each body sends the tools as TOOLS_JSON: once the list is compiled, it is not decoded again.
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"messages":[{"role":"user","content":"q"}]}',
    b'{"tools" : %s , "tool_choice":"required","model":"Qwen/Qwen3-32B","messages":[{"role":"user","content":"q"}]}',
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"tool_choice":{"type":"function","function":{"name":"nope"}},'
    b'"messages":[{"role":"user","content":"q"}]}',
    b'{"model":"ByteDance-Seed/Seed-X-PPO-7B","tools":%s,"messages":[{"role":"user","content":"q"}]}',
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"max_tokens":123456789012345678901234567890,'
    b'"messages":[{"role":"user","content":"q"}]}',
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"messages":[{"role":"user","content":"q"}],"n":"x"}',
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"messages":[{"role":"user","content":"q"}],"tools":null}',
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"messages":[{"role":"user","content":"\xff"}]}',
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"messages":[{"role":"user","content":"q"}]',
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"messages":[{"role":"tool","content":"r"}]}',
]


@pytest.mark.parametrize("template", SAME_TOOLS)
def test_a_tool_list_compiled_before_gives_what_a_fresh_one_gives(template: bytes) -> None:
    """A body whose tools were compiled before (the list not decoded again) is read exactly as
    the same body by a process that never saw them: the same payload and offer, or the same error."""
    body = template % TOOLS_JSON
    warm = SchemaCache()
    parse({"model": "Qwen/Qwen3-32B", "tools": [TOOL], "messages": [{"role": "user", "content": "q"}]}, warm)
    assert warm.known(TOOLS_JSON) is not None
    assert outcome(body, warm) == outcome(body, SchemaCache())


def test_a_known_list_stands_in_for_its_json() -> None:
    schemas = SchemaCache()
    body = SAME_TOOLS[0] % TOOLS_JSON
    _, tools_json = decode_chat_body(body, schemas)
    assert tools_json == TOOLS_JSON and schemas.known(TOOLS_JSON) is None
    first = parse(body, schemas)
    read, _ = decode_chat_body(body, schemas)
    assert read["tools"] is schemas.known(TOOLS_JSON) is not None
    second = parse(body, schemas)
    assert second.tools is not None and first.tools is not None
    assert second.tools.tool_set is first.tools.tool_set
    spaced = body.replace(b'"tools":', b'"tools": ')  # other bytes around the same list: still known
    assert decode_chat_body(spaced, schemas)[0]["tools"] is first.tools.tool_set


def test_forwarded_body_carries_no_tool_fields_and_reserves_the_tools_text() -> None:
    body = {
        "model": "Qwen/Qwen3-32B",
        "max_tokens": 50,
        "tools": [TOOL],
        "parallel_tool_calls": True,
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "r"},
        ],
    }
    request = parse(body)
    payload = request.payload
    assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(payload)
    assert [m["role"] for m in payload["messages"]] == ["system", "user", "assistant", "user"]
    assert all(set(m) <= {"role", "content"} for m in payload["messages"])
    assert request.tools is not None and request.attempts == 1
    text = tools_text(request.tools)
    assert payload["messages"][0]["content"] == text
    # The added text is reserved for: at least its bytes, beyond the body's.
    assert request.added_prompt_bytes >= len(text.encode())
    assert request.prompt_bound(len(orjson.dumps(body))) >= len(orjson.dumps(payload))


def test_a_required_call_reserves_two_attempts() -> None:
    request = parse(
        {
            "model": "Qwen/Qwen3-32B",
            "max_tokens": 50,
            "n": 2,
            "tools": [TOOL],
            "tool_choice": "required",
            "messages": [{"role": "user", "content": "q"}],
        }
    )
    assert request.attempts == 2
    assert request.completion_bound() == 50 * 2 * 2
    assert request.prompt_bound(100) == 2 * (100 + request.added_prompt_bytes)


def test_tool_choice_none_renders_history_but_reads_no_calls() -> None:
    request = parse(
        {
            "model": "Qwen/Qwen3-32B",
            "tools": [TOOL],
            "tool_choice": "none",
            "messages": [{"role": "user", "content": "q"}],
        }
    )
    assert request.tools is None and request.payload["messages"] == [{"role": "user", "content": "q"}]


def test_models_without_a_tool_format_keep_the_clear_400() -> None:
    with pytest.raises(UnsupportedParameter) as refused:
        parse(
            {"model": "ByteDance-Seed/Seed-X-PPO-7B", "tools": [TOOL], "messages": [{"role": "user", "content": "q"}]}
        )
    assert refused.value.param == "tools"
    with pytest.raises(UnsupportedParameter):  # its tool history is refused by the field filter
        parse(
            {
                "model": "ByteDance-Seed/Seed-X-PPO-7B",
                "messages": [{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "c", "content": "r"}],
            }
        )
