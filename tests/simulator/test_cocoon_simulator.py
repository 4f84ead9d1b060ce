"""End-to-end tests of the COCOON client simulator, run as a real subprocess over HTTP."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cocoon_simulator.cocoon import ModelSpec, add_arguments, options_from_args

QWEN = "Qwen/Qwen3-32B"
SEED = "ByteDance-Seed/Seed-X-PPO-7B"
ACCESS_HASH = "test-access-hash"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start `python -m cocoon_simulator` and wait until it answers."""
    port = _free_port()
    log: Path = tmp_path_factory.mktemp("sim") / "simulator.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cocoon_simulator", "--port", str(port), "--access-hash", ACCESS_HASH],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                pytest.fail(f"simulator exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/_sim/stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"simulator did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def initial_config(client: httpx.Client) -> dict[str, Any]:
    config: dict[str, Any] = client.get("/_sim/config").json()
    return config


@pytest.fixture(autouse=True)
def clean(client: httpx.Client, initial_config: dict[str, Any]) -> Iterator[None]:
    """Every test starts with empty counters and prompt cache, and leaves the config as found."""
    assert client.post("/_sim/reset").status_code == 200
    yield
    assert client.post("/_sim/config", json=initial_config).status_code == 200


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": QWEN, "messages": [{"role": "user", "content": content}], **extra}


def post(client: httpx.Client, path: str, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    return client.post(path, json=body, **kwargs)


def configure(client: httpx.Client, **changes: Any) -> None:
    response = client.post("/_sim/config", json=changes)
    assert response.status_code == 200, response.text


def stats(client: httpx.Client) -> dict[str, Any]:
    data: dict[str, Any] = client.get("/_sim/stats").json()
    return data


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def sse(response: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    """(JSON events, whether [DONE] arrived) from an SSE response."""
    events: list[dict[str, Any]] = []
    done = False
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        payload = line[len("data: ") :]
        if payload == "[DONE]":
            done = True
        else:
            events.append(json.loads(payload))
    return events, done


def stream(client: httpx.Client, path: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        return sse(response)


def tokens(text: str) -> int:
    """The simulator's tokenizer: ceil(utf8 bytes / 4)."""
    return (len(text.encode()) + 3) // 4


# --- status endpoints --------------------------------------------------------------------------


def test_models_shape_and_duplicate_object_key(client: httpx.Client) -> None:
    response = client.get("/v1/models")
    assert response.status_code == 200
    assert response.text.count('"object":"list"') == 2
    document = response.json()
    assert document["object"] == "list"
    assert [m["id"] for m in document["data"]] == [QWEN, SEED]
    for model in document["data"]:
        assert (model["object"], model["created"], model["owned_by"]) == ("model", 0, "?")
        assert model["workers"] == [{"coefficient": 1000, "running_requests": 0, "max_running_requests": 60}] * 2


def test_models_refuses_a_request_body(client: httpx.Client) -> None:
    assert client.request("GET", "/v1/models", content=b"{}").status_code == 400


def test_jsonstats_needs_access_hash(client: httpx.Client) -> None:
    assert client.get("/jsonstats").status_code == 403
    assert client.get("/jsonstats", params={"access_hash": "wrong"}).status_code == 403
    assert client.get("/stats").status_code == 403
    response = client.get("/jsonstats", params={"access_hash": ACCESS_HASH})
    assert response.status_code == 200
    data = response.json()
    assert data["root_contract_config"] == {
        "price_per_token": 20,
        "worker_fee_per_token": 1,
        "prompt_tokens_price_multiplier": 10000,
        "cached_tokens_price_multiplier": 1000,
        "completion_tokens_price_multiplier": 80000,
        "reasoning_tokens_price_multiplier": 80000,
    }
    assert data["status"]["enabled"] is True
    assert data["status"]["wallet_balance"] == data["wallet"]["balance"] > 0
    assert isinstance(data["status"]["ton_last_synced_at"], int)
    assert data["wallet"]["address"]
    assert data["proxy_connections"][0]["is_ready"] is True
    assert client.get("/stats", params={"access_hash": ACCESS_HASH}).status_code == 200


def test_jsonstats_follows_runtime_config(client: httpx.Client) -> None:
    configure(client, price_per_token=33, fault="no_proxy")
    data = client.get("/jsonstats", params={"access_hash": ACCESS_HASH}).json()
    assert data["root_contract_config"]["price_per_token"] == 33
    assert data["proxy_connections"][0]["is_ready"] is False


def test_unknown_path_and_method(client: httpx.Client) -> None:
    # Unknown paths fall through to the toncenter fake mounted in the same process: still a JSON 404.
    response = client.get("/nope")
    assert response.status_code == 404
    assert "error" in response.json()
    assert client.get(CHAT).status_code == 405


# --- chat ---------------------------------------------------------------------------------------


def test_chat_non_stream(client: httpx.Client) -> None:
    response = post(client, CHAT, chat_body("Tell me a story [[sim:tokens=12]]"))
    assert response.status_code == 200
    start = float(response.headers["x-cocoon-client-start"])
    assert start <= float(response.headers["x-cocoon-client-end"])
    data = response.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == QWEN
    assert data["id"].startswith("chatcmpl-")
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop" and "stop_reason" in choice and choice["stop_reason"] is None
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["reasoning_content"].split()) == 3
    assert len(choice["message"]["content"].split()) == 9
    usage = data["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["completion_tokens_details"]["reasoning_tokens"] == usage["reasoning_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0


def test_prompt_token_counting(client: httpx.Client) -> None:
    system = "You are terse."
    user_parts = [{"type": "text", "text": "héllo "}, {"type": "image_url", "image_url": {"url": "x"}}]
    user_parts.append({"type": "text", "text": "wörld"})
    body = {
        "model": QWEN,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user_parts},
            {"role": "assistant", "content": None},
        ],
    }
    expected = (tokens(system) + 4) + (tokens("héllo wörld") + 4) + (0 + 4) + 3
    usage = post(client, CHAT, body).json()["usage"]
    assert usage["prompt_tokens"] == expected == 23


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": ""}] * 60,
        [{"role": ""}] * 40,
        [{"role": "user", "content": "é" * 300}],
        [{"role": "user", "content": [{"type": "text", "text": ""}] * 5}] * 10,
    ],
)
def test_prompt_tokens_never_exceed_body_bytes(client: httpx.Client, messages: list[dict[str, Any]]) -> None:
    body = json.dumps({"model": QWEN, "messages": messages}, separators=(",", ":")).encode()
    response = client.post(CHAT, content=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] <= len(body)


