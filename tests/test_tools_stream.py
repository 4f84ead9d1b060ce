"""The stream translator: upstream chunks of a Qwen3 answer in, OpenAI tool-call chunks out.

The output is read back with the openai SDK's own stream accumulator, as a client would."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from openai.lib.streaming.chat._completions import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from cocoon_platform.tools.offer import SchemaCache, ToolOffer, read_tool_offer
from cocoon_platform.tools.stream import StreamTranslator

NOTE = {
    "type": "function",
    "function": {
        "name": "note",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
}
NOW = {"type": "function", "function": {"name": "now"}}
ANSWER = (
    '<think>\nI should call.\n</think>\n\nCalling now.\n<tool_call>\n{"name": "note", "arguments": '
    '{"text": "a </tool_call> b"}}\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
)


def offer(**choice: Any) -> ToolOffer:
    read = read_tool_offer({"tools": [NOTE, NOW], **choice}, SchemaCache())
    assert read is not None
    return read


def upstream(text: str, size: int, finish: str = "stop", **ending: Any) -> list[bytes]:
    """The answer as vLLM streams it: a role chunk, `size`-character content chunks, a finish
    (with the `ending` fields, such as `stop_reason`)."""
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "Qwen/Qwen3-32B"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    for start in range(0, len(text), size):
        chunks.append(
            {**head, "choices": [{"index": 0, "delta": {"content": text[start : start + size]}, "finish_reason": None}]}
        )
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish, **ending}]})
    return [orjson.dumps(c) for c in chunks]


def accumulate(payloads: list[bytes]) -> Any:
    state = ChatCompletionStreamState()
    for payload in payloads:
        state.handle_chunk(ChatCompletionChunk.model_validate(orjson.loads(payload)))
    return state.get_final_completion()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 1000])
def test_calls_reach_the_sdk_accumulator(size: int) -> None:
    translator = StreamTranslator(offer())
    out: list[bytes] = []
    for payload in upstream(ANSWER, size):
        out.extend(translator.translate([payload]))
    out.extend(translator.finish())
    completion = accumulate(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Calling now."  # the newlines around the calls are not content
    assert [c.function.name for c in choice.message.tool_calls] == ["note", "now"]
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"text": "a </tool_call> b"}
    assert choice.message.tool_calls[0].id.startswith("call_")
    reasoning = "".join(orjson.loads(p)["choices"][0]["delta"].get("reasoning_content") or "" for p in out)
    assert reasoning == "I should call."


@pytest.mark.parametrize("hold_text", [False, True])
def test_the_networks_stop_reason_stays_on_the_finishing_chunk(hold_text: bool) -> None:
    """vLLM's `stop_reason` (the stop string or token that ended the choice, or null) reaches the
    caller as the network sent it, on the chunk that finishes the choice, whether the choice made
    a call or its text was held back; where the network sent none, none is added."""
    for text, reason in (("Just words, no call.", "stop"), (ANSWER, "tool_calls")):
        for stop_reason in ("END", None, 151643):
            translator = StreamTranslator(offer(), hold_text=hold_text)
            out = translator.translate(upstream(text, 5, stop_reason=stop_reason)) + translator.finish()
            choices = [orjson.loads(payload)["choices"][0] for payload in out]
            assert [c.get("stop_reason", "unset") for c in choices] == ["unset"] * (len(choices) - 1) + [stop_reason]
            assert choices[-1]["finish_reason"] == reason
        translator = StreamTranslator(offer(), hold_text=hold_text)
        out = translator.translate(upstream(text, 5)) + translator.finish()
        assert not any("stop_reason" in orjson.loads(payload)["choices"][0] for payload in out)


def test_only_calls_leave_no_content() -> None:
    translator = StreamTranslator(offer())
    text = '\n\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>\n'
    out = translator.translate(upstream(text, 3)) + translator.finish()
    message = accumulate(out).choices[0].message
    assert message.content is None and len(message.tool_calls) == 1
    spaced = StreamTranslator(offer())
    out = spaced.translate(upstream("  Hi\n\n", 1)) + spaced.finish()
    assert accumulate(out).choices[0].message.content == "  Hi\n\n"  # kept whole without a call


def test_plain_text_streams_as_it_comes_and_invalid_calls_stay_text() -> None:
    text = 'Hello <b>there</b> <tool_call>\n{"name": "note", "arguments": {}}\n</tool_call>'
    translator = StreamTranslator(offer())
    first = translator.translate(upstream(text, 4)[:3])
    assert [orjson.loads(p)["choices"][0]["delta"].get("content") for p in first[1:]] == ["Hell", "o <b"]
    held = StreamTranslator(offer()).translate(upstream("x <tool", 100)[:2])
    assert orjson.loads(held[-1])["choices"][0]["delta"] == {"content": "x"}  # " <tool" waits: a tag may start
    out = first + translator.translate(upstream(text, 4)[3:]) + translator.finish()
    completion = accumulate(out)
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == text and not completion.choices[0].message.tool_calls


def test_held_text_waits_for_a_call_or_is_released() -> None:
    translator = StreamTranslator(offer(tool_choice="required"), hold_text=True)
    out = translator.translate(upstream("No call, sorry.", 5))
    assert translator.waiting
    assert all(
        "content" not in orjson.loads(p)["choices"][0]["delta"] or not orjson.loads(p)["choices"][0]["delta"]["content"]
        for p in out
    )
    released = translator.finish()
    assert accumulate(out + released).choices[0].message.content == "No call, sorry."
    called = StreamTranslator(offer(tool_choice="required"), hold_text=True)
    out = called.translate(upstream(ANSWER, 9))
    assert not called.waiting
    assert accumulate(out).choices[0].message.content.strip() == "Calling now."


def test_single_call_and_cut_stream() -> None:
    translator = StreamTranslator(offer(parallel_tool_calls=False))
    out = translator.translate(upstream(ANSWER, 5))
    assert [c.function.name for c in accumulate(out).choices[0].message.tool_calls] == ["note"]
    cut = ANSWER[: ANSWER.rindex("</tool_call>")]  # the last block cut after its JSON
    translator = StreamTranslator(offer())
    out = translator.translate(upstream(cut, 5)[:-1]) + translator.finish()
    calls = [json.loads(p)["choices"][0]["delta"].get("tool_calls") for p in out]
    assert [c[0]["function"]["name"] for c in calls if c] == ["note", "now"]
