"""Units of the inference path that must hold for any input: request checks, usage, SSE splitting."""

from __future__ import annotations

import time
import uuid
from typing import Any
from unittest import mock

import orjson
import pytest

from cocoon_platform.billing.cost import MAX_TOKEN_COUNT, delivered_tokens, usage_tokens
from cocoon_platform.dialects.messages import MessagesDialect
from cocoon_platform.dialects.responses import ResponsesDialect
from cocoon_platform.errors import InvalidRequest
from cocoon_platform.proxy import request as request_module
from cocoon_platform.proxy.events import DONE, EventSplitter, usual_event
from cocoon_platform.proxy.outcome import Outcome
from cocoon_platform.proxy.relay import inspect_document, read_events, read_texts
from cocoon_platform.proxy.request import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    RESPONSE_SCHEMA_KEPT_BYTES,
    ValidationFailed,
    parse_request,
)

LIMITS = {"max_tokens_cap": 128000, "default_max_tokens": 4096, "max_coefficient": 1000}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "x"}]}


def chat(**fields: object) -> bytes:
    return orjson.dumps({**CHAT, **fields})


@pytest.mark.parametrize(
    "fields",
    [
        {"n": -1000.0},
        {"n": 0},
        {"n": -1},
        {"n": 17},
        {"max_tokens": -100000.0},
        {"max_tokens": 0.0},
        {"max_tokens": 0},
        {"max_completion_tokens": -5},
        {"n": 1e300},
        {"max_tokens": True},
        {"n": "2"},
    ],
)
def test_counts_that_could_shrink_a_reservation_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationFailed):
        parse_request(CHAT_PATH, chat(**fields), **LIMITS)


def test_whole_floats_are_accepted_as_integers() -> None:
    request = parse_request(CHAT_PATH, chat(max_tokens=100.0, n=2.0), **LIMITS)
    assert (request.max_tokens, request.choices) == (100, 2)


def test_best_of_is_bounded_and_prompt_lists_multiply_the_reservation() -> None:
    with pytest.raises(ValidationFailed):
        parse_request(COMPLETIONS_PATH, orjson.dumps({"model": "m", "prompt": "hi", "best_of": 1e17}), **LIMITS)
    batch = parse_request(COMPLETIONS_PATH, orjson.dumps({"model": "m", "prompt": ["a"] * 50, "n": 2}), **LIMITS)
    assert batch.choices == 100


def test_client_control_fields_are_not_forwarded_and_ours_are() -> None:
    request = parse_request(
        CHAT_PATH,
        chat(timeout=99999, enable_debug=True, request_guid="x", max_coefficient=4000, max_tokens=500000),
        **LIMITS,
    )
    assert not {"enable_debug", "request_guid"} & set(request.payload)
    assert request.payload["max_coefficient"] == 1000 and request.payload["max_tokens"] == 128000
    assert request.payload["timeout"] == 120.0  # the platform's setting, never the caller's
    assert parse_request(CHAT_PATH, chat(), **LIMITS, request_timeout=30.0).payload["timeout"] == 30.0