def test_max_tokens_bounds_completion(client: httpx.Client) -> None:
    usage_choice = post(client, CHAT, chat_body("[[sim:tokens=50]]", max_tokens=7)).json()
    assert usage_choice["usage"]["completion_tokens"] == 7
    assert usage_choice["choices"][0]["finish_reason"] == "length"
    newer = post(client, CHAT, chat_body("[[sim:tokens=50]]", max_tokens=30, max_completion_tokens=5)).json()
    assert newer["usage"]["completion_tokens"] == 5
    roomy = post(client, CHAT, chat_body("[[sim:tokens=50]]", max_tokens=50)).json()
    assert roomy["usage"]["completion_tokens"] == 50
    assert roomy["choices"][0]["finish_reason"] == "stop"
    assert post(client, CHAT, chat_body("hi", max_tokens=0)).status_code == 400


def test_default_length_is_deterministic(client: httpx.Client) -> None:
    first = post(client, CHAT, chat_body("What is the capital of France?")).json()
    second = post(client, CHAT, chat_body("What is the capital of France?")).json()
    assert 16 <= first["usage"]["completion_tokens"] <= 48
    assert first["choices"][0]["message"] == second["choices"][0]["message"]
    other = post(client, CHAT, chat_body("Something else entirely, please.")).json()
    assert other["choices"][0]["message"] != first["choices"][0]["message"]


