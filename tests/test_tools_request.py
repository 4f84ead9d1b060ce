"""A chat request with tools as parse_request prepares it: what is forwarded, and what is reserved."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from cocoon_platform.errors import UnsupportedParameter
from cocoon_platform.proxy.request import InferenceRequest, parse_request
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


def parse(body: dict[str, Any]) -> InferenceRequest:
    return parse_request(
        "/v1/chat/completions",
        orjson.dumps(body),
        max_tokens_cap=1000,
        default_max_tokens=100,
        max_coefficient=1000,
        tool_format_of=CATALOG.tool_format,
        schemas=SchemaCache(),
    )


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