def test_a_response_schema_is_checked_once_per_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """Checking a schema costs a millisecond or more: the same JSON is checked once, its verdict
    kept, good or bad; a schema too large to keep is checked for each request."""
    checked: list[object] = []
    check = request_module.schema_problem

    def counted(schema: dict[str, Any]) -> str | None:
        checked.append(schema)
        return check(schema)

    monkeypatch.setattr(request_module, "schema_problem", counted)

    def with_schema(schema: dict[str, Any]) -> bytes:
        return chat(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})

    unique = uuid.uuid4().hex
    for _ in range(3):
        parse_request(CHAT_PATH, with_schema({"type": "object", "description": unique}), **LIMITS)
    assert len(checked) == 1
    messages = set()
    for _ in range(2):
        with pytest.raises(InvalidRequest) as refused:
            parse_request(CHAT_PATH, with_schema({"type": "objet", "description": unique}), **LIMITS)
        assert refused.value.param == "response_format.json_schema.schema"
        messages.add(str(refused.value))
    assert len(checked) == 2 and messages == {
        "'response_format.json_schema.schema' is not a valid JSON Schema: "
        "'objet' is not valid under any of the given schemas (at /type)"
    }
    large = {"type": "object", "description": unique * (RESPONSE_SCHEMA_KEPT_BYTES // len(unique))}
    for _ in range(2):
        parse_request(CHAT_PATH, with_schema(large), **LIMITS)
    assert len(checked) == 4


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


NESTED_DEEPLY = nested(120)  # within what a body may nest (orjson: 254), beyond what can be checked


@pytest.mark.parametrize(
    ("schema", "rule"),
    [
        ({"type": "object", "required": "city"}, "'city' is not of type 'array' (at /required)"),
        ({"properties": {"a/b": {"minimum": "3"}}}, "'3' is not of type 'number' (at /properties/a~1b/minimum)"),
        ({"$schema": ["draft"]}, "'$schema' must be a string"),
        ({"pattern": "("}, "'(' is not a 'regex' (at /pattern)"),
        (NESTED_DEEPLY, "nested too deeply to be checked"),
    ],
)
def test_an_invalid_response_schema_is_a_400_naming_the_rule(schema: dict[str, Any], rule: str) -> None:
    body = chat(response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}})
    with pytest.raises(InvalidRequest) as refused:
        parse_request(CHAT_PATH, body, **LIMITS)
    assert refused.value.param == "response_format.json_schema.schema" and rule in str(refused.value)


def test_the_payload_is_forwarded_as_its_json_and_renamed_in_step() -> None:
    request = parse_request(CHAT_PATH, chat(top_p=0.5), **LIMITS)
    assert request.payload_json == orjson.dumps(request.payload)
    request.set_model("m-canonical")
    assert orjson.loads(request.payload_json) == {**request.payload, "model": "m-canonical"}


def nested_in(field: str, levels: int) -> bytes:
    return b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "%s": %s}' % (
        field.encode(),
        b"[" * levels + b"]" * levels,
    )


def test_a_value_nested_deeper_than_orjson_writes_is_a_400_naming_it() -> None:
    """orjson reads 1,024 levels and writes 254, the payload's own among them."""
    parse_request(CHAT_PATH, nested_in("top_p", 253), **LIMITS)
    for field in ("top_p", "verbosity", "reasoning_effort"):
        with pytest.raises(InvalidRequest) as refused:
            parse_request(CHAT_PATH, nested_in(field, 254), **LIMITS)
        assert refused.value.param == field and str(refused.value) == f"'{field}' is nested too deeply to be forwarded"


def test_unsupported_fields_are_400() -> None:
    with pytest.raises(InvalidRequest):
        parse_request(CHAT_PATH, chat(functions=[{"name": "f"}]), **LIMITS)


@pytest.mark.parametrize(
    "usage", [{}, {"prompt_tokens": "12"}, {"total_cost": 500}, [], None, {"prompt_tokens": -3, "completion_tokens": 0}]
)
def test_usage_without_a_usable_count_is_not_trusted(usage: object) -> None:
    assert usage_tokens(usage) is None


def test_usage_counts_are_clamped() -> None:
    tokens = usage_tokens(
        {
            "prompt_tokens": 10,
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 50},
            "completion_tokens_details": {"reasoning_tokens": 9},
        }
    )
    assert tokens is not None and (tokens.cached, tokens.reasoning) == (10, 4)
    legacy = usage_tokens({"prompt_tokens": 1, "completion_tokens": 8, "reasoning_tokens": 3})
    assert legacy is not None and legacy.reasoning == 3


def test_delivered_tokens() -> None:
    assert delivered_tokens(20, 120) == 20  # a word a chunk
    assert delivered_tokens(5, 400) == 400  # chunks of many tokens each: one a character, never under
    assert delivered_tokens(0, 0) == 0


def split_all(chunks: list[bytes]) -> list[bytes]:
    splitter = EventSplitter()
    events = [e for c in chunks for e in splitter.feed(c)]
    return events + splitter.finish()