def test_reasoning_can_be_turned_off(client: httpx.Client) -> None:
    body = chat_body("[[sim:tokens=8]]", chat_template_kwargs={"enable_thinking": False})
    data = post(client, CHAT, body).json()
    assert data["usage"]["reasoning_tokens"] == 0
    assert data["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert data["choices"][0]["message"]["reasoning_content"] is None
    assert len(data["choices"][0]["message"]["content"].split()) == 8


@pytest.mark.parametrize(("count", "reasoning"), [(1, 0), (2, 1), (3, 1), (4, 1), (9, 2), (40, 10)])
def test_reasoning_share(client: httpx.Client, count: int, reasoning: int) -> None:
    usage = post(client, CHAT, chat_body(f"[[sim:tokens={count}]]")).json()["usage"]
    assert (usage["completion_tokens"], usage["reasoning_tokens"]) == (count, reasoning)


def test_chat_stream(client: httpx.Client) -> None:
    body = chat_body("Stream it [[sim:tokens=8]]", stream_options={"include_usage": False})
    events, done = stream(client, CHAT, body)
    assert done
    chunks, final = events[:-1], events[-1]
    assert len(chunks) == 8
    assert all(c["object"] == "chat.completion.chunk" and len(c["choices"]) == 1 for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    assert [("reasoning_content" in d, "content" in d) for d in deltas] == [(True, False)] * 2 + [(False, True)] * 6
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 7 + ["stop"]
    # vLLM leaves unset fields out of a chunk: only the choice's last one says its stop_reason.
    assert ["stop_reason" in c["choices"][0] for c in chunks] == [False] * 7 + [True]
    assert chunks[-1]["choices"][0]["stop_reason"] is None
    assert final["choices"] == []
    assert final["usage"]["completion_tokens"] == 8
    assert final["usage"]["reasoning_tokens"] == 2
    assert final["usage"]["total_cost"] > 0
    non_stream = post(client, CHAT, chat_body("Stream it [[sim:tokens=8]]")).json()["choices"][0]["message"]
    assert "".join(d.get("content", "") for d in deltas) == non_stream["content"]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == non_stream["reasoning_content"]


def test_stream_respects_max_tokens(client: httpx.Client) -> None:
    events, done = stream(client, CHAT, chat_body("[[sim:tokens=20]]", max_tokens=5))
    assert done
    assert len(events) == 6
    assert events[4]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"]["completion_tokens"] == 5


# --- completions --------------------------------------------------------------------------------


def test_completions_translation(client: httpx.Client) -> None:
    prompt = "Translate the following English sentence into Chinese: The weather is nice today. <zh>"
    body = {"model": SEED, "prompt": prompt, "max_tokens": 100}
    data = post(client, COMPLETIONS, body).json()
    assert data["object"] == "text_completion"
    text = data["choices"][0]["text"]
    assert text and all("\u4e00" <= ch <= "\u9fff" for ch in text)
    assert data["usage"]["prompt_tokens"] == tokens(prompt)
    assert data["usage"]["reasoning_tokens"] == 0
    assert data["choices"][0]["stop_reason"] is None
    events, done = stream(client, COMPLETIONS, body)
    assert done
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == text
    # A completion chunk says its stop_reason on every chunk (vLLM sets it on each).
    assert all("stop_reason" in e["choices"][0] and e["choices"][0]["stop_reason"] is None for e in events[:-1])
    assert events[-1]["usage"]["completion_tokens"] == data["usage"]["completion_tokens"] == len(events) - 1


def test_models_are_accepted_on_either_endpoint(client: httpx.Client) -> None:
    assert post(client, COMPLETIONS, {"model": QWEN, "prompt": "Once upon a time"}).status_code == 200
    chat = post(client, CHAT, {"model": SEED, "messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["usage"]["reasoning_tokens"] == 0


# --- prompt cache and costs ----------------------------------------------------------------------


def test_cached_tokens_on_repeat(client: httpx.Client) -> None:
    content = "x" * 200  # 50 tokens + 4 per message = 54 -> 48 cached; prompt 57
    first = post(client, CHAT, chat_body(content, max_tokens=1)).json()["usage"]
    second = post(client, CHAT, chat_body(content, max_tokens=1)).json()["usage"]
    assert (first["prompt_tokens"], first["prompt_tokens_details"]["cached_tokens"]) == (57, 0)
    assert (second["prompt_tokens"], second["prompt_tokens_details"]["cached_tokens"]) == (57, 48)
    # prompt: (57-48)*1.0 + 48*0.1 -> 9 + 4 = 13 tokens' worth at 20 nanoTON
    assert second["prompt_total_cost"] == 260
    assert first["prompt_total_cost"] == 57 * 20


def test_cache_works_at_message_granularity(client: httpx.Client) -> None:
    system = {"role": "system", "content": "s" * 120}  # 30 + 4 = 34 tokens
    turn = {"role": "user", "content": "u" * 60}  # 15 + 4 = 19 tokens
    post(client, CHAT, {"model": QWEN, "messages": [system, turn]})
    follow_up = [system, turn, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    usage = post(client, CHAT, {"model": QWEN, "messages": follow_up}).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 48  # 34 + 19 = 53 -> 48
    changed = [{"role": "system", "content": "t" * 120}, turn]
    usage = post(client, CHAT, {"model": QWEN, "messages": changed}).json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0


def test_completion_cache_is_text_level(client: httpx.Client) -> None:
    base = "a" * 100  # 25 tokens; one whole 16-token block
    body = {"model": SEED, "prompt": base, "max_tokens": 1}
    assert post(client, COMPLETIONS, body).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    longer = {"model": SEED, "prompt": base + "b" * 100, "max_tokens": 1}
    assert post(client, COMPLETIONS, longer).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 16
    assert post(client, COMPLETIONS, longer).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 48


def test_cost_formula(client: httpx.Client) -> None:
    content = "c" * 40  # 10 + 4 + 3 = 17 prompt tokens
    usage = post(client, CHAT, chat_body(content, max_tokens=10)).json()["usage"]
    # natural length >= 16 is cut to 10: reasoning 2, answer 8
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["reasoning_tokens"]) == (17, 10, 2)
    assert usage["prompt_total_cost"] == 17 * 20
    assert usage["completion_total_cost"] == (8 * 8 + 2 * 8) * 20
    assert usage["total_cost"] == 340 + 1600

    configure(client, coefficient=1500, price_per_token=30, reasoning_multiplier=50000)
    usage = post(client, CHAT, chat_body("d" * 40, max_tokens=10)).json()["usage"]
    # floor(17*1.5)=25; floor(8*1.5*8)=96; floor(2*1.5*5)=15
    assert usage["prompt_total_cost"] == 25 * 30
    assert usage["completion_total_cost"] == (96 + 15) * 30
    assert usage["total_cost"] == 750 + 3330


def test_cost_can_be_hidden(client: httpx.Client) -> None:
    usage = post(client, CHAT, chat_body("free please [[sim:cost=0]]")).json()["usage"]
    assert usage["prompt_total_cost"] == usage["completion_total_cost"] == usage["total_cost"] == 0
    assert usage["completion_tokens"] > 0
    configure(client, report_total_cost=False)
    events, _ = stream(client, CHAT, chat_body("stream cost"))
    assert events[-1]["usage"]["total_cost"] == 0


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        "tools",
        "tool_choice",
        "function_call",
        "logit_bias",
        "metadata",
        "user",
        "seed",
        "logprobs",
        "store",
        "skip_special_tokens",
        "something_new",
    ],
)
def test_refused_fields(client: httpx.Client, field: str) -> None:
    """The default is the older, stricter client build: anything off its list fails the request."""
    response = post(client, CHAT, chat_body("hi", **{field: {}}))
    assert response.status_code == 400
    assert response.json() == {"error_code": 400, "error": f"unknown option '{field}' in request"}


def test_the_newer_build_takes_more_fields_but_checks_stop_and_messages(client: httpx.Client) -> None:
    configure(client, client_build="newer")
    assert post(client, CHAT, chat_body("hi", seed=1, user="u", logprobs=False, store=False)).status_code == 200
    assert post(client, CHAT, chat_body("hi", tools=[])).json() == {
        "error_code": 400,
        "error": " has unknown field 'tools'",
    }
    assert post(client, CHAT, chat_body("hi", stop="x")).status_code == 400
    assert post(client, CHAT, chat_body("hi", stop=["x"])).status_code == 200
    echoed = {
        "model": QWEN,
        "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "reasoning_content": "r"}],
    }
    assert post(client, CHAT, echoed).json()["error"] == " has unknown field 'reasoning_content'"
    assert post(client, CHAT, {"model": QWEN, "messages": [{"role": "tool", "content": "r"}]}).status_code == 400
    configure(client, client_build="older")
    assert post(client, CHAT, echoed).status_code == 200  # the older build does not look inside messages
    assert post(client, CHAT, chat_body("hi", stop="x")).status_code == 200


@pytest.mark.parametrize("build", ["older", "newer"])
def test_stream_options_beyond_usage_fail_and_any_make_a_stream(client: httpx.Client, build: str) -> None:
    configure(client, client_build=build)
    refused = post(client, CHAT, chat_body("hi", stream=True, stream_options={"continuous_usage_stats": True}))
    assert refused.status_code == 400 and "continuous_usage_stats" in refused.json()["error"]
    streamed = post(client, CHAT, chat_body("hi", stream_options={"include_usage": True}))
    assert streamed.headers["content-type"].startswith("text/event-stream")


def test_timeout_ends_a_slow_answer_with_504(client: httpx.Client) -> None:
    """The client gives the network 95% of the request's timeout, then answers 504."""
    configure(client, tpt_ms=50)
    started = time.monotonic()
    slow = post(client, CHAT, chat_body("[[sim:tokens=100]] slow", timeout=0.4))
    assert slow.status_code == 504 and 0.3 < time.monotonic() - started < 2
    assert post(client, CHAT, chat_body("[[sim:tokens=4]] quick", timeout=2)).status_code == 200
    assert post(client, CHAT, chat_body("hi", timeout=0)).status_code == 400


def test_timeout_ends_a_slow_stream_without_usage(client: httpx.Client) -> None:
    configure(client, tpt_ms=50)
    events, done = stream(client, CHAT, chat_body("[[sim:tokens=100]] slow", timeout=0.5))
    assert not done and 4 <= len(events) < 20 and all(e["choices"] for e in events)


def test_accepted_extras(client: httpx.Client) -> None:
    body = chat_body(
        "hi",
        response_format={"type": "text"},
        reasoning_effort="low",
        timeout=30,
        request_guid="g",
    )
    assert post(client, CHAT, body).status_code == 200


def test_bad_requests(client: httpx.Client) -> None:
    bad_json = client.post(CHAT, content=b"{not json")
    assert bad_json.status_code == 400 and bad_json.json()["error_code"] == 400
    assert client.post(CHAT, content=b"[1]").status_code == 400
    missing = post(client, CHAT, {"messages": [{"role": "user", "content": "hi"}]})
    assert missing.status_code == 400 and "model" in missing.json()["error"]
    unknown = post(client, CHAT, {"model": "nope/x", "messages": [{"role": "user", "content": "hi"}]})
    assert unknown.status_code == 400 and "unknown model nope/x" in unknown.text
    assert post(client, CHAT, {"model": QWEN, "messages": []}).status_code == 400
    assert post(client, CHAT, {"model": QWEN, "messages": [{"content": "no role"}]}).status_code == 400
    assert post(client, COMPLETIONS, {"model": SEED, "prompt": 5}).status_code == 400
    assert post(client, CHAT, chat_body("[[sim:fault=bogus]]")).status_code == 400
    assert stats(client)["errors"] == 8


def test_max_coefficient(client: httpx.Client) -> None:
    response = post(client, CHAT, chat_body("hi", max_coefficient=500))
    assert response.status_code == 502
    assert response.json() == {
        "error_code": 652,
        "error": "Internal data: no worker with coefficient <= 500; can run with coefficient 1000",
    }
    configure(client, coefficient=5000)
    assert post(client, CHAT, chat_body("hi")).status_code == 502  # default max_coefficient 4000
    assert post(client, CHAT, chat_body("hi", max_coefficient=6000)).status_code == 200
    workers = client.get("/v1/models").json()["data"][0]["workers"]
    assert {w["coefficient"] for w in workers} == {5000}


# --- faults --------------------------------------------------------------------------------------


def _check_error_fault(response: httpx.Response, mode: str) -> None:
    if mode == "no_proxy":
        assert response.status_code == 503
        assert response.text == "no working proxy connections"
    elif mode == "no_workers":
        assert response.status_code == 502
        assert response.json() == {"error_code": 651, "error": f"Internal data: no ready workers for model {QWEN}"}
    elif mode == "timeout":
        assert response.status_code == 504
        assert response.json() == {"error_code": 504, "error": "Internal data: request timed out in the network"}
    elif mode == "wallet_low":
        assert response.status_code == 500
        assert "balance" in response.json()["error"]
    else:
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("text/html")
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)


ERROR_MODES = ["no_proxy", "no_workers", "timeout", "wallet_low", "html_error"]


@pytest.mark.parametrize("mode", ERROR_MODES)
def test_error_faults_by_marker(client: httpx.Client, mode: str) -> None:
    _check_error_fault(post(client, CHAT, chat_body(f"hello [[sim:fault={mode}]]")), mode)
    _check_error_fault(post(client, CHAT, chat_body("hello", stream=True), headers={"X-Sim-Fault": mode}), mode)
    assert stats(client)["faults"] == {mode: 2}


@pytest.mark.parametrize("mode", ERROR_MODES)
def test_error_faults_process_wide(client: httpx.Client, mode: str) -> None:
    configure(client, fault=mode)
    _check_error_fault(post(client, CHAT, chat_body("hello")), mode)
    assert post(client, CHAT, chat_body("hello [[sim:fault=none]]")).status_code == 200
    assert post(client, CHAT, chat_body("hello"), headers={"X-Sim-Fault": "none"}).status_code == 200
    configure(client, fault=None)
    assert post(client, CHAT, chat_body("hello")).status_code == 200


def test_hang_does_not_leak(base_url: str, client: httpx.Client) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    body = json.dumps(chat_body("wait [[sim:fault=hang]]")).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        wait_for(lambda: stats(client)["in_flight"] == 1)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # no answer, ever
    wait_for(lambda: stats(client)["in_flight"] == 0)  # the client left, so the request ended
    assert stats(client)["faults"] == {"hang": 1}


def test_cut_stream(client: httpx.Client) -> None:
    lines: list[str] = []
    with client.stream("POST", CHAT, json=chat_body("[[sim:tokens=20]] [[sim:fault=cut]]", stream=True)) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for line in response.iter_lines():
                lines.append(line)
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert len(events) == 10
    assert all(e["choices"] for e in events)
    assert "data: [DONE]" not in lines


def test_cut_non_stream(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, CHAT, chat_body("[[sim:fault=cut]]"))
    configure(client, fault="cut")
    with pytest.raises(httpx.RemoteProtocolError):
        post(client, COMPLETIONS, {"model": SEED, "prompt": "cut me"})
    assert stats(client)["in_flight"] == 0


def test_stall_stops_half_way_until_the_timeout_ends_the_stream(client: httpx.Client) -> None:
    """A worker that stops mid-answer: half the tokens, then nothing, until the client's timeout
    ends the stream as it ends any answer out of time (no usage, no [DONE])."""
    started = time.monotonic()
    body = chat_body("[[sim:tokens=20]] [[sim:fault=stall]]", timeout=0.5)
    events, done = stream(client, CHAT, body)
    assert 0.4 < time.monotonic() - started < 3
    assert len(events) == 10 and all(e["choices"] for e in events) and not done
    started = time.monotonic()
    assert post(client, CHAT, body).status_code == 504  # a non-streamed answer: the client's 504
    assert 0.4 < time.monotonic() - started < 3
    assert stats(client)["faults"] == {"stall": 2}


def test_a_fault_can_strike_one_attempt_of_a_request_sent_again(client: httpx.Client) -> None:
    body = chat_body("[[sim:tokens=20]] [[sim:fault=cut]] [[sim:fault_attempt=2]]", stream=True, timeout=60)
    first, done = stream(client, CHAT, body)
    assert done and first[-1]["usage"]["completion_tokens"] == 20
    # Sent again with less time (as a client retries with the time it has left): the same request.
    with (
        client.stream("POST", CHAT, json={**body, "timeout": 30}) as response,
        pytest.raises(httpx.RemoteProtocolError),
    ):
        for _ in response.iter_lines():
            pass
    assert stream(client, CHAT, body)[1]  # the third arrival is answered whole again
    assert stream(client, CHAT, {**body, "max_tokens": 50})[1]  # another body: its own count
    assert stats(client)["faults"] == {"cut": 1}
    assert post(client, CHAT, chat_body("[[sim:fault_attempt=0]] x")).status_code == 400


@pytest.mark.parametrize("name", ["tokens", "calls", "fault_attempt", "overcount"])
@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "9" * 5000, "1.5"])
def test_a_numeric_marker_takes_ascii_digits_only(client: httpx.Client, name: str, value: str) -> None:
    """A superscript two passed str.isdigit and crashed the simulator in int() (a 500), as did a
    number past int()'s 4300 digits; an Arabic-Indic one was read as 1. Each is a 400 now."""
    response = post(client, CHAT, chat_body(f"x [[sim:{name}={value}]]"))
    assert response.status_code == 400 and response.json()["error"] == f"bad sim {name} {value}"


