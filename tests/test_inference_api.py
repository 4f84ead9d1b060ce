"""Metered inference over HTTP with the official `openai` client, on both databases."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from conftest import ServerFactory
from support import Server, Simulator, db_rows, ledger_consistent, new_account

QWEN = "Qwen/Qwen3-32B"
SEED = "ByteDance-Seed/Seed-X-PPO-7B"
TON = 1_000_000_000


def client(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def async_client(server: Server, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def balance(server: Server, key: str) -> int:
    response = httpx.get(server.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return int(response.json()["balance_nanoton"])


def marked_up(network_cost: int) -> int:
    return -(-network_cost * 3 // 2)


def open_holds(database_url: str) -> int:
    return int(db_rows(database_url, "SELECT COUNT(*) FROM holds")[0][0])  # type: ignore[call-overload]


def test_chat_non_streaming_bills_the_reported_cost(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    completion = client(platform, key).chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "What is TON?"}], max_tokens=64
    )
    assert completion.choices[0].message.content
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    extra = usage.model_extra or {}
    assert extra["cost_nanoton"] == marked_up(extra["total_cost"]) > 0
    assert extra["cost_ton"] == pytest.approx(extra["cost_nanoton"] / TON)
    assert balance(platform, key) == TON - extra["cost_nanoton"]
    assert open_holds(database_url) == 0
    assert not ledger_consistent(database_url)


def test_request_id_header_and_usage_record(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    raw = client(platform, key).chat.completions.with_raw_response.create(
        model=QWEN, messages=[{"role": "user", "content": [{"type": "text", "text": "parts work"}]}], max_tokens=20
    )
    request_id = raw.headers["x-request-id"]
    completion = raw.parse()
    rows = db_rows(
        database_url,
        "SELECT model, endpoint, prompt_tokens, completion_tokens, reasoning_tokens, "
        "cost_nanoton, status, estimated FROM usage_records WHERE request_id = :r",
        {"r": request_id},
    )
    assert len(rows) == 1
    model, endpoint, prompt, completion_tokens, _reasoning, cost, status, estimated = rows[0]
    assert (model, endpoint, status, bool(estimated)) == (QWEN, "chat", "ok", False)
    assert completion.usage is not None
    assert (prompt, completion_tokens) == (completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert cost == (completion.usage.model_extra or {})["cost_nanoton"]
    ledger = db_rows(
        database_url,
        "SELECT amount_nanoton, kind FROM ledger_entries WHERE reference = :r",
        {"r": f"usage:{request_id}"},
    )
    assert ledger == [(-cost, "usage")]


def test_cost_computed_from_tokens_when_upstream_reports_zero(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    completion = client(platform, key).chat.completions.create(
        model=QWEN,
        max_tokens=40,
        messages=[{"role": "user", "content": "[[sim:cost=0]] [[sim:tokens=40]] price me"}],
    )
    usage = completion.usage
    assert usage is not None
    extra = usage.model_extra or {}
    assert extra["total_cost"] == 0
    reasoning = usage.completion_tokens_details.reasoning_tokens if usage.completion_tokens_details else 0
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    network = 20 * ((usage.prompt_tokens - cached) + cached // 10 + 8 * usage.completion_tokens)
    assert reasoning is not None and reasoning > 0
    assert extra["cost_nanoton"] == marked_up(network)
    assert balance(platform, key) == TON - extra["cost_nanoton"]


def test_text_completion(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    completion = client(platform, key).completions.create(
        model=SEED,
        prompt="Translate the following English sentence into Chinese: Hello, how are you? <zh>",
        max_tokens=30,
    )
    assert completion.object == "text_completion" and completion.choices[0].text
    assert completion.usage is not None
    assert balance(platform, key) == TON - (completion.usage.model_extra or {})["cost_nanoton"]


def test_streaming_chat_relays_chunks_and_bills_once(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    stream = client(platform, key).chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "[[sim:tokens=12]] stream please"}],
        max_tokens=100,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content = [c for c in chunks if c.choices]
    assert len(content) == 12
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and not usage_chunks[0].choices
    usage = usage_chunks[0].usage
    assert usage is not None and usage.completion_tokens == 12
    cost = (usage.model_extra or {})["cost_nanoton"]
    assert cost == marked_up((usage.model_extra or {})["total_cost"])
    assert balance(platform, key) == TON - cost
    assert open_holds(database_url) == 0


def test_streaming_without_include_usage_hides_usage_but_still_bills(
    platform: Server, database_url: str, simulator: Simulator
) -> None:
    key = new_account(platform, database_url, TON)
    with httpx.stream(
        "POST",
        platform.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": QWEN,
            "stream": True,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "[[sim:tokens=5]] hi"}],
        },
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = [line[6:] for line in body.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all('"usage":{' not in e for e in events)
    assert balance(platform, key) < TON
    forwarded = simulator.stats()["last_requests"][-1]  # type: ignore[index]
    assert forwarded["stream_options"] == {"include_usage": True}


def test_text_completion_stream_with_async_client(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)

    async def run() -> tuple[str, int]:
        async with async_client(platform, key) as aclient:
            stream = await aclient.completions.create(
                model=SEED,
                prompt="[[sim:tokens=7]] Translate the following English sentence into Chinese: hi <zh>",
                max_tokens=50,
                stream=True,
                stream_options={"include_usage": True},
            )
            text, cost = "", 0
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].text
                if chunk.usage is not None:
                    cost = (chunk.usage.model_extra or {})["cost_nanoton"]
            chat = await aclient.chat.completions.create(
                model=QWEN, messages=[{"role": "user", "content": "async"}], max_tokens=10
            )
            assert chat.usage is not None
            return text, cost + (chat.usage.model_extra or {})["cost_nanoton"]

    text, cost = asyncio.run(run())
    assert text and cost > 0
    assert balance(platform, key) == TON - cost


def test_openai_exception_classes(platform: Server, database_url: str) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.AuthenticationError) as auth_error:
        client(platform, "ck_not_a_real_key").chat.completions.create(model=QWEN, messages=messages)  # type: ignore[arg-type]
    assert auth_error.value.status_code == 401
    assert auth_error.value.body == {
        "message": "Invalid API key",
        "type": "invalid_auth",
        "param": None,
        "code": "invalid_api_key",
    }
    poor = new_account(platform, database_url)
    with pytest.raises(openai.APIStatusError) as payment:
        client(platform, poor).chat.completions.create(model=QWEN, messages=messages)  # type: ignore[arg-type]
    assert payment.value.status_code == 402
    assert payment.value.body == {
        "message": "Insufficient balance: 0.0000 TON. Minimum: 0.01 TON. Top up via /v1/deposit.",
        "type": "insufficient_balance",
        "param": None,
        "code": "insufficient_balance",
    }
    rich = new_account(platform, database_url, TON)
    with pytest.raises(openai.BadRequestError) as bad:
        client(platform, rich).chat.completions.create(
            model=SEED,
            messages=messages,
            tools=[  # type: ignore[arg-type]
                {"type": "function", "function": {"name": "f", "parameters": {}}}
            ],
        )
    assert bad.value.status_code == 400 and f"model {SEED} cannot call tools" in str(bad.value.body)
    with pytest.raises(openai.BadRequestError) as unknown:
        client(platform, rich).chat.completions.create(model="no/such-model", messages=messages)  # type: ignore[arg-type]
    assert "Unknown model" in str(unknown.value.body)
    assert balance(platform, rich) == TON


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}]},
            400,
            {
                "error": {
                    "message": "model and messages are required",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        (
            "/v1/chat/completions",
            {"model": QWEN},
            400,
            {
                "error": {
                    "message": "model and messages are required",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        (
            "/v1/completions",
            {"model": SEED},
            400,
            {
                "error": {
                    "message": "model and prompt are required",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        (
            "/v1/chat/completions",
            {"model": 5, "messages": []},
            422,
            {"detail": [{"loc": ["body", "model"], "msg": "Input should be a valid string", "type": "string_type"}]},
        ),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": "hi"},
            422,
            {"detail": [{"loc": ["body", "messages"], "msg": "Input should be a valid list", "type": "list_type"}]},
        ),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"},
            422,
            {"detail": [{"loc": ["body", "max_tokens"], "msg": "Input should be a valid integer", "type": "int_type"}]},
        ),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "temperature"],
                        "msg": "Input should be between 0 and 2",
                        "type": "less_than_equal",
                    }
                ]
            },
        ),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            422,
            {"detail": [{"loc": ["body", "stream"], "msg": "Input should be a valid boolean", "type": "bool_type"}]},
        ),
        (
            "/v1/completions",
            {"model": SEED, "prompt": 7},
            422,
            {"detail": [{"loc": ["body", "prompt"], "msg": "Input should be a valid string", "type": "string_type"}]},
        ),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": [{"role": "robot", "content": "x"}]},
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "messages", 0, "role"],
                        "msg": "Input should be 'system', 'developer', 'user', 'assistant' or 'tool'",
                        "type": "enum",
                    }
                ]
            },
        ),
        (
            "/v1/chat/completions",
            {"model": QWEN, "messages": [{"role": "user", "content": "x"}], "temperature": -1},
            422,
            {
                "detail": [
                    {
                        "loc": ["body", "temperature"],
                        "msg": "Input should be between 0 and 2",
                        "type": "greater_than_equal",
                    }
                ]
            },
        ),
    ],
)
def test_request_validation_bodies(
    platform: Server, database_url: str, path: str, body: dict[str, object], status: int, expected: dict[str, object]
) -> None:
    key = new_account(platform, database_url, TON)
    response = httpx.post(platform.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == status
    document = response.json()
    if status == 422:  # the spec's detail, and an OpenAI error object naming the field and the rule
        error = document.pop("error")
        failure = expected["detail"][0]  # type: ignore[index]
        assert error["type"] == "invalid_request_error" and error["code"] == "validation_error"
        path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in failure["loc"][1:])
        assert error["param"] == path.lstrip(".")  # messages[0].role
        assert error["param"] in error["message"] and failure["type"] in error["message"]
    assert document == expected
    assert balance(platform, key) == TON


def test_malformed_json_and_refused_fields(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    bad = httpx.post(platform.url + "/v1/chat/completions", content=b"{not json", headers=headers, timeout=10)
    assert bad.status_code == 422 and bad.json()["detail"][0]["type"] == "json_invalid"
    assert bad.json()["error"]["message"] == "Invalid request body: JSON decode error (json_invalid)"
    for field in ("tools", "tool_choice"):  # tools are taken (tests/test_tools_*), when well formed
        response = httpx.post(
            platform.url + "/v1/chat/completions",
            headers=headers,
            timeout=10,
            json={"model": QWEN, "messages": [{"role": "user", "content": "x"}], field: {"a": 1}},
        )
        assert response.status_code == 400 and response.json()["error"]["param"] == field, field
    for field in ("functions", "function_call", "logit_bias", "logprobs", "audio"):
        response = httpx.post(
            platform.url + "/v1/chat/completions",
            headers=headers,
            timeout=10,
            json={"model": QWEN, "messages": [{"role": "user", "content": "x"}], field: {"a": 1}},
        )
        assert response.status_code == 400, field
        assert response.json()["error"]["param"] == field
        assert response.json()["error"]["code"] == "unsupported_parameter"
        assert "not supported by the COCOON network" in response.json()["error"]["message"]
    unknown = httpx.post(
        platform.url + "/v1/chat/completions",
        headers=headers,
        timeout=10,
        json={"model": QWEN, "messages": [{"role": "user", "content": "x"}], "audio": {"a": 1}},
    )
    assert unknown.json()["error"]["message"] == (
        "'audio' is not supported by the COCOON network (its field check refuses any field it does not list); "
        "remove it from the request"
    )
    unknown_in_message = httpx.post(
        platform.url + "/v1/chat/completions",
        headers=headers,
        timeout=10,
        json={"model": QWEN, "messages": [{"role": "user", "content": "x", "weight": 1}]},
    )
    assert unknown_in_message.json()["error"]["message"] == (
        "'messages[0].weight' is not supported by the COCOON network (a user message may carry only content, "
        "name, role); remove it from the request"
    )
    image = httpx.post(
        platform.url + "/v1/chat/completions",
        headers=headers,
        timeout=10,
        json={
            "model": QWEN,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
        },
    )
    assert image.status_code == 400 and "only text parts" in image.json()["error"]["message"]


def test_forwarded_fields_max_tokens_cap_default_and_coefficient(
    platform: Server, database_url: str, simulator: Simulator
) -> None:
    key = new_account(platform, database_url, 10 * TON)
    openai_client = client(platform, key)
    openai_client.chat.completions.create(
        model=QWEN,
        messages=[{"role": "user", "content": "cap"}],
        max_tokens=500_000,
        temperature=0.5,
        top_p=0.9,
        stop=["x"],
        presence_penalty=0.1,
        frequency_penalty=0.1,
        response_format={"type": "text"},
        extra_body={"chat_template_kwargs": {"enable_thinking": False}, "reasoning_effort": "low"},
    )
    forwarded = simulator.stats()["last_requests"][-1]  # type: ignore[index]
    assert forwarded["max_tokens"] == 128000 and forwarded["max_coefficient"] == 1000
    assert forwarded["timeout"] == 120  # COCOON_UPSTREAM_REQUEST_TIMEOUT, on every request
    for field in (
        "temperature",
        "top_p",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "chat_template_kwargs",
        "reasoning_effort",
    ):
        assert field in forwarded["fields"], field
    openai_client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "default"}])
    assert simulator.stats()["last_requests"][-1]["max_tokens"] == 4096  # type: ignore[index]
    openai_client.chat.completions.create(
        model=QWEN, messages=[{"role": "user", "content": "mct"}], max_completion_tokens=33
    )
    assert simulator.stats()["last_requests"][-1]["max_tokens"] == 33  # type: ignore[index]


def test_the_networks_stop_reason_reaches_the_caller_unchanged(platform: Server, database_url: str) -> None:
    """vLLM names the stop string that ended a choice in its `stop_reason` (null when it ended by
    itself), on the choice's last chunk only: a whole answer and a stream pass it on as sent."""
    key = new_account(platform, database_url, TON)
    openai_client = client(platform, key)
    question = f"Count, {key[-8:]}. [[sim:tokens=40]]"

    def ask(**extra: Any) -> Any:
        return openai_client.chat.completions.create(
            model=QWEN, messages=[{"role": "user", "content": question}], max_tokens=100, **extra
        )

    whole = ask().choices[0]
    assert whole.finish_reason == "stop" and (whole.model_extra or {})["stop_reason"] is None
    text = whole.message.content or ""
    stop = " ".join(text.split()[3:5])
    stopped = ask(stop=["never-said", stop]).choices[0]
    assert stopped.message.content == text[: text.index(stop)] and stopped.finish_reason == "stop"
    assert (stopped.model_extra or {})["stop_reason"] == stop
    choices = [chunk.choices[0] for chunk in ask(stop=["never-said", stop], stream=True) if chunk.choices]
    assert "".join(c.delta.content or "" for c in choices) == text[: text.index(stop)]
    assert [c.finish_reason for c in choices][-1] == "stop"
    assert ["stop_reason" in (c.model_extra or {}) for c in choices] == [False] * (len(choices) - 1) + [True]
    assert (choices[-1].model_extra or {})["stop_reason"] == stop


