"""A chat request with tools as parse_request prepares it: what is forwarded, and what is reserved."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        return "error", (type(error), error.status, error.body())
    offered = None if request.tools is None else (request.tools.tool_set.lines, request.tools.choice)
    return "request", (orjson.dumps(request.payload), offered, request.added_prompt_bytes, request.attempts)


NO_PARAMS_TOOL = {"type": "function", "function": {"name": "now"}}
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
    # A key sent twice: its last value counts, but an earlier one that is not JSON fails the body.
    b'{"model":"Qwen/Qwen3-32B","tools":[{"type":"function","function":{"name":"x","parameters":{"maximum":1e400}}}],'
    b'"tools":%s,"messages":[{"role":"user","content":"q"}]}',
    b'{"model":"Qwen/Qwen3-32B","messages":"\xff","tools":%s,"messages":[{"role":"user","content":"q"}]}',
    b'{"model":"Qwen/Qwen3-32B","tools":null,"tools":%s,"messages":[{"role":"user","content":"q"}]}',
    # The same list elsewhere in the body too: it is not taken for the field.
    b'{"model":"Qwen/Qwen3-32B","response_format":{"type":"json_schema","json_schema":{"name":"x",'
    b'"schema":{"default":%s}}},"tools":%s,"messages":[{"role":"user","content":"q"}]}',
    # Nested deeper than orjson reads (and than msgspec can recurse): a 422, never a RecursionError.
    b'{"model":"Qwen/Qwen3-32B","tools":%s,"messages":[{"role":"user","content":"q"}],"m":'
    + b"[" * 1100
    + b"]" * 1100
    + b"}",
]


@pytest.mark.parametrize("template", SAME_TOOLS)
def test_a_tool_list_compiled_before_gives_what_a_fresh_one_gives(template: bytes) -> None:
    """A body whose tools were compiled before (the list not decoded again) is read exactly as
    the same body by a process that never saw them: the same payload and offer, or the same error."""
    body = template.replace(b"%s", TOOLS_JSON)
    warm = SchemaCache()
    parse({"model": "Qwen/Qwen3-32B", "tools": [TOOL], "messages": [{"role": "user", "content": "q"}]}, warm)
    assert warm.known(TOOLS_JSON) is not None
    assert outcome(body, warm) == outcome(body, SchemaCache())


# Pieces of chat bodies: tool lists spelt in several ways (valid, refused, not lists, one with an
# integer beyond 64 bits, one with a number orjson cannot read), other fields' values (valid,
# refused, not JSON to orjson, nested deeper than it reads), `tools` keys of other spellings.
BIG = {"type": "function", "function": {"name": "big", "parameters": {"maximum": 123456789012345678901234567890}}}
TOOL_LISTS = [
    TOOLS_JSON,
    json.dumps([TOOL, BIG]).encode(),
    b"[ " + orjson.dumps(TOOL) + b" ]",
    b'[{"type":"function","function":{"name":"a"},"function":{"name":"b"}}]',
    b'[{"type":"function","function":{"name":"tools","parameters":{"properties":{"tools":{"type":"string"}}}}}]',
    b'[{"type":"function","function":{"name":"a"}},{"type":"function","function":{"name":"a"}}]',
    b'[{"type":"function","function":{"name":"x","parameters":{"type":12}}}]',
    b'[{"type":"function","function":{"name":"x","parameters":{"maximum":1e400}}}]',
    b'[{"type":"function","function":{"name":"x\xff"}}]',
    b"null",
    b"[]",
    b"{}",
    b"[1]",
]
FIELDS: dict[bytes, list[bytes]] = {
    b'"model"': [b'"Qwen/Qwen3-32B"', b'"ByteDance-Seed/Seed-X-PPO-7B"', b"1"],
    b'"messages"': [
        b'[{"role":"user","content":"q"}]',
        b'[{"role":"user","content":"q","tools":%s}]',
        b'[{"role":"tool","content":"r","tool_call_id":"c"}]',
        b'[{"role":"user","content":"\xff"}]',
        b'[{"role":"user","content":"\\ud800"}]',
        b"[]",
        b"[" * 1100 + b"]" * 1100,
    ],
    b'"tools"': TOOL_LISTS,
    b'"tool\\u0073"': TOOL_LISTS,
    b'"tools_x"': TOOL_LISTS,
    b'"tool_choice"': [b'"auto"', b'"none"', b'"required"', b'{"type":"function","function":{"name":"lookup"}}'],
    b'"parallel_tool_calls"': [b"false", b'"x"'],
    b'"max_tokens"': [b"10", b"123456789012345678901234567890", b"1e400", b"1.5"],
    b'"response_format"': [
        b'{"type":"text"}',
        b'{"type":"json_schema","json_schema":{"name":"x","schema":{"default":%s}}}',
    ],
    b'"user"': [b'"u"', b'{"tools":%s}'],
}
SPACES = st.sampled_from([b"", b" ", b"\n", b"\r\n\t"])


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    """A chat body's bytes, as clients and attackers write them: fields in any order, keys sent
    twice, the same tool list elsewhere in the body, whitespace anywhere, sometimes cut or followed."""
    keys = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4))
    keys += [key for key in (b'"model"', b'"messages"', b'"tools"') if draw(st.integers(0, 4))]  # mostly there
    fields = []
    for key in draw(st.permutations(keys)):
        values = FIELDS[key]
        value = draw(st.sampled_from(values)) if draw(st.booleans()) else values[0]  # mostly valid
        if b"%s" in value:
            value = value % draw(st.sampled_from(TOOL_LISTS))
        fields.append(draw(SPACES) + key + draw(SPACES) + b":" + draw(SPACES) + value + draw(SPACES))
    end = draw(st.sampled_from([b" ", b"x", b"}"])) if draw(st.integers(0, 4)) == 0 else b""
    return draw(SPACES) + b"{" + b",".join(fields) + b"}" + end


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


def test_kept_lists_are_found_by_their_first_bytes_a_few_to_a_head() -> None:
    """`known_at` finds a kept list where a body holds it; lists beginning alike share a head, at
    most HEAD_KEYS of them (the oldest dropped, from the cache too); a list shorter than a head is
    kept but only found by its whole JSON, and a body holding it is still read exactly."""
    schemas = SchemaCache()
    lists = [
        orjson.dumps(
            [
                dict(TOOL, function=dict(TOOL["function"], description="x" * 80)),
                dict(NO_PARAMS_TOOL, function={"name": f"n{i}"}),
            ]
        )
        for i in range(SchemaCache.HEAD_KEYS + 2)
    ]
    assert len({tools_json[: SchemaCache.HEAD] for tools_json in lists}) == 1
    for tools_json in lists:
        schemas.tool_set(orjson.loads(tools_json), tools_json)
    dropped, kept = lists[:2], lists[2:]
    for tools_json in dropped:
        assert schemas.known(tools_json) is None and schemas.known_at(b"x" + tools_json, 1) is None
    for tools_json in kept:
        found = schemas.known_at(b'{"tools":' + tools_json + b"}", 9)
        assert found is not None and found[0] == tools_json and found[1] is schemas.known(tools_json)
        assert schemas.known_at(b'{"tools":' + tools_json + b"}", 8) is None
    short = b'[{"function":{"name":"a"}}]'
    schemas.tool_set(orjson.loads(short), short)
    assert schemas.known(short) is not None and schemas.known_at(short, 0) is None
    body = b'{"model":"Qwen/Qwen3-32B","tools":%s,"messages":[{"role":"user","content":"q"}]}' % short
    assert outcome(body, schemas) == outcome(body, SchemaCache())


def test_lists_dropped_for_space_leave_their_heads() -> None:
    """Dropping the oldest lists for the size budget drops them from the head index too."""
    lists = [orjson.dumps([dict(NO_PARAMS_TOOL, function={"name": f"tool_{i:02}_" + "y" * 60})]) for i in range(20)]
    schemas = SchemaCache(budget_bytes=len(lists[0]) * 8)
    for tools_json in lists:
        schemas.tool_set(orjson.loads(tools_json), tools_json)
    assert [schemas.known_at(t, 0) is not None for t in lists] == [False] * 12 + [True] * 8
    assert [schemas.known(t) is not None for t in lists] == [False] * 12 + [True] * 8


@settings(max_examples=500, deadline=None)
@given(chat_bodies())
def test_any_body_reads_the_same_with_its_tools_compiled_before(body: bytes) -> None:
    """A warm cache (every list compiled before, and this body read once) reads any body as a
    cold one does; and each kept set is the one its key's JSON compiles to."""
    cold = outcome(body, SchemaCache())
    warm = SchemaCache()
    for tools_json in TOOL_LISTS:
        outcome(b'{"model":"Qwen/Qwen3-32B","messages":[{"role":"user","content":"q"}],"tools":%s}' % tools_json, warm)
    outcome(body, warm)
    assert outcome(body, warm) == cold
    for tools_json in TOOL_LISTS:
        kept = warm.known(tools_json)
        assert kept is None or kept.lines == SchemaCache().tool_set(orjson.loads(tools_json)).lines


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