def test_bare_json_stream(client: httpx.Client) -> None:
    with client.stream("POST", CHAT, json=chat_body("[[sim:tokens=6]][[sim:fault=bare_json]]", stream=True)) as r:
        lines = [line for line in r.iter_lines() if line]
    assert not any(line.startswith("data:") for line in lines)
    objects = [json.loads(line) for line in lines]
    assert len(objects) == 7
    assert objects[-1]["choices"] == [] and objects[-1]["usage"]["completion_tokens"] == 6
    # a non-streaming request is unaffected
    assert post(client, CHAT, chat_body("[[sim:fault=bare_json]]")).json()["object"] == "chat.completion"


# --- timing, load and disconnects ----------------------------------------------------------------


def test_latency(client: httpx.Client) -> None:
    configure(client, ttft_ms=150, tpt_ms=10)
    began = time.monotonic()
    post(client, CHAT, chat_body("[[sim:tokens=6]]"))
    assert time.monotonic() - began >= 0.2  # 150 + 5 * 10 ms
    began = time.monotonic()
    events, done = stream(client, CHAT, chat_body("[[sim:tokens=6]]"))
    assert done and len(events) == 7
    assert time.monotonic() - began >= 0.2


def test_running_requests_and_disconnect(base_url: str, client: httpx.Client) -> None:
    configure(client, tpt_ms=20)
    with (
        httpx.Client(base_url=base_url, timeout=10) as other,
        other.stream("POST", CHAT, json=chat_body("[[sim:tokens=500]]", stream=True)) as response,
    ):
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]  # 3 events with their blank lines
        assert all(line.startswith("data: ") for line in received[::2])
        workers = client.get("/v1/models").json()["data"][0]["workers"]
        assert sum(w["running_requests"] for w in workers) == 1
        assert stats(client)["in_flight"] == 1
    wait_for(lambda: stats(client)["streams_disconnected"] == 1)
    counters = stats(client)
    assert counters["in_flight"] == 0
    assert 3 <= counters["tokens_sent_on_disconnected"] < 500
    assert counters["streams_started"] == 1 and counters["streams_completed"] == 0