def test_worst_case_that_does_not_fit_is_402_with_advice(
    server_factory: ServerFactory, simulator: Simulator, database_url: str
) -> None:
    platform = server_factory(upstream_url=simulator.url, max_overdraft_ton="0")
    key = new_account(platform, database_url, 20_000_000)  # 0.02 TON
    response = httpx.post(
        platform.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": QWEN, "messages": [{"role": "user", "content": "x"}], "max_tokens": 128000},
        timeout=10,
    )
    assert response.status_code == 402
    message = response.json()["error"]["message"]
    assert "needs up to" in message and "is available" in message
    assert "overdraft 0 TON" in message and "E-" not in message  # exact amounts, never in exponent form
    fits = int(message.split("largest max_tokens that fits is ")[1].rstrip("."))
    # 0.02 TON available at 240 nanoTON per completion token, less the prompt's bound.
    assert 20_000_000 // 240 > fits > 20_000_000 // 240 - 1000
    ok = httpx.post(
        platform.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": QWEN, "messages": [{"role": "user", "content": "x"}], "max_tokens": fits},
        timeout=30,
    )
    assert ok.status_code == 200


def test_concurrent_requests_never_overdraw(platform: Server, database_url: str) -> None:
    """100 at once on 0.02 TON, each answer costing ~0.0021 TON: reservations stop the overdraft, and an
    account whose lifetime credits are below COCOON_OVERDRAFT_MIN_CREDITS_TON gets none (#14)."""
    key = new_account(platform, database_url, 20_000_000)
    body = {
        "model": QWEN,
        "max_tokens": 6000,
        "messages": [{"role": "user", "content": "[[sim:tokens=6000]] [[sim:cost=0]] spend"}],
    }

    async def one(aclient: httpx.AsyncClient) -> httpx.Response:
        return await aclient.post("/v1/chat/completions", json=body)

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=platform.url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
        ) as aclient:
            return await asyncio.gather(*(one(aclient) for _ in range(100)))

    responses = asyncio.run(run())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402}, statuses
    ok = [r for r in responses if r.status_code == 200]
    assert ok and statuses.count(402) > 0
    final = balance(platform, key)
    assert final >= 0, final
    refusals = [r.json()["error"]["message"] for r in responses if r.status_code == 402]
    detailed = [m for m in refusals if "needs up to" in m]  # the others: the balance fell below the minimum
    assert detailed and all("overdraft 0 TON" in m and "opens once your deposits reach 1 TON" in m for m in detailed)
    assert not ledger_consistent(database_url)
    assert open_holds(database_url) == 0
    charged = db_rows(
        database_url,
        """
        SELECT COUNT(*), COUNT(DISTINCT u.request_id) FROM usage_records u
          JOIN ledger_entries l ON l.reference = 'usage:' || u.request_id
          JOIN api_keys k ON k.account_id = u.account_id WHERE k.key_hash = :h AND u.status = 'ok'""",
        {"h": __import__("hashlib").sha256(key.encode()).digest()},
    )
    assert charged[0] == (len(ok), len(ok))
    total_charged = sum(r.json()["usage"]["cost_nanoton"] for r in ok)
    assert final == 20_000_000 - total_charged


