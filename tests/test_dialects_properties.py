"""Property tests of both dialects' translations (no processes): a conversation written in a
dialect becomes the same chat conversation, and any chat answer, whole or streamed in any
pieces, becomes a dialect answer that keeps its text, reasoning, tool calls and usage."""

from __future__ import annotations

import json
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from cocoon_platform.dialects import DialectStream, chat
from cocoon_platform.dialects.chat import frame_chunks
from cocoon_platform.dialects.messages import MessagesDialect
from cocoon_platform.dialects.responses import ResponsesDialect
from cocoon_platform.errors import InvalidRequest, UpstreamError
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.proxy.relay import read_events, read_texts
from cocoon_platform.proxy.request import ValidationFailed

TEXT = st.text(min_size=1, max_size=30)
NAMES = st.sampled_from(["get_weather", "get_time", "lookup"])
ARGUMENTS = st.dictionaries(st.sampled_from(["city", "zone", "n"]), st.one_of(TEXT, st.integers(-5, 5)), max_size=3)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Chat messages as a tool-using client sends them: user turns, assistant text or tool calls,
    and each call's result."""
    messages: list[dict[str, Any]] = []
    for turn in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(TEXT)})
        if draw(st.booleans()):
            count = draw(st.integers(1, 2))
            calls = [
                {
                    "id": f"call_{turn}_{i}",
                    "type": "function",
                    "function": {"name": draw(NAMES), "arguments": json.dumps(draw(ARGUMENTS))},
                }
                for i in range(count)
            ]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            messages.extend({"role": "tool", "tool_call_id": call["id"], "content": draw(TEXT)} for call in calls)
        else:
            messages.append({"role": "assistant", "content": draw(TEXT)})
    return messages


def as_responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "tool":
            items.append(
                {"type": "function_call_output", "call_id": message["tool_call_id"], "output": message["content"]}
            )
        elif message.get("tool_calls"):
            items.extend(
                {
                    "type": "function_call",
                    "call_id": call["id"],
                    "name": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                }
                for call in message["tool_calls"]
            )
        else:
            kind = "input_text" if message["role"] == "user" else "output_text"
            items.append(
                {"type": "message", "role": message["role"], "content": [{"type": kind, "text": message["content"]}]}
            )
            items.append({"type": "reasoning", "id": "rs_x", "summary": []})  # dropped on the way in
    return items


def as_anthropic_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message["tool_call_id"],
                "content": [{"type": "text", "text": message["content"], "cache_control": {"type": "ephemeral"}}],
            }
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif message.get("tool_calls"):
            out.append(
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hidden", "signature": ""},
                        *(
                            {
                                "type": "tool_use",
                                "id": call["id"],
                                "name": call["function"]["name"],
                                "input": json.loads(call["function"]["arguments"]),
                            }
                            for call in message["tool_calls"]
                        ),
                    ],
                }
            )
        else:
            out.append({"role": message["role"], "content": [{"type": "text", "text": message["content"]}]})
    return out