# --- control endpoints ---------------------------------------------------------------------------


def test_last_requests_are_recorded(client: httpx.Client) -> None:
    body = chat_body("hi", max_tokens=5, max_coefficient=2000, stream=True, stream_options={"include_usage": True})
    stream(client, CHAT, body)
    last = stats(client)["last_requests"][-1]
    assert last == {
        "path": CHAT,
        "model": QWEN,
        "stream": True,
        "max_tokens": 5,
        "max_completion_tokens": None,
        "max_coefficient": 2000,
        "stream_options": {"include_usage": True},
        "stop": None,
        "timeout": None,
        "messages": [{"role": "user", "content": "hi"}],
        "fields": ["max_coefficient", "max_tokens", "messages", "model", "stream", "stream_options"],
    }


def test_config_validation_and_models(client: httpx.Client) -> None:
    assert client.post("/_sim/config", json={"nope": 1}).status_code == 400
    assert client.post("/_sim/config", json={"fault": "bogus"}).status_code == 400
    assert client.post("/_sim/config", json={"ttft_ms": -1}).status_code == 400
    assert client.post("/_sim/config", json={"port": 1}).status_code == 400
    assert "access_hash" not in client.get("/_sim/config").json()
    configure(client, models=["a/b", {"id": "c/d", "reasoning": True, "coefficient": 1200}], workers_per_model=3)
    data = client.get("/v1/models").json()["data"]
    assert [(m["id"], len(m["workers"]), m["workers"][0]["coefficient"]) for m in data] == [
        ("a/b", 3, 1000),
        ("c/d", 3, 1200),
    ]
    assert post(client, CHAT, chat_body("hi")).status_code == 400  # Qwen is no longer served
    reasoning = post(client, CHAT, {"model": "c/d", "messages": [{"role": "user", "content": "[[sim:tokens=4]]"}]})
    assert reasoning.json()["usage"]["reasoning_tokens"] == 1