def test_inference_records_the_keys_last_use(
    server_factory: ServerFactory, simulator: Simulator, database_url: str
) -> None:
    import hashlib

    server = server_factory(upstream_url=simulator.url)
    key = new_account(server, database_url, TON)
    client(server, key).chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    query = "SELECT last_used_at FROM api_keys WHERE key_hash = :h"
    digest = hashlib.sha256(key.encode()).digest()
    assert db_rows(database_url, query, {"h": digest}) == [(None,)], "kept in memory, not written per request"
    server.stop()  # the tracker writes what it holds on shutdown
    assert db_rows(database_url, query, {"h": digest})[0][0] is not None


def test_what_apps_commonly_send_reaches_a_strict_client_as_it_takes_it(
    platform: Server, database_url: str, simulator: Simulator
) -> None:
    """Ruling 7: the simulator refuses what the older COCOON client build refuses; the platform
    forwards only what both builds take, so `user`, `seed`, a string `stop`, a `developer`
    message, text parts and an echoed `reasoning_content` all work, streamed or not."""
    key = new_account(platform, database_url, TON)
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "ok", "reasoning_content": "thinking..."},
        {"role": "user", "content": "again"},
    ]
    for stream in (False, True):
        answer = client(platform, key).chat.completions.create(
            model=QWEN,
            messages=messages,
            user="end-user-7",
            seed=7,
            stop="END",
            store=False,  # type: ignore[arg-type]
            metadata={"app": "x"},
            stream=stream,
            max_tokens=16,
        )
        if stream:
            assert [chunk for chunk in answer]  # type: ignore[union-attr]
        forwarded = simulator.stats()["last_requests"][-1]  # type: ignore[index]
        assert not {"user", "seed", "store", "metadata"} & set(forwarded["fields"])
        assert forwarded["stop"] == ["END"]
        assert forwarded["messages"] == [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one\ntwo"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "again"},
        ]