def nested_schema(levels: int) -> bytes:
    schema = b'{"type": "string"}'
    for _ in range(levels):
        schema = b'{"type": "object", "properties": {"a": ' + schema + b"}}"
    return schema


DEEP = b"[" * 1015 + b"]" * 1015  # within what orjson reads (1,024 levels), beyond what json.dumps writes


@pytest.mark.parametrize(
    ("body", "param", "rule"),
    [
        (
            b'{"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "q"}],'
            b'"tools": [{"type": "function", "function": {"name": "f", "description": %s}}]}' % DEEP,
            "tools[0]",
            "tools[0] is nested too deeply",
        ),
        (
            b'{"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "q"}],'
            b'"tools": [{"type": "function", "function": {"name": "f", "parameters": %s}}]}' % nested_schema(500),
            "tools[0].function.parameters",
            "it is nested too deeply to be checked",
        ),
        (
            b'{"model": "Qwen/Qwen3-32B", "tools": [{"type": "function", "function": {"name": "f"}}], "messages": ['
            b'{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "c",'
            b'"type": "function", "function": {"name": "f", "arguments": %s}}]},'
            b'{"role": "tool", "tool_call_id": "c", "content": "r"}]}' % DEEP,
            "messages[1].tool_calls",
            "messages[1].tool_calls is nested too deeply",
        ),
    ],
)
def test_tools_nested_deeper_than_json_dumps_writes_are_a_400(body: bytes, param: str, rule: str) -> None:
    """The chat template's JSON of a tool or of a call in the history is written by `json.dumps`,
    which recurses per level: a RecursionError there was a 500."""
    with pytest.raises(PlatformError) as refused:
        parse(body)
    assert refused.value.status == 400 and refused.value.param == param and rule in str(refused.value)