def test_reset_clears_counters_and_cache(client: httpx.Client) -> None:
    content = "y" * 100
    post(client, CHAT, chat_body(content))
    assert stats(client)["completed"] == 1
    client.post("/_sim/reset")
    counters = stats(client)
    assert counters["completed"] == 0 and counters["cached_prefixes"] == 0 and counters["last_requests"] == []
    assert post(client, CHAT, chat_body(content)).json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


# --- command line --------------------------------------------------------------------------------


def test_command_line_flags() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = options_from_args(parser.parse_args([]))
    assert (defaults.host, defaults.port, defaults.fault) == ("127.0.0.1", 10000, None)
    assert defaults.report_total_cost is True
    assert [m.id for m in defaults.models] == [QWEN, SEED]
    args = parser.parse_args(
        [
            "--port=1234",
            "--tpt-ms=2.5",
            "--fault=cut",
            "--no-total-cost",
            "--coefficient=1500",
            "--workers-per-model=4",
            "--model=a/b",
            "--reasoning-model=c/d",
            "--completion-tokens=5-9",
        ]
    )
    options = options_from_args(args)
    assert (options.port, options.tpt_ms, options.fault, options.report_total_cost) == (1234, 2.5, "cut", False)
    assert (options.coefficient, options.workers_per_model, options.default_completion_tokens) == (1500, 4, (5, 9))
    assert options.models == [ModelSpec("a/b"), ModelSpec("c/d", reasoning=True)]
    with pytest.raises(SystemExit):
        parser.parse_args(["--fault=bogus"])


