"""The OpenAI edges clients trip on (issue 17): reasons on 422s, one model by id, aliases, the
answer's id as the request id, x-request-id on every answer, 405 with Allow, a 400 naming a
`response_format` of the wrong shape or with a schema that is not JSON Schema."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from support import Server, db_rows, new_account

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def test_a_422_tells_every_sdk_why(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    with pytest.raises(openai.UnprocessableEntityError) as failure:
        client(platform, key).chat.completions.create(
            model=QWEN, messages=[{"role": "user", "content": "x"}], max_tokens="many"
        )  # type: ignore[arg-type]
    assert "'max_tokens': Input should be a valid integer (int_type)" in str(failure.value)
    assert failure.value.body == {
        "message": "Invalid 'max_tokens': Input should be a valid integer (int_type)",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "validation_error",
    }
    # FastAPI's own validation (a query parameter) gets the same error object beside its detail.
    usage = httpx.get(platform.url + "/v1/usage?limit=x", headers={"Authorization": f"Bearer {key}"})
    assert usage.status_code == 422
    assert usage.json()["detail"][0]["loc"] == ["query", "limit"]
    assert usage.json()["error"]["param"] == "limit"


def test_models_by_id_and_by_alias(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    openai_client = client(platform, key)
    listed = {model.id for model in openai_client.models.list()}
    assert {QWEN, "qwen3-32b", "ByteDance-Seed/Seed-X-PPO-7B", "seed-x-ppo-7b"} <= listed
    assert openai_client.models.retrieve(QWEN).id == QWEN
    alias = openai_client.models.retrieve("qwen3-32b")
    assert alias.id == "qwen3-32b" and alias.owned_by == "Alibaba"
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.models.retrieve("no/such-model")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert missing.value.response.headers["x-request-id"].startswith("req_")

    raw = openai_client.chat.completions.with_raw_response.create(
        model="qwen3-32b", messages=[{"role": "user", "content": "hi"}], max_tokens=16
    )
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert completion.id == request_id and request_id.startswith("chatcmpl-") and len(request_id) <= 40
    assert completion.model == QWEN
    rows = db_rows(database_url, "SELECT model, endpoint FROM usage_records WHERE request_id = :r", {"r": request_id})
    assert rows == [(QWEN, "chat")]
    listed_usage = httpx.get(platform.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()
    assert request_id in str(listed_usage)


def test_stream_chunks_and_completions_carry_the_request_id(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    openai_client = client(platform, key)
    with openai_client.chat.completions.with_streaming_response.create(
        model=QWEN,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        ids = {chunk.id for chunk in response.parse()}
    assert ids == {request_id}
    raw = openai_client.completions.with_raw_response.create(
        model="ByteDance-Seed/Seed-X-PPO-7B", prompt="Translate: hello <zh>", max_tokens=8
    )
    assert raw.parse().id == raw.headers["x-request-id"] and raw.parse().id.startswith("cmpl-")


def test_every_answer_has_a_request_id_and_wrong_methods_get_405(platform: Server) -> None:
    with platform.client() as http:
        missing = http.get("/no/such/path")
        assert missing.status_code == 404 and missing.headers["x-request-id"].startswith("req_")
        assert http.get("/health").headers["x-request-id"] != missing.headers["x-request-id"]
        for path in ("/v1/chat/completions", "/v1/completions"):
            wrong = http.get(path)
            assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
            assert wrong.json()["error"]["type"] == "invalid_request_error"
            assert wrong.headers["x-request-id"]
        routed = http.delete("/v1/balance")
        assert routed.status_code == 405 and "GET" in routed.headers["allow"]


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
BAD_RESPONSE_FORMATS = [
    "json",
    {"type": "xml"},
    {"type": "json_schema"},
    {"type": "json_schema", "json_schema": {"schema": WEATHER}},
    {"type": "json_schema", "json_schema": {"name": "the weather", "schema": WEATHER}},
    {"type": "json_schema", "json_schema": {"name": "w" * 65}},
    {"type": "json_schema", "json_schema": {"name": "weather", "schema": "object"}},
    {"type": "json_schema", "json_schema": {"name": "weather", "strict": "yes"}},
    {"type": "json_schema", "json_schema": {"name": "weather", "schemas": WEATHER}},
    {"type": "json_object", "json_schema": {"name": "weather"}},
]


def test_a_bad_response_format_is_a_400_naming_it_in_each_dialect(platform: Server, database_url: str) -> None:
    # Forwarded, the network fails the whole request: the caller would read its own mistake as the network's.
    key = new_account(platform, database_url, TON)
    openai_client = client(platform, key)
    for bad in BAD_RESPONSE_FORMATS:
        with pytest.raises(openai.BadRequestError) as refused:
            openai_client.chat.completions.create(
                model=QWEN, messages=[{"role": "user", "content": "x"}], max_tokens=8, response_format=bad
            )  # type: ignore[call-overload]
        error = refused.value.body
        assert (error["type"], error["param"]) == ("invalid_request_error", "response_format"), (bad, error)  # type: ignore[index]
        assert "response_format" in error["message"], (bad, error)  # type: ignore[index]
    for bad_format in (
        {"type": "xml"},
        {"type": "json_schema", "schema": WEATHER},
        {"type": "json_schema", "name": "the weather", "schema": WEATHER},
        {"type": "json_schema", "name": "weather", "strict": "yes"},
        {"type": "json_object", "name": "weather"},
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            openai_client.responses.create(model=QWEN, input="x", text={"format": bad_format})  # type: ignore[typeddict-item]
        error = refused.value.body
        assert (error["type"], error["param"]) == ("invalid_request_error", "text.format"), (bad_format, error)  # type: ignore[index]
    anthropic_shape = httpx.post(
        platform.url + "/v1/messages",
        headers={"x-api-key": key},
        timeout=10,
        json={
            "model": QWEN,
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "xml"},
        },
    )
    assert anthropic_shape.status_code == 400 and anthropic_shape.json()["type"] == "error"
    assert anthropic_shape.json()["error"]["type"] == "invalid_request_error"
    assert "'response_format'" in anthropic_shape.json()["error"]["message"]
    assert db_rows(
        database_url,
        "SELECT COUNT(*) FROM usage_records r JOIN api_keys k ON k.id = r.key_id WHERE k.prefix = :p",
        {"p": key[:9]},
    ) == [(0,)]

    # Good ones pass and are honoured (the simulator decodes to the schema, as vLLM's guided decoding does).
    good = {"name": "weather-1", "description": "The weather", "schema": WEATHER, "strict": True}
    answer = openai_client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        max_tokens=200,
        response_format={"type": "json_schema", "json_schema": good},  # type: ignore[typeddict-item]
    )
    assert "city" in json.loads(answer.choices[0].message.content or "")
    response = openai_client.responses.create(
        model=QWEN, input="Weather in Rome?", max_output_tokens=200, text={"format": {"type": "json_schema", **good}}
    )  # type: ignore[typeddict-item]
    assert "city" in json.loads(response.output_text)
    for plain in ({"type": "text"}, {"type": "json_object"}):
        openai_client.chat.completions.create(
            model=QWEN, messages=[{"role": "user", "content": "x"}], max_tokens=40, response_format=plain
        )  # type: ignore[call-overload]


def test_a_schema_that_is_not_json_schema_is_a_400_naming_it_in_each_dialect(
    platform: Server, database_url: str
) -> None:
    """An object, but not a valid JSON Schema: forwarded, the network's 400 would name no field."""
    key = new_account(platform, database_url, TON)
    openai_client = client(platform, key)
    bad = {"type": "object", "properties": {"city": {"type": "text"}}, "required": ["city"]}
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.chat.completions.create(
            model=QWEN,
            messages=[{"role": "user", "content": "x"}],
            max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": bad}},
        )  # type: ignore[call-overload]
    error = refused.value.body
    assert (error["type"], error["param"]) == ("invalid_request_error", "response_format.json_schema.schema")  # type: ignore[index]
    assert error["message"] == (  # type: ignore[index]
        "'response_format.json_schema.schema' is not a valid JSON Schema: "
        "'text' is not valid under any of the given schemas (at /properties/city/type)"
    )
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client.responses.create(
            model=QWEN, input="x", text={"format": {"type": "json_schema", "name": "weather", "schema": bad}}
        )  # type: ignore[typeddict-item]
    error = refused.value.body
    assert (error["type"], error["param"]) == ("invalid_request_error", "text.format.schema")  # type: ignore[index]
    assert error["message"].startswith("'text.format.schema' is not a valid JSON Schema: 'text' ")  # type: ignore[index]
    assert db_rows(
        database_url,
        "SELECT COUNT(*) FROM usage_records r JOIN api_keys k ON k.id = r.key_id WHERE k.prefix = :p",
        {"p": key[:9]},
    ) == [(0,)]