def test_sse_events_across_reads_and_line_endings() -> None:
    stream = b'data: {"a":1}\r\n\r\ndata: {"b":2}\r\n\r\n: comment\n\ndata: [DONE]\r\n\r\n'
    for size in (1, 2, 3, 7, len(stream)):
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert split_all(pieces) == [b'{"a":1}', b'{"b":2}', DONE], size
    assert split_all([b'data: {"a":\rdata: 1}\r\r']) == [b'{"a":\n1}']
    assert split_all([b'data: {"a":1}']) == [b'{"a":1}']  # no final blank line


def test_plain_data_lines_split_like_any_other_stream() -> None:
    """The fast path for one-line `data: ` events gives what the general splitter gives."""
    plain = b'data: {"a":1}\n\ndata: {"b":"x y"}\n\ndata: [DONE]\n\n'
    for stream, expected in [
        (plain, [b'{"a":1}', b'{"b":"x y"}', DONE]),
        (b'data: {"a":1}\n\ndata: [DONE] \n\n', [b'{"a":1}', DONE]),  # padded end marker
        (b'data: {"a":1}\n\n: keep-alive\n\ndata: {"b":2}\n\n', [b'{"a":1}', b'{"b":2}']),
        (b'data: {"a":\ndata: 1}\n\ndata: {"b":2}\n\n', [b'{"a":\n1}', b'{"b":2}']),
        (b'data: {"a":1}\n\n\n\ndata: {"b":2}\n\n', [b'{"a":1}', b'{"b":2}']),
        (b'data: {"a":1}\n\nevent: x\ndata: {"b":2}\n\n', [b'{"a":1}', b'{"b":2}']),
    ]:
        for size in (1, 5, 16, len(stream)):
            pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
            assert [e for e in split_all(pieces) if e] == expected, (stream, size)


USUAL_AND_ODD_EVENTS = [
    b'{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"}}]}',
    b'{"id":"c1","choices":[{"index":0,"delta":{"reasoning_content":"hmm","content":null},"logprobs":null}]}',
    b'{"id":"c1","choices":[{"delta":{"reasoning":"so","content":"x"}},{"delta":{"content":"y"}}]}',
    b'{"id":"c1","choices":[{"delta":{"reasoning_content":"","reasoning":"r"}}]}',
    b'{"id":"c1","choices":[{"delta":{"content":""}}],"usage":null}',
    b'{"id":"t1","object":"text_completion","choices":[{"index":0,"text":"word","logprobs":null}]}',
    b'{"choices":[{"delta":null,"text":"t"}]}',
    b'{"choices":[{"delta":{}}, {"text":"z"}]}',
    b'{"id":7,"choices":[{"delta":{"content":"n"}}]}',
    b'{"choices":[{"delta":{"content":["not","text"]}}]}',
    b'{"choices":[{"delta":"text"}]}',
    b'{"choices":[1,{"delta":{"content":"a"}}]}',
    b'{"choices":"abc"}',
    b'{"choices":[]}',
    b'{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
    b'{"choices":[{"delta":{"content":"end"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
    b'{"error":{"message":"boom"}}',
    b'{"choices":[{"delta":{"content":"a"}}],\n"x":1}',
    b'[{"choices":[]}]',
    b'"text"',
    b'{"choices":[{"delta":{"content":"a"}}]',
    b'{"choices":[{"delta":{"content":"\\u00e9t\\u00e9"}}],"deep":{"a":[1,2,{"b":null}],"c":1.5e3}}',
    '{"choices":[{"delta":{"content":"\u00e9t\u00e9 \u4f60\u597d"}}]}'.encode(),  # UTF-8 text
    b'{"choices":[{"delta":{"content":"\xf0\x9f"}}]}',  # a cut-off emoji: invalid UTF-8
    b'{"choices":[{"delta":{"content":"a"}}],"x":"\xff\xfe"}',  # invalid UTF-8 in a skipped field
    b'{"choices":[],"usage":{"\xff":1}}',
    b'{"choices":[{"delta":{"content":"a"}}],"x":' + b"[" * 1000 + b"]" * 1000 + b"}",  # deep nesting
    b'{"choices":[{"delta":{"content":"a"}}],"x":' + str(2**70).encode() + b"}",
]


