"""Reading tool calls back from Qwen3's answers: whole, and split at every character."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon_platform.tools.answer import (
    CALL,
    REASONING,
    TEXT,
    AnswerScanner,
    _usual_pieces,
    check_call,
    read_answer,
    read_message,
)
from cocoon_platform.tools.offer import SchemaCache, ToolOffer, read_tool_offer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
NOTE = {
    "type": "function",
    "function": {
        "name": "note",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
}
NOW = {"type": "function", "function": {"name": "now"}}


def offer(**choice: Any) -> ToolOffer:
    read = read_tool_offer({"tools": [WEATHER, NOTE, NOW], **choice}, SchemaCache())
    assert read is not None
    return read


def block(name: str, arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def scan_in_pieces(text: str, cuts: list[int]) -> list[tuple[int, str, bool]]:
    """Feed the text cut at the given positions; merge neighbouring pieces of one kind."""
    scanner = AnswerScanner()
    pieces = []
    start = 0
    for cut in [*cuts, len(text)]:
        pieces.extend(scanner.feed(text[start:cut]))
        start = cut
    pieces.extend(scanner.finish())
    merged: list[tuple[int, str, bool]] = []
    for kind, piece, closed in pieces:
        if merged and kind == merged[-1][0] != CALL:
            merged[-1] = (kind, merged[-1][1] + piece, closed)
        else:
            merged.append((kind, piece, closed))
    return merged


ANSWERS = [
    "<think>\nThe user wants weather.\n</think>\n\n" + block("get_weather", {"city": "Paris"}),
    "<think>\nhmm\n</think>\n\nLet me check.\n"
    + block("get_weather", {"city": "Oslo", "days": 2})
    + "\n"
    + block("note", {"text": 'a </tool_call> inside, and "quotes" and \\\\ too <tool_call>'}),
    "Plain answer with < and <t and </ and <tool but no call.",
    "<think>\n\n</think>\n\nNo thoughts, a call: " + block("now", {}),
    "<think>\ncut while thinking",
    'Text then a call cut by max_tokens: <tool_call>\n{"name": "note", "arguments": {"text": "x"}}',
    'Cut inside: <tool_call>\n{"name": "note", "arguments": {"text": "unfinished',
    "  <think>x</think>y",
    '<tool_call>{"name": "now"}</tool_call><tool_call>{"name": "now"}</tool_call>',
    "ünïcödé «<tool_call>»</tool_call> end",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_every_split_reads_as_the_whole(answer: str) -> None:
    whole = scan_in_pieces(answer, [])
    for cut in range(len(answer) + 1):
        assert scan_in_pieces(answer, [cut]) == whole, cut
    assert scan_in_pieces(answer, list(range(1, len(answer)))) == whole  # one character at a time


# Fragments an answer is made of: tags whole and cut, newlines and spaces, text, and call bodies
# whole, cut, invalid, or holding a closing tag inside a string.
FRAGMENTS = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_call>",
        "<thi",
        "</tool_",
        "<",
        "\n",
        "\n\n",
        " ",
        "words",
        "ünï",
        '{"name": "now"}',
        '{"name": "note", "arguments": {"text": "a </tool_call> b"}}',
        '{"name": "get_weather", "arguments": {"city": "Oslo", "days": 2}}',
        '{"name": "note", "arguments": {"text": "cut',
        '{"name": "now",}',
        '"\\"',
    ]
)


ANSWER_TEXTS = st.builds(
    lambda head, parts: head + "".join(parts),
    st.sampled_from(["", "<think>", "\n<think>\n", " <think>"]),  # mostly reasoning first, as Qwen3 answers
    st.lists(FRAGMENTS, max_size=12),
)


@settings(max_examples=3000, deadline=None)
@given(ANSWER_TEXTS)
def test_the_usual_shape_is_split_as_the_scanner_splits_it(answer: str) -> None:
    usual = _usual_pieces(answer)
    if usual is None:
        return
    assert [(kind, piece, closed) for kind, piece, closed, _ in usual] == scan_in_pieces(answer, [])
    for kind, piece, _, value in usual:
        assert value == (orjson.loads(piece) if kind == CALL else None)


@pytest.mark.parametrize("answer", [ANSWERS[0], ANSWERS[3], ANSWERS[8], ANSWERS[2]])
def test_usual_answers_take_the_short_way(answer: str) -> None:
    assert _usual_pieces(answer) is not None
    assert _usual_pieces(ANSWERS[1]) is None  # a closing tag inside a string: the scanner reads it
    assert _usual_pieces(ANSWERS[5]) is None  # a block cut short


def test_scanner_pieces() -> None:
    pieces = scan_in_pieces(ANSWERS[1], [])
    assert [kind for kind, _, _ in pieces] == [REASONING, TEXT, CALL, TEXT, CALL]
    assert pieces[0][1] == "hmm" and pieces[1][1] == "Let me check.\n"
    assert json.loads(pieces[4][1])["arguments"]["text"].startswith("a </tool_call> inside")
    assert scan_in_pieces(ANSWERS[4], []) == [(REASONING, "cut while thinking", True)]
    assert scan_in_pieces(ANSWERS[2], []) == [(TEXT, ANSWERS[2], True)]
    assert scan_in_pieces(ANSWERS[7], []) == [(REASONING, "x", True), (TEXT, "y", True)]
    cut = scan_in_pieces(ANSWERS[5], [])
    assert cut[-1][0] == CALL and cut[-1][2] is False


def test_calls_read_whole() -> None:
    read = read_answer(ANSWERS[1], offer())
    assert read.reasoning == "hmm" and read.content == "Let me check."
    assert [c["function"]["name"] for c in read.tool_calls] == ["get_weather", "note"]
    assert json.loads(read.tool_calls[0]["function"]["arguments"]) == {"city": "Oslo", "days": 2}
    assert read.tool_calls[0]["id"].startswith("call_") and read.tool_calls[0]["id"] != read.tool_calls[1]["id"]
    assert read.tool_calls[0]["type"] == "function"
    only = read_answer(ANSWERS[0], offer())
    assert only.content is None and len(only.tool_calls) == 1


def test_a_call_cut_after_its_json_is_accepted_and_one_cut_inside_is_text() -> None:
    read = read_answer(ANSWERS[5], offer())
    assert read.content == "Text then a call cut by max_tokens:" and len(read.tool_calls) == 1
    read = read_answer(ANSWERS[6], offer())
    assert read.tool_calls == [] and read.content == ANSWERS[6]


@pytest.mark.parametrize(
    "inside",
    [
        '{"name": "get_weather", "arguments": {"city": 5}}',  # against the schema
        '{"name": "get_weather", "arguments": {}}',  # a required property missing
        '{"name": "get_weather", "arguments": {"city": "x", "extra": 1}}',  # additionalProperties
        '{"name": "get_weather", "arguments": {"city": "x", "days": 0}}',  # minimum
        '{"name": "unknown", "arguments": {}}',  # not offered
        '{"name": "get_weather", "arguments": {"city": "x"',  # invalid JSON
        "not json at all",
        '["get_weather"]',
        '{"arguments": {"city": "x"}}',
        '{"name": "get_weather", "arguments": "[1]"}',
    ],
)
def test_invalid_calls_stay_as_text(inside: str) -> None:
    text = f"Before <tool_call>\n{inside}\n</tool_call> after"
    read = read_answer(text, offer())
    assert read.tool_calls == [] and read.content == text
    assert check_call(inside, offer()) is None


@pytest.mark.parametrize(
    "inside, arguments",
    [
        '```json\n{"name": "note", "arguments": {"text": "x"}}\n```',
        '{"name": "note", "arguments": {"text": "x",},}',
        '{"name": "note", "arguments": "{\\"text\\": \\"x\\"}"}',
        '{"name": "note", "parameters": {"text": "x"}}',
        '{"name": "now", "arguments": ""}',
        '{"name": "now"}',
    ]
    and [
        ('```json\n{"name": "note", "arguments": {"text": "x"}}\n```', {"text": "x"}),
        ('{"name": "note", "arguments": {"text": "x",},}', {"text": "x"}),
        ('{"name": "note", "arguments": "{\\"text\\": \\"x\\"}"}', {"text": "x"}),
        ('{"name": "note", "parameters": {"text": "x"}}', {"text": "x"}),
        ('{"name": "now", "arguments": ""}', {}),
        ('{"name": "now"}', {}),
    ],
)
def test_lenient_parsing(inside: str, arguments: dict[str, Any]) -> None:
    call = check_call(inside, offer())
    assert call is not None and json.loads(call["function"]["arguments"]) == arguments


def test_several_calls_and_the_first_only() -> None:
    text = block("now", {}) + "\n" + block("note", {"text": "a"}) + "\n" + block("note", {"text": "b"})
    assert len(read_answer(text, offer()).tool_calls) == 3
    single = read_answer(text, offer(parallel_tool_calls=False))
    assert [json.loads(c["function"]["arguments"]) for c in single.tool_calls] == [{}]
    assert single.content is None


def test_tool_choice_limits_what_counts_as_a_call() -> None:
    text = block("now", {}) + block("note", {"text": "a"})
    named = read_answer(text, offer(tool_choice={"type": "function", "function": {"name": "note"}}))
    assert [c["function"]["name"] for c in named.tool_calls] == ["note"]
    assert named.content == block("now", {})
    none = read_answer(text, offer(tool_choice="none"))
    assert none.tool_calls == [] and none.content == text


def test_message_rewritten_in_place() -> None:
    message: dict[str, Any] = {"role": "assistant", "content": ANSWERS[1], "tool_calls": []}
    assert read_message(message, offer())
    assert message["reasoning_content"] == "hmm" and message["content"] == "Let me check."
    assert len(message["tool_calls"]) == 2
    plain: dict[str, Any] = {"role": "assistant", "content": "Hello", "reasoning_content": "thought", "tool_calls": []}
    assert not read_message(plain, offer())
    assert plain == {"role": "assistant", "content": "Hello", "reasoning_content": "thought"}


def test_a_schema_that_cannot_be_applied_leaves_the_call_as_text() -> None:
    broken = read_tool_offer(
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}},
                    },
                }
            ]
        },
        SchemaCache(),
    )
    assert broken is not None
    text = '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    read = read_answer(text, broken)
    assert read.tool_calls == [] and read.content == text


@pytest.mark.parametrize("levels", [1020, 1100])
def test_a_call_nested_deeper_than_json_can_take_stays_text(levels: int) -> None:
    """1,020 levels: orjson reads them, but neither it nor json.dumps writes them back; 1,100:
    orjson refuses them, and json's decoder recurses past its limit. Either raised RecursionError
    out of reading the answer, whole or streamed (check_call reads both)."""
    text = '<tool_call>{"name": "now", "arguments": {"x": ' + "[" * levels + "]" * levels + "}}</tool_call>"
    answer = read_answer(text, offer())
    assert (answer.content, answer.tool_calls) == (text, [])
    assert check_call(text[len("<tool_call>") : -len("</tool_call>")], offer()) is None