# --- answers with a shape: n, stop, response_format, tools (cocoon_script.py) ------------------


TOOLS_SYSTEM = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": '
    '{"city": {"type": "string", "minLength": 7}, "days": {"type": "integer", "minimum": 3, "maximum": 9}, '
    '"unit": {"$ref": "#/$defs/Unit"}}, "required": ["city", "days", "unit"], '
    '"$defs": {"Unit": {"enum": ["c", "f"]}}}}}\n</tools>\n\n'
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)


def test_n_choices_stop_and_token_limit(client: httpx.Client) -> None:
    body = post(client, "/v1/chat/completions", chat_body("several [[sim:tokens=40]]", n=3, max_tokens=100)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in body["choices"]}) == 3
    assert body["usage"]["completion_tokens"] > 40  # every choice's tokens are counted
    whole = post(client, "/v1/chat/completions", chat_body("stop me [[sim:tokens=40]]")).json()
    text = whole["choices"][0]["message"]["content"]
    stop = " ".join(text.split()[3:5])
    stopped = post(client, "/v1/chat/completions", chat_body("stop me [[sim:tokens=40]]", stop=["zzz", stop])).json()
    assert stopped["choices"][0]["message"]["content"] == text[: text.index(stop)]
    assert (stopped["choices"][0]["finish_reason"], stopped["choices"][0]["stop_reason"]) == ("stop", stop)
    chunks, done = stream(client, CHAT, chat_body("stop me [[sim:tokens=40]]", stop=["zzz", stop]))
    assert (
        done and "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == text[: text.index(stop)]
    )
    assert ["stop_reason" in c["choices"][0] for c in chunks[:-1]] == [False] * (len(chunks) - 2) + [True]
    assert (chunks[-2]["choices"][0]["finish_reason"], chunks[-2]["choices"][0]["stop_reason"]) == ("stop", stop)
    # vLLM's order: the stop string the text completes first ends it, however early another begins.
    word = text.split()[4]
    early = post(client, CHAT, chat_body("stop me [[sim:tokens=40]]", stop=[" ".join(text.split()[3:6]), word]))
    assert early.json()["choices"][0]["message"]["content"] == text[: text.index(word)]
    assert early.json()["choices"][0]["stop_reason"] == word
    unstopped = post(client, CHAT, chat_body("stop me [[sim:tokens=40]]", stop=["zzz"])).json()["choices"][0]
    assert (unstopped["finish_reason"], unstopped["stop_reason"]) == ("stop", None)
    short = post(client, "/v1/chat/completions", chat_body("stop me [[sim:tokens=40]]", stop=["zzz"], max_tokens=5))
    assert short.json()["choices"][0]["finish_reason"] == "length" and short.json()["choices"][0]["stop_reason"] is None
    assert short.json()["usage"]["completion_tokens"] == 5