@pytest.mark.parametrize("payload", USUAL_AND_ODD_EVENTS)
def test_the_usual_event_reader_agrees_with_the_general_one(payload: bytes) -> None:
    """Whatever the typed fast path reads, it reads as the general path does; the rest it leaves to it."""
    for first in (True, False):
        fast, general = Outcome(), Outcome()
        if not first:
            fast.first_token_seconds = general.first_token_seconds = 0.5
        forwarded = read_events([payload], fast, time.perf_counter())
        expected = inspect_document(payload, general, time.perf_counter())
        assert forwarded == ([] if expected is None else [expected])
        assert read(fast) == read(general)


def test_one_read_of_many_events_is_read_as_each_alone() -> None:
    """The relay reads all events of a read in one loop; the outcome and what it forwards are
    those of the general path applied to each event in turn, `[DONE]` anywhere included."""
    events = [*USUAL_AND_ODD_EVENTS[:9], DONE, *USUAL_AND_ODD_EVENTS[9:]]
    together, alone = Outcome(), Outcome()
    forwarded = read_events(events, together, time.perf_counter())
    expected = [
        chunk
        for event in events
        if event != DONE and (chunk := inspect_document(event, alone, time.perf_counter())) is not None
    ]
    assert forwarded == expected and len(forwarded) > 10
    assert read(together) == read(alone) and together.upstream_done


def test_a_dialects_read_counts_as_chats() -> None:
    """`read_texts` counts the events it feeds a dialect's stream as `read_events` counts them,
    each event in a read of its own and all in one read, `[DONE]` anywhere included."""
    events = [*USUAL_AND_ODD_EVENTS[:9], DONE, *USUAL_AND_ODD_EVENTS[9:]]
    for dialect in (ResponsesDialect(), MessagesDialect()):
        for reads in ([[event] for event in events], [events]):
            fed, counted = Outcome(), Outcome()
            stream = dialect.translate({"model": "m", "input": "hi", "max_tokens": 5, "messages": []}).stream(
                "x_1", "m"
            )
            for payloads in reads:
                read_texts(stream, fed, time.perf_counter(), payloads)
                read_events(payloads, counted, time.perf_counter())
            assert read(fed) == read(counted) and fed.upstream_done


