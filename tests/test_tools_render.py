"""The Hermes request side, checked against Qwen3's own chat template (tests/fixtures).

Each case renders the conversation twice with the template: as the caller sent it (with
`tools`), and as the platform forwards it (no tools, rendered messages). The prompts must be
equal byte for byte: the model then sees exactly what it was trained on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import jinja2
import pytest

from cocoon_platform.errors import InvalidRequest
from cocoon_platform.tools.hermes import (
    NAMED_INSTRUCTION,
    REQUIRED_INSTRUCTION,
    SINGLE_INSTRUCTION,
    has_tool_history,
    render_messages,
    tools_text,
)
from cocoon_platform.tools.offer import NAMED, REQUIRED, SchemaCache, read_tool_offer
from cocoon_platform.upstream.catalog import HERMES, CatalogError, ModelCatalog

TEMPLATE_PATH = Path(__file__).parent / "fixtures" / "qwen3-chat-template.jinja"


def _template() -> jinja2.Template:
    # As transformers compiles chat templates: trim/lstrip blocks, and its own `tojson`
    # (json.dumps, non-ASCII kept, key order kept), not jinja2's HTML-safe one.
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=False)
    return env.from_string(TEMPLATE_PATH.read_text())


TEMPLATE = _template()


def prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
    return TEMPLATE.render(messages=messages, tools=tools, add_generation_prompt=True)


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Météo actuelle d'une ville — «°C»",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}, "limit": {"type": "number", "minimum": 1.5}},
        },
    },
}
NO_PARAMS = {"type": "function", "function": {"name": "now", "description": "The time"}}


def forwarded(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, **choice: Any
) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"messages": messages, **choice}
    if tools is not None:
        body["tools"] = tools
    offer = read_tool_offer(body, SchemaCache())
    return render_messages(messages, tools_text(offer))


def same_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
    sent = forwarded(messages, tools)
    assert all(m["role"] != "tool" and "tool_calls" not in m for m in sent)
    # vLLM hands the template "" for a null content (jinja2 cannot add None to a string).
    as_vllm = [dict(m, content="") if m.get("content") is None else m for m in messages]
    assert prompt(sent) == prompt(as_vllm, tools)


CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
CALL2 = {"id": "call_2", "type": "function", "function": {"name": "search", "arguments": '{"q":"x</tool_call>"}'}}


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Weather in Paris?"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Weather in Paris?"}],
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris and news?"},
            {"role": "assistant", "content": None, "tool_calls": [CALL, CALL2]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "nothing new"},
        ],
        [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
            {"role": "assistant", "content": "It is 18°C."},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": "<think>\nagain\n</think>\n\n", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "20°C"},
        ],
    ],
)
def test_rendered_as_the_template_renders_tools(messages: list[dict[str, Any]]) -> None:
    same_prompt(messages, [WEATHER, SEARCH, NO_PARAMS])


def test_generated_conversations_render_as_the_template() -> None:
    """Conversations built at random (fixed seed): every shape of turn, in any order."""
    rng = random.Random(16)
    texts = ["hi", "", "multi\nline", "ünïcödé «x»", "<tool_response>\nodd\n</tool_response>", "a\n\n"]
    for _ in range(300):
        messages: list[dict[str, Any]] = []
        if rng.random() < 0.5:
            messages.append({"role": "system", "content": rng.choice(texts)})
        messages.append({"role": "user", "content": rng.choice(texts) or "q"})
        for _turn in range(rng.randint(0, 5)):
            kind = rng.choice(["user", "assistant", "calls", "tools"])
            if kind == "user":
                messages.append({"role": "user", "content": rng.choice(texts)})
            elif kind == "assistant":
                messages.append({"role": "assistant", "content": rng.choice(texts)})
            elif kind == "calls":
                calls = []
                for n in range(rng.randint(1, 3)):
                    arguments: Any = rng.choice(['{"city": "Oslo"}', "{}", {"q": "ä", "limit": 2.5}, '{"a":1}'])
                    calls.append(
                        {
                            "id": f"call_{n}",
                            "type": "function",
                            "function": {"name": rng.choice(["get_weather", "search"]), "arguments": arguments},
                        }
                    )
                messages.append(
                    {"role": "assistant", "content": rng.choice([None, "", "Checking.", "x\n"]), "tool_calls": calls}
                )
            else:
                for n in range(rng.randint(1, 3)):
                    messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": rng.choice(texts)})
        same_prompt(messages, rng.choice([[WEATHER], [WEATHER, SEARCH, NO_PARAMS], [SEARCH]]))


def test_history_without_tools_offered_renders_as_the_template() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
    ]
    assert has_tool_history(messages)
    sent = forwarded(messages, None)
    assert prompt(sent) == prompt(messages)
    assert not has_tool_history([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_developer_first_counts_as_the_system_message() -> None:
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Weather?"}]
    sent = forwarded(messages, [WEATHER])
    assert sent[0]["role"] == "system"
    assert prompt(sent) == prompt([{"role": "system", "content": "Be brief."}, messages[1]], [WEATHER])


def test_text_parts_are_joined_as_vllm_joins_them() -> None:
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": [{"type": "text", "text": "r1"}, {"type": "text", "text": "r2"}],
        },
    ]
    joined = [
        {"role": "system", "content": "a\nb"},
        messages[1],
        dict(messages[2], content=""),
        {"role": "tool", "tool_call_id": "call_1", "content": "r1\nr2"},
    ]
    assert prompt(forwarded(messages, [WEATHER])) == prompt(joined, [WEATHER])


def test_tool_choice_none_offers_nothing_but_keeps_the_history() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
    ]
    sent = forwarded(messages, [WEATHER], tool_choice="none")
    assert prompt(sent) == prompt(messages)
    assert "<tools>" not in prompt(sent)


def test_required_named_and_single_call_add_their_sentences() -> None:
    messages = [{"role": "user", "content": "Weather?"}]
    required = forwarded(messages, [WEATHER, SEARCH], tool_choice="required")[0]["content"]
    base = forwarded(messages, [WEATHER, SEARCH])[0]["content"]
    assert required == base + "\n\n" + REQUIRED_INSTRUCTION
    named = forwarded(
        messages,
        [WEATHER, SEARCH],
        tool_choice={"type": "function", "function": {"name": "search"}},
        parallel_tool_calls=False,
    )[0]["content"]
    assert named == base + "\n\n" + NAMED_INSTRUCTION.format(name="search") + "\n\n" + SINGLE_INSTRUCTION


def test_offer_reading() -> None:
    schemas = SchemaCache()
    body: dict[str, Any] = {
        "tools": [WEATHER, SEARCH],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "messages": [],
    }
    offer = read_tool_offer(body, schemas)
    assert offer is not None and offer.choice == REQUIRED and not offer.parallel and offer.must_call
    assert body == {"messages": []}
    assert offer.tool("search") is not None and offer.tool("nope") is None
    named = read_tool_offer(
        {"tools": [WEATHER, SEARCH], "tool_choice": {"type": "function", "function": {"name": "required"}}}
        | {"tools": [WEATHER, {"type": "function", "function": {"name": "required"}}]},
        schemas,
    )
    assert named is not None and named.choice == NAMED and named.named == "required"
    assert named.tool("required") is not None and named.tool("get_weather") is None
    assert read_tool_offer({"tools": [], "tool_choice": "auto"}, schemas) is None
    assert read_tool_offer({"parallel_tool_calls": True}, schemas) is None
    # A tool list is checked and compiled once, and shared by later requests sending it.
    again = read_tool_offer({"tools": [dict(WEATHER), SEARCH], "tool_choice": "auto"}, schemas)
    assert again is not None and again.tool_set is offer.tool_set and again.choice == "auto"


def test_the_tool_cache_stays_within_its_budget() -> None:
    schemas = SchemaCache(budget_bytes=4000)
    first = schemas.tool_set([WEATHER])
    assert schemas.tool_set([WEATHER]) is first
    for n in range(40):  # more lists than fit: the oldest go
        schemas.tool_set([{"type": "function", "function": {"name": f"f{n}", "description": "x" * 100}}])
    assert schemas.tool_set([WEATHER]) is not first
    big = [{"type": "function", "function": {"name": "big", "description": "y" * 1000}}]
    assert schemas.tool_set(big) is not schemas.tool_set(big)  # over an eighth of the budget: not kept


@pytest.mark.parametrize(
    "body, param",
    [
        ({"tools": {"a": 1}}, "tools"),
        ({"tools": [{"type": "function"}]}, "tools[0]"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1]"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "nonsense"}}}]},
            "tools[0].function.parameters",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [WEATHER], "tool_choice": "always"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER], "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ],
)
def test_malformed_offers_are_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        read_tool_offer(body, SchemaCache())
    assert caught.value.param == param


def test_malformed_history_is_refused() -> None:
    with pytest.raises(InvalidRequest):
        render_messages([{"role": "assistant", "content": "", "tool_calls": {"x": 1}}], "")
    with pytest.raises(InvalidRequest):
        render_messages([{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}], "")


def test_catalog_tool_formats(tmp_path: Path) -> None:
    catalog = ModelCatalog.load(None)
    assert catalog.info("Qwen/Qwen3-32B").tool_format == HERMES
    assert catalog.info("ByteDance-Seed/Seed-X-PPO-7B").tool_format is None
    assert catalog.info("Qwen/Qwen3-8B").tool_format == HERMES  # derived
    assert catalog.info("Qwen/Qwen3-Coder-30B-A3B-Instruct").tool_format is None
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"Qwen/Qwen3-32B": {"tool_format": None}, "acme/chat": {"tool_format": "hermes"}}))
    catalog = ModelCatalog.load(str(path))
    assert catalog.info("Qwen/Qwen3-32B").tool_format is None
    assert catalog.info("Qwen/Qwen3-32B").context_window == 131072
    assert catalog.info("acme/chat").tool_format == HERMES
    path.write_text(json.dumps({"acme/chat": {"tool_format": "xml"}}))
    with pytest.raises(CatalogError):
        ModelCatalog.load(str(path))