def test_response_format_json(client: httpx.Client) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    }
    body = post(
        client,
        "/v1/chat/completions",
        chat_body(
            "json",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": schema, "strict": True},
            },
        ),
    ).json()
    person = json.loads(body["choices"][0]["message"]["content"])
    assert set(person) == {"name", "age", "tags"} and person["age"] >= 18 and isinstance(person["tags"], list)
    events, _ = stream(client, "/v1/chat/completions", chat_body("json", response_format={"type": "json_object"}))
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert isinstance(json.loads(text), dict)


def test_tools_in_the_system_prompt_get_schema_valid_calls(client: httpx.Client) -> None:
    seen = set()
    for index in range(12):
        messages = [{"role": "system", "content": TOOLS_SYSTEM}, {"role": "user", "content": f"weather {index}"}]
        body = post(client, "/v1/chat/completions", {"model": QWEN, "messages": messages, "max_tokens": 500}).json()
        content = body["choices"][0]["message"]["content"]
        calls = content.count("<tool_call>")
        seen.add(calls)
        assert content.count("</tool_call>") == calls
        for block in content.split("<tool_call>")[1:]:
            call = json.loads(block.split("</tool_call>")[0])
            assert call["name"] == "get_weather"
            arguments = call["arguments"]
            assert len(arguments["city"]) >= 7 and 3 <= arguments["days"] <= 9 and arguments["unit"] in ("c", "f")
    assert {0, 1, 2} <= seen  # sometimes none, sometimes several
    forced = [{"role": "system", "content": TOOLS_SYSTEM}, {"role": "user", "content": "x [[sim:calls=0]]"}]
    body = post(client, "/v1/chat/completions", {"model": QWEN, "messages": forced}).json()
    assert "<tool_call>" not in body["choices"][0]["message"]["content"]
    after = [
        *forced,
        {"role": "assistant", "content": "<tool_call>\n{}\n</tool_call>"},
        {"role": "user", "content": "<tool_response>\n4\n</tool_response>"},
    ]
    body = post(client, "/v1/chat/completions", {"model": QWEN, "messages": after}).json()
    assert "<tool_call>" not in body["choices"][0]["message"]["content"]


def test_streamed_tool_calls_split_their_tags(client: httpx.Client) -> None:
    split = 0
    for index in range(12):
        messages = [
            {"role": "system", "content": TOOLS_SYSTEM},
            {"role": "user", "content": f"weather {index} [[sim:calls=1]]"},
        ]
        events, done = stream(client, "/v1/chat/completions", {"model": QWEN, "messages": messages})
        pieces = [e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]]
        assert done and "<tool_call>" in "".join(pieces)
        split += "<tool" in pieces
    assert split  # some streams cut a tag in two


def test_tools_and_tool_history_are_refused(client: httpx.Client) -> None:
    refused = post(client, "/v1/chat/completions", chat_body("x", tools=[]))
    assert refused.status_code == 400 and "tools" in refused.json()["error"]
    tool_role = {
        "model": QWEN,
        "messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "c", "content": "4"}],
    }
    assert post(client, "/v1/chat/completions", tool_role).status_code == 400
    calls = {"model": QWEN, "messages": [{"role": "assistant", "content": "", "tool_calls": []}]}
    assert post(client, "/v1/chat/completions", calls).status_code == 400


@pytest.mark.parametrize("bare", [False, True])
def test_planned_chunks_are_what_orjson_writes(bare: bool) -> None:
    """The planned answer's chunks, written from templates, are byte for byte orjson's encoding
    of each chunk object as vLLM shapes it (one key per delta, the finish alone with stop_reason)."""
    from cocoon_simulator.cocoon_infer import Answer, _planned_events
    from cocoon_simulator.cocoon_script import ChoiceScript
    from cocoon_simulator.cocoon_text import ENGLISH_WORDS

    choices = [
        ChoiceScript(["Think", ' "q" \\ ', "数"], ["<tool_call>", '\n{"a": 1}', "\n</tool_call>"], "stop"),
        ChoiceScript([], ["Hello", "\u2028 end"], "stop", stop_reason="END"),
        ChoiceScript([], [], "length"),
    ]
    answer = Answer(
        'chatcmpl-"x"', 1700000000, True, "Qwen/Qwen3-32B", ENGLISH_WORDS, 0, 1, 0, 9, 3, "stop", 0, 0, choices
    )
    start, end = (b"", b"\n") if bare else (b"data: ", b"\n\n")
    head = {"id": answer.id, "object": "chat.completion.chunk", "created": answer.created, "model": answer.model}
    expected = []
    for index, choice in enumerate(choices):
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas.extend({"reasoning_content": token} for token in choice.reasoning)
        deltas.extend({"content": token} for token in choice.content)
        for position, delta in enumerate(deltas):
            chunk_choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
            if position == len(deltas) - 1:
                chunk_choice["finish_reason"] = choice.finish_reason
                chunk_choice["stop_reason"] = choice.stop_reason
            expected.append(start + orjson.dumps({**head, "choices": [chunk_choice]}) + end)
    assert _planned_events(answer, choices, bare) == expected