def test_a_dialects_read_counts_what_arrived_even_if_its_stream_raises() -> None:
    """What a read delivered is counted before the stream frames it, as `read_events` counts it
    before anything is framed: a stream that fails mid-read does not take the count with it."""
    stream = ResponsesDialect().translate({"model": "m", "input": "hi"}).stream("resp_1", "m")
    thought = orjson.dumps({"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]})
    outcome = Outcome()
    with (
        mock.patch.object(type(stream), "switch", side_effect=RuntimeError("a broken stream")),
        pytest.raises(RuntimeError),
    ):
        read_texts(stream, outcome, time.perf_counter(), [thought])
    assert (outcome.delivered_completion, outcome.delivered_reasoning, outcome.delivered_bytes) == (1, 1, 5)


def test_a_number_out_of_orjsons_range_in_an_unread_field_keeps_the_event() -> None:
    """The one known difference: orjson rejects such numbers (the general path drops the event),
    msgspec skips them unread. The fast path forwards the event and counts it, consistently."""
    for payload in (
        b'{"choices":[{"delta":{"content":"a"}}],"x":1e400}',
        b'{"choices":[{"delta":{"content":"a"}}],"x":' + b"9" * 400 + b"}",
    ):
        outcome = Outcome()
        assert read_events([payload], outcome, time.perf_counter()) == [payload]
        assert (outcome.delivered_completion, outcome.delivered_bytes) == (1, 1)
        assert inspect_document(payload, Outcome(), time.perf_counter()) is None


def test_the_usual_events_take_the_fast_path() -> None:
    taken = [payload for payload in USUAL_AND_ODD_EVENTS if usual_event(payload) is not None]
    assert len(taken) == 13 and USUAL_AND_ODD_EVENTS[0] in taken and USUAL_AND_ODD_EVENTS[5] in taken


def read(outcome: Outcome) -> tuple[object, ...]:
    error = outcome.error
    return (
        outcome.usage,
        outcome.delivered_completion,
        outcome.delivered_reasoning,
        outcome.delivered_bytes,
        outcome.stream_id,
        outcome.first_token_seconds is None,
        error and (error.status, error.kind),
    )


def test_bare_json_objects_across_reads() -> None:
    stream = b'{"a": "x}{\\"y"}\n{"b": {"c": [1, 2]}}{"d": 3}\n{\n  "e": 4\n}\n'
    for size in (1, 3, 5, len(stream)):
        pieces = [stream[i : i + size] for i in range(0, len(stream), size)]
        events = split_all(pieces)
        assert [orjson.loads(e) for e in events] == [{"a": 'x}{"y'}, {"b": {"c": [1, 2]}}, {"d": 3}, {"e": 4}]


def test_reported_counts_are_held_to_what_the_usage_record_holds() -> None:
    tokens = usage_tokens(
        {"prompt_tokens": 2**40, "completion_tokens": 2**63, "completion_tokens_details": {"reasoning_tokens": 2**35}}
    )
    assert tokens is not None
    assert (tokens.prompt, tokens.completion, tokens.reasoning) == (MAX_TOKEN_COUNT,) * 3


@pytest.mark.parametrize(
    ("text", "qwen_tokens"),
    [
        ("1234567890" * 50, 500),  # Qwen's vocabulary splits numbers into single digits
        ("你好世界今天天气很好" * 40, 400),  # at most one token a character
        ("def f(x):\n    return {'a': [x, x ** 2]}\n" * 20, 20 * 21),  # generously, a token every two bytes
    ],
)
def test_a_prompt_estimate_is_never_under_the_real_count(text: str, qwen_tokens: int) -> None:
    """Issue 14 item 3: digits, CJK and code run at far fewer than 4 bytes a token."""
    request = parse_request(CHAT_PATH, chat(messages=[{"role": "user", "content": text}]), **LIMITS)
    assert request.estimate_prompt_tokens() >= qwen_tokens + 5  # and the template's tokens
    completion = parse_request(COMPLETIONS_PATH, orjson.dumps({"model": "m", "prompt": [text, text]}), **LIMITS)
    assert completion.estimate_prompt_tokens() >= 2 * qwen_tokens


def test_a_prompt_estimate_counts_every_field_forwarded() -> None:
    """Names and every message's content are rendered by the network, so they are counted."""
    long = "x" * 10_000
    request = parse_request(
        CHAT_PATH,
        chat(
            messages=[
                {"role": "system", "content": long, "name": "n" * 5_000},
                {"role": "user", "content": [{"type": "text", "text": long}]},
            ]
        ),
        **LIMITS,
    )
    assert request.estimate_prompt_tokens() >= 25_000


def qwen_counts() -> None:
    from cocoon_platform.billing import tokenizer

    deadline = time.monotonic() + 30
    while tokenizer.count("x") is None and time.monotonic() < deadline:
        time.sleep(0.05)


def test_the_shipped_qwen_vocabulary_splits_as_qwen3_does() -> None:
    """Known Qwen2/3 splits: the package's vocabulary is the model's."""
    from cocoon_platform.billing import tokenizer

    qwen_counts()
    assert tokenizer._encoding.encode_ordinary("Hello world") == [9707, 1879]
    assert tokenizer._encoding.encode_ordinary("你好") == [108386]
    assert tokenizer.count("1234567890") == 10  # one digit a token
    assert tokenizer.count("The quick brown fox jumps over the lazy dog.") == 10


def test_a_qwen_prompt_is_counted_exactly() -> None:
    qwen_counts()
    request = parse_request(
        CHAT_PATH,
        chat(
            model="Qwen/Qwen3-32B",
            messages=[{"role": "system", "content": "Hello world"}, {"role": "user", "content": "1234567890"}],
        ),
        **LIMITS,
    )
    assert request.estimate_prompt_tokens() == (2 + 5) + (10 + 5) + 8
    text = parse_request(
        COMPLETIONS_PATH, orjson.dumps({"model": "Qwen/Qwen3-32B", "prompt": ["你好", "Hello world"]}), **LIMITS
    )
    assert text.estimate_prompt_tokens() == 3