def comparable(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool call arguments compared as JSON values, not text."""
    out = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {
                    **call,
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": json.loads(call["function"]["arguments"]),
                    },
                }
                for call in message["tool_calls"]
            ]
        out.append(message)
    return out


@settings(max_examples=150, deadline=None)
@given(conversations(), st.one_of(st.none(), TEXT))
def test_a_responses_conversation_becomes_the_same_chat_conversation(
    messages: list[dict[str, Any]], instructions: str | None
) -> None:
    body: dict[str, Any] = {"model": "m", "input": as_responses_input(messages)}
    if instructions is not None:
        body["instructions"] = instructions
    chat = ResponsesDialect().translate(body).chat
    expected = ([{"role": "system", "content": instructions}] if instructions is not None else []) + messages
    assert comparable(chat["messages"]) == comparable(expected)


@settings(max_examples=150, deadline=None)
@given(conversations(), st.one_of(st.none(), TEXT))
def test_an_anthropic_conversation_becomes_the_same_chat_conversation(
    messages: list[dict[str, Any]], system: str | None
) -> None:
    body: dict[str, Any] = {"model": "m", "max_tokens": 10, "messages": as_anthropic_messages(messages)}
    if system is not None:
        body["system"] = [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    chat = MessagesDialect().translate(body).chat
    expected = ([{"role": "system", "content": system}] if system is not None else []) + messages
    assert comparable(chat["messages"]) == comparable(expected)


@st.composite
def chat_answers(draw: st.DrawFn) -> dict[str, Any]:
    """A chat answer: reasoning, text and tool calls (any may be absent), a finish reason, usage."""
    reasoning = draw(st.lists(TEXT, max_size=4))
    text = draw(st.lists(TEXT, max_size=5))
    calls = [
        {"id": f"call_{i}", "name": draw(NAMES), "pieces": draw(st.lists(TEXT, min_size=1, max_size=3))}
        for i in range(draw(st.integers(0, 2)))
    ]
    for call in calls:  # arguments as a model writes them: JSON text, cut anywhere
        arguments = json.dumps(draw(ARGUMENTS))
        cuts = sorted(draw(st.lists(st.integers(0, len(arguments)), max_size=3)))
        call["pieces"] = [
            arguments[a:b] for a, b in zip([0, *cuts], [*cuts, len(arguments)], strict=True) if arguments[a:b]
        ] or [arguments]
    prompt = draw(st.integers(1, 10_000))
    completion = draw(st.integers(1, 10_000))
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": draw(st.integers(0, prompt))},
        "completion_tokens_details": {"reasoning_tokens": draw(st.integers(0, completion))},
        "cost_nanoton": draw(st.integers(1, 10**12)),
    }
    usage["cost_ton"] = usage["cost_nanoton"] / 1e9
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
    return {"reasoning": reasoning, "text": text, "calls": calls, "usage": usage, "finish": finish}


def chat_document(answer: dict[str, Any]) -> dict[str, Any]:
    message = {
        "role": "assistant",
        "content": "".join(answer["text"]) or None,
        "reasoning_content": "".join(answer["reasoning"]) or None,
        "tool_calls": [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": "".join(c["pieces"])}}
            for c in answer["calls"]
        ],
    }
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": answer["finish"]}],
        "usage": answer["usage"],
    }


def chat_chunks(answer: dict[str, Any]) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return json.dumps(
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        ).encode()

    out = [chunk({"reasoning_content": piece}) for piece in answer["reasoning"]]
    out += [chunk({"content": piece}) for piece in answer["text"]]
    for index, call in enumerate(answer["calls"]):
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}) for piece in call["pieces"]]
    out.append(chunk({}, answer["finish"]))
    return out


def reads(chunks: list[bytes], cuts: list[int]) -> list[list[bytes]]:
    """The chunks as the relay hands them over: several per read, cut at `cuts`."""
    edges = sorted({min(c, len(chunks)) for c in cuts})
    return [chunks[a:b] for a, b in zip([0, *edges], [*edges, len(chunks)], strict=True) if chunks[a:b]]


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in body.decode().split("\n\n"):
        if block:
            head, data = block.split("\n", 1)
            assert head.startswith("event: ") and data.startswith("data: ")
            out.append((head[7:], json.loads(data[6:])))
    return out


def expected_calls(answer: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(call["name"], json.loads("".join(call["pieces"]))) for call in answer["calls"]]


def decoded_again(payload: bytes) -> Any:
    raise AssertionError("the dialect decoded a chunk the relay had decoded")


def framed(stream: DialectStream, chunks: list[bytes], cuts: list[int], via_relay: bool) -> bytes:
    """The stream's events for `chunks` read in pieces: each read as the relay reads it (counted
    and fed to the stream in one loop), or as payloads the tool support rewrote, which the
    dialect decodes.

    Every chunk here is a usual one: via the relay, the dialect must take the relay's decoded
    chunks (its own decoders are turned off meanwhile), or the answer it builds would not show
    that they are used at all; and the relay counts what it delivers as for chat."""
    if not via_relay:
        return b"".join(frame_chunks(stream, read) for read in reads(chunks, cuts))
    out = []
    with (
        mock.patch.object(chat, "decode_chunk", decoded_again),
        mock.patch.object(chat, "_decode_many", decoded_again),
    ):
        for read in reads(chunks, cuts):
            fed, counted = Outcome(), Outcome()
            out.append(read_texts(stream, fed, 0.0, read))
            read_events(read, counted, 0.0)
            assert delivered(fed) == delivered(counted), "the dialect's read counts as chat's does"
    return b"".join(out)


def delivered(outcome: Outcome) -> tuple[Any, ...]:
    return (
        outcome.delivered_completion,
        outcome.delivered_reasoning,
        outcome.delivered_bytes,
        outcome.stream_id,
        outcome.usage,
        outcome.upstream_done,
    )


@settings(max_examples=200, deadline=None)
@given(chat_answers(), st.lists(st.integers(0, 30), max_size=5), st.booleans())
def test_any_chat_answer_becomes_a_responses_answer_whole_or_streamed(
    answer: dict[str, Any], cuts: list[int], via_relay: bool
) -> None:
    request = ResponsesDialect().translate({"model": "m", "input": "hi"})
    whole = request.answer(chat_document(answer), "resp_abc")
    stream = request.stream("resp_abc", "m")
    body = framed(stream, chat_chunks(answer), cuts, via_relay) + stream.finish(answer["usage"])
    streamed = events(body)
    assert [data["sequence_number"] for _, data in streamed] == list(range(len(streamed)))
    assert all(name == data["type"] for name, data in streamed)
    final = streamed[-1][1]["response"]
    assert streamed[-1][0] == ("response.incomplete" if answer["finish"] == "length" else "response.completed")
    text_deltas = "".join(data["delta"] for name, data in streamed if name == "response.output_text.delta")
    for response in (whole, final):
        output = response["output"]
        texts = [part["text"] for item in output if item["type"] == "message" for part in item["content"]]
        assert "".join(texts) == "".join(answer["text"])
        thoughts = [s["text"] for item in output if item["type"] == "reasoning" for s in item["summary"]]
        assert "".join(thoughts) == "".join(answer["reasoning"])
        calls = [(item["name"], json.loads(item["arguments"])) for item in output if item["type"] == "function_call"]
        assert calls == expected_calls(answer)
        usage = answer["usage"]
        assert response["usage"]["input_tokens"] == usage["prompt_tokens"]
        assert response["usage"]["output_tokens"] == usage["completion_tokens"]
        assert (
            response["usage"]["input_tokens_details"]["cached_tokens"]
            == usage["prompt_tokens_details"]["cached_tokens"]
        )
        assert (
            response["usage"]["output_tokens_details"]["reasoning_tokens"]
            == usage["completion_tokens_details"]["reasoning_tokens"]
        )
        assert response["usage"]["cost_nanoton"] == usage["cost_nanoton"]
    assert text_deltas == "".join(answer["text"])
    assert [item["type"] for item in whole["output"]] == [item["type"] for item in final["output"]]


@settings(max_examples=200, deadline=None)
@given(chat_answers(), st.lists(st.integers(0, 30), max_size=5), st.booleans())
def test_any_chat_answer_becomes_an_anthropic_message_whole_or_streamed(
    answer: dict[str, Any], cuts: list[int], via_relay: bool
) -> None:
    request = MessagesDialect().translate(
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    )
    whole = request.answer(chat_document(answer), "msg_abc")
    stream = request.stream("msg_abc", "m")
    body = framed(stream, chat_chunks(answer), cuts, via_relay) + stream.finish(answer["usage"])
    streamed = events(body)
    assert streamed[0][0] == "message_start" and streamed[-1][0] == "message_stop"
    blocks: dict[int, dict[str, Any]] = {}
    for name, data in streamed:  # rebuild the content as an Anthropic client does
        if name == "content_block_start":
            blocks[data["index"]] = {**data["content_block"], "json": ""}
        elif name == "content_block_delta":
            block, delta = blocks[data["index"]], data["delta"]
            key = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "json"}[delta["type"]]
            block[key] += delta[{"input_json_delta": "partial_json"}.get(delta["type"], key)]
    message_delta = next(data for name, data in streamed if name == "message_delta")
    for content, stop_reason, usage in (
        (whole["content"], whole["stop_reason"], whole["usage"]),
        ([blocks[i] for i in sorted(blocks)], message_delta["delta"]["stop_reason"], message_delta["usage"]),
    ):
        assert "".join(b["text"] for b in content if b["type"] == "text") == "".join(answer["text"])
        assert "".join(b["thinking"] for b in content if b["type"] == "thinking") == "".join(answer["reasoning"])
        calls = [
            (b["name"], b["input"] if b.get("input") else json.loads(b.get("json") or "{}"))
            for b in content
            if b["type"] == "tool_use"
        ]
        assert calls == expected_calls(answer)
        assert stop_reason == {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}[answer["finish"]]
        chat_usage = answer["usage"]
        cached = chat_usage["prompt_tokens_details"]["cached_tokens"]
        assert (usage["input_tokens"], usage["cache_read_input_tokens"]) == (
            chat_usage["prompt_tokens"] - cached,
            cached,
        )
        assert usage["output_tokens"] == chat_usage["completion_tokens"]
        assert usage["cost_nanoton"] == chat_usage["cost_nanoton"]


@given(chat_answers(), st.integers(0, 30))
@settings(max_examples=50, deadline=None)
def test_a_cut_stream_ends_with_the_failure_event(answer: dict[str, Any], cut: int) -> None:
    error = UpstreamError(502, "The COCOON network dropped the stream.", "stream_cut")
    chunks = chat_chunks(answer)[:cut]
    responses = ResponsesDialect().translate({"model": "m", "input": "hi"}).stream("resp_abc", "m")
    last = events(frame_chunks(responses, chunks) + responses.fail(error))[-1]
    assert last[0] == "response.failed" and last[1]["response"]["error"]["message"] == error.message
    messages = MessagesDialect().translate({"model": "m", "max_tokens": 5, "messages": []}).stream("msg_abc", "m")
    streamed = events(frame_chunks(messages, chunks) + messages.fail(error))
    assert streamed[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": error.message}})
    assert "message_stop" not in [name for name, _ in streamed]


def test_every_request_id_fits_the_id_columns() -> None:
    """Ruling 9: prefixed ids fit String(40) (holds.id, usage_records.request_id) without a migration."""
    from cocoon_platform.proxy.handler import new_request_id

    for prefix in ("req_", "chatcmpl-", "cmpl-", "resp_", "msg_"):
        request_id = new_request_id(prefix)
        assert request_id.startswith(prefix) and len(request_id) <= 40


def test_an_anthropic_validation_error_names_its_field() -> None:
    # Anthropic's shape has no `param`: the message alone must say which field is wrong.
    refused = ValidationFailed(["max_tokens"], "Input should be a valid integer", "int_type")
    error = json.loads(MessagesDialect().error(refused))["error"]
    assert error["type"] == "invalid_request_error" and "'max_tokens'" in error["message"], error


def test_a_bad_max_output_tokens_is_named_as_the_caller_sent_it() -> None:
    # The Responses caller never sent `max_tokens`: an error naming it would point nowhere.
    for value in ("x", 0, 1e30):  # 1e30: what a 31-digit integer decodes to
        try:
            ResponsesDialect().translate({"model": "m", "input": "hi", "max_output_tokens": value})
        except ValidationFailed as refused:
            assert refused.body()["error"]["param"] == "max_output_tokens", refused.body()
        else:
            raise AssertionError(f"max_output_tokens={value!r} was taken")


def test_an_input_role_that_is_not_a_string_is_a_400() -> None:
    # Seen: a list or an object as the role raised TypeError (unhashable) in the role check: a 500.
    for role in (["user"], {"user": 1}, 1, None):
        try:
            ResponsesDialect().translate({"model": "m", "input": [{"type": "message", "role": role, "content": "hi"}]})
        except InvalidRequest as refused:
            assert (refused.status, refused.param) == (400, "input"), refused.body()
        else:
            raise AssertionError(f"role={role!r} was taken")


def counted(value: Any) -> int:
    """A usage count as the dialects have always read it: exactly an int (a bool is none), >= 0."""
    return value if type(value) is int and value >= 0 else 0


COUNTS = st.one_of(st.integers(-3, 2**70), st.booleans(), st.floats(allow_nan=False), st.text(max_size=2), st.none())
DETAILS = st.one_of(st.dictionaries(st.sampled_from(["cached_tokens", "reasoning_tokens"]), COUNTS), COUNTS)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "prompt_tokens": COUNTS,
                "completion_tokens": COUNTS,
                "reasoning_tokens": COUNTS,
                "cost_nanoton": COUNTS,
                "prompt_tokens_details": DETAILS,
                "completion_tokens_details": DETAILS,
            },
        ),
        COUNTS,
        st.lists(st.integers(), max_size=2),
    )
)
def test_a_usage_object_is_read_count_by_count(usage: Any) -> None:
    """`usage_numbers` checks each count inline: any object, any count of any type, reads as each
    count checked alone (`counted`) would read it."""
    as_dict = usage if isinstance(usage, dict) else {}
    prompt_details = as_dict.get("prompt_tokens_details")
    completion_details = as_dict.get("completion_tokens_details")
    cost = counted(as_dict.get("cost_nanoton"))
    expected = (
        counted(as_dict.get("prompt_tokens")),
        counted(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        counted(as_dict.get("completion_tokens")),
        counted(completion_details.get("reasoning_tokens"))
        if isinstance(completion_details, dict)
        else counted(as_dict.get("reasoning_tokens")),
        cost,
        cost / 1_000_000_000,
    )
    assert chat.usage_numbers(usage) == expected