def test_a_value_nested_deeper_than_can_be_forwarded_is_a_400_and_costs_nothing(
    platform: Server, database_url: str
) -> None:
    """orjson reads a body 1,024 levels deep but writes 254: such a value was read, held for,
    then failed to be written when forwarded, a 500 billed as an aborted request."""
    key = new_account(platform, database_url, TON)
    deep = b"[" * 300 + b"]" * 300
    for field, value in (
        ("top_p", deep),
        ("response_format", b'{"type": "json_schema", "json_schema": {"name": "s", "schema": {"default": %s}}}' % deep),
    ):
        for stream in (b"false", b"true"):
            answer = httpx.post(
                platform.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
                content=b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8, '
                b'"stream": %s, "%s": %s}' % (QWEN.encode(), stream, field.encode(), value),
                timeout=30,
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["param"] == field
            assert answer.json()["error"]["message"] == f"'{field}' is nested too deeply to be forwarded"
    # The Responses API echoes settings it never forwards: too deep to echo is refused the same way.
    for field in ("metadata", "reasoning", "user"):
        for stream in (b"false", b"true"):
            answer = httpx.post(
                platform.url + "/v1/responses",
                headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
                content=b'{"model": "%s", "input": "x", "max_output_tokens": 8, "stream": %s, "%s": {"a": %s}}'
                % (QWEN.encode(), stream, field.encode(), deep),
                timeout=30,
            )
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"]["param"] == field
            assert answer.json()["error"]["message"] == f"'{field}' is nested too deeply to be echoed"
    balance = httpx.get(platform.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert balance.json()["balance_nanoton"] == TON
    assert db_rows(
        database_url,
        "SELECT COUNT(*) FROM usage_records r JOIN api_keys k ON k.id = r.key_id WHERE k.prefix = :p",
        {"p": key[:9]},
    ) == [(0,)]
