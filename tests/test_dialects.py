"""The Responses and Messages dialects through the real SDKs, on the metered chat path: each
request is found in /v1/usage with its exact charge, and the balance moves by exactly the sum."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from support import Server, db_rows, ledger_consistent, new_account

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000


def balance(server: Server, key: str) -> int:
    response = httpx.get(server.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return int(response.json()["balance_nanoton"])


def usage_records(server: Server, key: str) -> dict[str, dict[str, object]]:
    response = httpx.get(server.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return {item["request_id"]: item for item in response.json()["data"]}


def openai_client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def anthropic_client(server: Server, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=30)


def test_responses_create_and_stream_are_billed_on_the_chat_path(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    client = openai_client(platform, key)
    response = client.responses.create(model=QWEN, input="What is TON?", instructions="Be brief.", max_output_tokens=64)
    assert response.object == "response" and response.status == "completed"
    assert response.id.startswith("resp_") and response.output_text
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]  # Qwen3 thinks unless told not to
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert 0 < usage.output_tokens_details.reasoning_tokens < usage.output_tokens
    charges = {response.id: (usage.model_extra or {})["cost_nanoton"]}

    quiet = client.responses.create(
        model="qwen3-32b",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
            {"role": "user", "content": "And again?"},
        ],
        reasoning={"effort": "minimal"},
        max_output_tokens=32,
    )
    assert [item.type for item in quiet.output] == ["message"] and quiet.model == QWEN
    charges[quiet.id] = (quiet.usage.model_extra or {})["cost_nanoton"]  # type: ignore[union-attr]

    with client.responses.stream(model=QWEN, input="Stream, please.", max_output_tokens=40) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed" and "response.output_text.delta" in types
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text and final.usage is not None
    charges[final.id] = (final.usage.model_extra or {})["cost_nanoton"]

    records = usage_records(platform, key)
    for request_id, charge in charges.items():
        assert records[request_id]["cost_nanoton"] == charge > 0
        assert records[request_id]["endpoint"] == "responses"
    assert balance(platform, key) == TON - sum(charges.values())
    assert not ledger_consistent(database_url)


def test_responses_refuse_what_the_platform_cannot_keep(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    client = openai_client(platform, key)
    with pytest.raises(openai.BadRequestError) as previous:
        client.responses.create(model=QWEN, input="x", previous_response_id="resp_123")
    assert "Send the whole conversation" in str(previous.value)
    with pytest.raises(openai.BadRequestError) as hosted:
        client.responses.create(model=QWEN, input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert "only function tools" in str(hosted.value)
    with pytest.raises(openai.BadRequestError) as unknown:  # the chat path's field filter, as for chat
        client.responses.create(model=QWEN, input="x", extra_body={"logit_bias": {"1": 1}})
    assert unknown.value.body["param"] == "logit_bias"  # type: ignore[index]
    with pytest.raises(openai.UnprocessableEntityError):
        client.responses.create(model=QWEN, input="x", max_output_tokens="many")  # type: ignore[arg-type]
    assert balance(platform, key) == TON


def test_anthropic_messages_create_stream_and_count_tokens(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    client = anthropic_client(platform, key)
    message = client.messages.create(
        model=QWEN,
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "What is TON?"}],
    )
    assert message.type == "message" and message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]  # no thinking unless asked
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.output_tokens > 0
    charges = {message.id: (message.usage.model_extra or {})["cost_nanoton"]}

    thinking = client.messages.create(
        model="qwen3-32b",
        max_tokens=200,
        thinking={"type": "enabled", "budget_tokens": 100},
        messages=[{"role": "user", "content": "Think."}],
    )
    assert [block.type for block in thinking.content] == ["thinking", "text"]
    charges[thinking.id] = (thinking.usage.model_extra or {})["cost_nanoton"]

    with client.messages.stream(
        model=QWEN, max_tokens=40, messages=[{"role": "user", "content": "Stream."}], stop_sequences=["never-said"]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert [event.type for event in events][:2] == ["message_start", "content_block_start"]
    assert [event.type for event in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(
        event.delta.text
        for event in events  # type: ignore[union-attr]
        if event.type == "content_block_delta" and event.delta.type == "text_delta"
    )
    assert text and final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens > 0 and final.stop_reason in ("end_turn", "max_tokens")
    delta = next(event for event in events if event.type == "message_delta")
    charges[final.id] = (delta.usage.model_extra or {})["cost_nanoton"]  # type: ignore[union-attr]

    counted = client.messages.count_tokens(model=QWEN, messages=[{"role": "user", "content": "What is TON?"}])
    assert counted.input_tokens >= message.usage.input_tokens + message.usage.cache_read_input_tokens - 7

    records = usage_records(platform, key)
    assert len(records) == 3
    for request_id, charge in charges.items():
        assert records[request_id]["cost_nanoton"] == charge > 0
        assert records[request_id]["endpoint"] == "messages"
    assert balance(platform, key) == TON - sum(charges.values())
    assert not ledger_consistent(database_url)


def test_a_stop_sequence_that_ends_the_answer_is_named_whole_or_streamed(platform: Server, database_url: str) -> None:
    """The network says which stop string ended an answer (vLLM's `stop_reason`, on the choice's
    last chunk): Anthropic's SDK sees `stop_reason` "stop_sequence" and the sequence, whole or
    streamed; an answer that ended by itself is "end_turn", with no sequence."""
    key = new_account(platform, database_url, TON)
    client = anthropic_client(platform, key)
    question = [{"role": "user", "content": f"Count, {key[-8:]}. [[sim:tokens=40]]"}]
    whole = client.messages.create(model=QWEN, max_tokens=100, messages=question, stop_sequences=["never-said"])
    assert (whole.stop_reason, whole.stop_sequence) == ("end_turn", None)
    text = whole.content[0].text  # type: ignore[union-attr]
    stop = " ".join(text.split()[3:5])
    stops = ["never-said", stop]
    stopped = client.messages.create(model=QWEN, max_tokens=100, messages=question, stop_sequences=stops)
    assert stopped.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", stop)
    with client.messages.stream(model=QWEN, max_tokens=100, messages=question, stop_sequences=stops) as stream:
        events = list(stream)
        final = stream.get_final_message()
    delta = next(event for event in events if event.type == "message_delta")
    assert (delta.delta.stop_reason, delta.delta.stop_sequence) == ("stop_sequence", stop)  # type: ignore[union-attr]
    assert final.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


def test_anthropic_errors_keep_their_meaning_in_anthropics_shape(platform: Server, database_url: str) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.AuthenticationError) as auth:
        anthropic_client(platform, "ck_nope").messages.create(model=QWEN, max_tokens=8, messages=messages)  # type: ignore[arg-type]
    assert auth.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Invalid API key", "code": "invalid_api_key"},
    }
    poor = new_account(platform, database_url)
    with pytest.raises(anthropic.APIStatusError) as payment:
        anthropic_client(platform, poor).messages.create(model=QWEN, max_tokens=8, messages=messages)  # type: ignore[arg-type]
    assert payment.value.status_code == 402
    assert payment.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
    rich = new_account(platform, database_url, TON)
    missing = httpx.post(
        platform.url + "/v1/messages",
        headers={"x-api-key": rich, "anthropic-version": "2023-06-01"},
        json={"model": QWEN, "messages": messages},
    )
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client(platform, rich).messages.create(
            model=QWEN,
            max_tokens=8,
            messages=[  # type: ignore[list-item]
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
                    ],
                }
            ],
        )
    assert balance(platform, rich) == TON
    rows = db_rows(
        database_url,
        "SELECT COUNT(*) FROM usage_records r JOIN api_keys k ON k.id = r.key_id WHERE k.prefix = :p",
        {"p": rich[:9]},
    )
    assert rows == [(0,)]


def test_values_too_deep_to_forward_are_a_400_in_anthropics_shape(platform: Server, database_url: str) -> None:
    """orjson reads 1,024 levels but writes 254: a tool_use input or a tool schema nested deeper
    cannot be forwarded or counted. A 400 naming it, nothing held or billed (once a 500)."""
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"a": deep}
    key = new_account(platform, database_url, TON)
    client = anthropic_client(platform, key)
    history: Any = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": deep}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
    ]
    tool: Any = {"name": "f", "input_schema": {"type": "object", "properties": {"a": deep}}}
    with pytest.raises(anthropic.BadRequestError) as replayed:
        client.messages.create(model=QWEN, max_tokens=8, messages=history, tools=[tool])
    assert replayed.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages[1].content[0].input' is nested too deeply" in replayed.value.body["error"]["message"]  # type: ignore[index]
    for messages, tools in ((history, [tool]), ([{"role": "user", "content": "hi"}], [tool])):
        with pytest.raises(anthropic.BadRequestError) as counted:
            client.messages.count_tokens(model=QWEN, messages=messages, tools=tools)
        assert counted.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert "nested too deeply" in counted.value.body["error"]["message"]  # type: ignore[index]
    assert balance(platform, key) == TON


def test_every_messages_path_answers_in_anthropics_shape(platform: Server, database_url: str) -> None:
    """Anthropic's SDK reads only its own error shape, so every path under /v1/messages answers in
    it: the ones the platform does not serve (message batches) with a 404 that says what was asked."""
    key = new_account(platform, database_url, TON)
    with pytest.raises(anthropic.NotFoundError) as batches:
        anthropic_client(platform, key).messages.batches.list()
    assert batches.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "No endpoint GET /v1/messages/batches on this platform (its API: /openapi.json)",
        },
    }
    assert "No endpoint GET /v1/messages/batches" in str(batches.value)  # what the SDK prints
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    for method, path in (("POST", "/v1/messages/batches"), ("GET", "/v1/messages/msg_1"), ("POST", "/v1/messages/")):
        unknown = httpx.request(method, platform.url + path, headers=headers, json={}, timeout=10)
        assert unknown.status_code == 404, (method, path)
        assert unknown.json()["type"] == "error" and unknown.json()["error"]["type"] == "not_found_error"
        assert f"{method} {path}" in unknown.json()["error"]["message"]
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        for method in ("GET", "PUT", "DELETE"):
            wrong = httpx.request(method, platform.url + path, headers=headers, timeout=10)
            assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST"), (method, path)
            assert wrong.json() == {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": f"{method} is not allowed on {path}: send a POST.",
                },
            }
    with pytest.raises(anthropic.AuthenticationError) as counted:
        anthropic_client(platform, "ck_nope").messages.count_tokens(
            model=QWEN, messages=[{"role": "user", "content": "x"}]
        )
    assert counted.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    elsewhere = httpx.get(platform.url + "/v1/nothing", headers=headers, timeout=10)  # OpenAI's shape stays
    assert (elsewhere.status_code, elsewhere.json()["error"]["type"]) == (404, "invalid_request_error")
    assert "No endpoint GET /v1/nothing" in elsewhere.json()["error"]["message"]


WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_responses_function_tool_round_trip(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    client = openai_client(platform, key)
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": WEATHER_SCHEMA,
            "strict": False,
        }
    ]
    question = [{"role": "user", "content": "Weather in Paris? [[sim:calls=1]]"}]
    first = client.responses.create(model=QWEN, input=question, tools=tools, max_output_tokens=300)  # type: ignore[arg-type]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert set(json.loads(calls[0].arguments)) == {"city"}
    with client.responses.stream(model=QWEN, input=question, tools=tools, max_output_tokens=300) as stream:  # type: ignore[arg-type]
        events = list(stream)
        streamed = stream.get_final_response()
    types = [event.type for event in events]
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    streamed_calls = [item for item in streamed.output if item.type == "function_call"]
    assert [call.name for call in streamed_calls] == ["get_weather"]
    history = [
        *question,
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 C, sunny"},
    ]
    second = client.responses.create(model=QWEN, input=history, tools=tools, max_output_tokens=200)  # type: ignore[arg-type]
    assert second.output_text and not [item for item in second.output if item.type == "function_call"]
    charges = [(r.usage.model_extra or {})["cost_nanoton"] for r in (first, streamed, second)]  # type: ignore[union-attr]
    assert balance(platform, key) == TON - sum(charges)


def test_anthropic_tool_use_round_trip(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    client = anthropic_client(platform, key)
    tools = [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": WEATHER_SCHEMA,
            "cache_control": {"type": "ephemeral"},
        }
    ]
    question = [{"role": "user", "content": "Weather in Paris? [[sim:calls=1]]"}]
    first = client.messages.create(
        model=QWEN,
        max_tokens=300,
        tools=tools,
        messages=question,  # type: ignore[arg-type]
        tool_choice={"type": "auto"},
    )
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and set(uses[0].input) == {"city"}  # type: ignore[arg-type]
    with client.messages.stream(model=QWEN, max_tokens=300, tools=tools, messages=question) as stream:  # type: ignore[arg-type]
        events = list(stream)
        streamed = stream.get_final_message()
    assert any(
        event.type == "content_block_delta" and event.delta.type == "input_json_delta"  # type: ignore[union-attr]
        for event in events
    )
    assert streamed.stop_reason == "tool_use"
    assert [block.input for block in streamed.content if block.type == "tool_use"] == [uses[0].input]  # type: ignore[union-attr]
    answer = client.messages.create(
        model=QWEN,
        max_tokens=200,
        tools=tools,
        messages=[  # type: ignore[arg-type]
            *question,
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C, sunny"}]},
        ],
    )
    assert answer.stop_reason in ("end_turn", "max_tokens") and answer.content[-1].type == "text"
    delta = next(event for event in events if event.type == "message_delta")
    charges = [(m.usage.model_extra or {})["cost_nanoton"] for m in (first, answer)]
    charges.append((delta.usage.model_extra or {})["cost_nanoton"])  # type: ignore[union-attr]
    assert balance(platform, key) == TON - sum(charges)
    counted = client.messages.count_tokens(model=QWEN, tools=tools, messages=question)  # type: ignore[arg-type]
    assert counted.input_tokens >= first.usage.input_tokens + first.usage.cache_read_input_tokens


def test_agents_sdk_string_model_on_its_default_responses_path(platform: Server, database_url: str) -> None:
    from agents import Agent, RunConfig, Runner, function_tool, set_default_openai_client, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # traces would go to OpenAI's servers
    key = new_account(platform, database_url, TON)
    set_default_openai_client(
        AsyncOpenAI(base_url=platform.url + "/v1", api_key=key, max_retries=0, timeout=30), use_for_tracing=False
    )
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"{city}: 18 degrees, sunny"

    agent = Agent(name="weather", instructions="Answer with the weather.", tools=[get_weather], model="qwen3-32b")
    result = Runner.run_sync(
        agent, "What is the weather in Paris? [[sim:calls=1]]", run_config=RunConfig(tracing_disabled=True)
    )
    assert asked and isinstance(result.final_output, str) and result.final_output
    records = usage_records(platform, key)
    assert len(records) == 2 and {r["endpoint"] for r in records.values()} == {"responses"}
    assert {r["model"] for r in records.values()} == {QWEN}
    assert balance(platform, key) == TON - sum(int(r["cost_nanoton"]) for r in records.values())  # type: ignore[call-overload]


AI_SDK_DIR = Path(__file__).parent / "node_ai_sdk"


def test_vercel_ai_sdk_default_openai_model(platform: Server, database_url: str) -> None:
    """`openai(model)` of the Vercel AI SDK speaks the Responses API: generateText and streamText."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the Vercel AI SDK test cannot run")
    if not (AI_SDK_DIR / "node_modules" / "@ai-sdk" / "openai").is_dir():
        installed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=AI_SDK_DIR, capture_output=True, text=True, timeout=300
        )
        if installed.returncode != 0:
            pytest.skip(f"npm install of ai and @ai-sdk/openai failed: {installed.stderr[-300:]}")
    key = new_account(platform, database_url, TON)
    run = subprocess.run(
        [node, "responses.mjs"],
        cwd=AI_SDK_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PLATFORM_URL": platform.url, "API_KEY": key, "MODEL": "qwen3-32b"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    answers = json.loads(run.stdout)
    records = usage_records(platform, key)
    assert set(records) == {answers["generated"]["id"], answers["streamed"]["id"]}
    for answer in answers.values():
        assert answer["text"] and answer["usage"]["outputTokens"] > 0
        assert answer["usage"]["raw"]["cost_nanoton"] == records[answer["id"]]["cost_nanoton"] > 0
    assert balance(platform, key) == TON - sum(int(r["cost_nanoton"]) for r in records.values())  # type: ignore[call-overload]


def sse_events(body: str) -> list[tuple[str, dict[str, object]]]:
    """(event name, data) of each server-sent event."""
    out = []
    for block in body.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "data" in lines:
            out.append((lines.get("event", ""), json.loads(lines["data"])))
    return out


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/messages"])
def test_a_cut_stream_ends_in_the_dialects_failure_event_and_bills_what_was_delivered(
    platform: Server, database_url: str, path: str
) -> None:
    key = new_account(platform, database_url, TON)
    text = "[[sim:fault=cut]] [[sim:tokens=40]] x"
    body = (
        {"model": QWEN, "stream": True, "input": text, "max_output_tokens": 200}
        if path == "/v1/responses"
        else {"model": QWEN, "stream": True, "max_tokens": 200, "messages": [{"role": "user", "content": text}]}
    )
    with httpx.stream("POST", platform.url + path, headers={"x-api-key": key}, json=body, timeout=30) as response:
        events = sse_events(response.read().decode())
        request_id = response.headers["x-request-id"]
    names = [name for name, _ in events]
    if path == "/v1/responses":
        assert names[:2] == ["response.created", "response.in_progress"] and names[-1] == "response.failed"
        assert events[-1][1]["response"]["status"] == "failed"  # type: ignore[index]
        assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    else:
        assert names[0] == "message_start" and names[-1] == "error" and "message_stop" not in names
        assert events[-1][1]["error"]["type"] == "api_error"  # type: ignore[index]
    rows = db_rows(
        database_url,
        "SELECT status, estimated, cost_nanoton, endpoint FROM usage_records WHERE request_id = :r",
        {"r": request_id},
    )
    status, estimated, cost, endpoint = rows[0]
    assert status == "upstream_cut" and bool(estimated) and int(cost) > 0  # type: ignore[call-overload]
    assert endpoint == path.rsplit("/", 1)[1]
    assert balance(platform, key) == TON - int(cost)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("fault", "status", "kind"),
    [("no_workers", 502, "api_error"), ("no_proxy", 503, "overloaded_error"), ("timeout", 504, "timeout_error")],
)
def test_network_failures_in_anthropics_shape(
    platform: Server, database_url: str, fault: str, status: int, kind: str
) -> None:
    key = new_account(platform, database_url, TON)
    for stream in (False, True):
        response = httpx.post(
            platform.url + "/v1/messages",
            headers={"x-api-key": key},
            timeout=30,
            json={
                "model": QWEN,
                "max_tokens": 20,
                "stream": stream,
                "messages": [{"role": "user", "content": f"[[sim:fault={fault}]] hi"}],
            },
        )
        assert response.status_code == status
        assert response.json()["type"] == "error" and response.json()["error"]["type"] == kind
