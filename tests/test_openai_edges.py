"""The OpenAI edges clients trip on (issue 17): reasons on 422s, one model by id, aliases, the
answer's id as the request id, x-request-id on every answer, 405 with Allow."""

from __future__ import annotations

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
