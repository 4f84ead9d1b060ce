"""Disconnects, cut streams, hangs and every simulator fault: the right error and the right charge."""

from __future__ import annotations

import time

import httpx
import pytest
from support import Server, Simulator, db_rows, ledger_consistent, new_account

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000


def post(server: Server, key: str, content: str, **fields: object) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={"model": QWEN, "max_tokens": 200, "messages": [{"role": "user", "content": content}], **fields},
    )


def balance(server: Server, key: str) -> int:
    return int(
        httpx.get(server.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}).json()["balance_nanoton"]
    )


def usage_row(database_url: str, request_id: str) -> tuple[object, ...]:
    rows = db_rows(
        database_url,
        "SELECT status, http_status, prompt_tokens, completion_tokens, cost_nanoton, estimated "
        "FROM usage_records WHERE request_id = :r",
        {"r": request_id},
    )
    assert len(rows) == 1, rows
    return rows[0]


def holds(database_url: str) -> int:
    return int(db_rows(database_url, "SELECT COUNT(*) FROM holds")[0][0])  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def slow_simulator(tmp_path_factory: pytest.TempPathFactory) -> Simulator:
    """A simulator that takes 50 ms per token, so a client can leave mid-stream."""
    from support import start_simulator

    sim = start_simulator(tmp_path_factory.mktemp("slow"), "--tpt-ms", "50")
    yield sim  # type: ignore[misc]
    sim.stop()


@pytest.mark.parametrize(
    ("fault", "status", "words"),
    [
        ("no_proxy", 503, "unavailable"),
        ("no_workers", 502, "No COCOON workers"),
        ("timeout", 504, "timed out"),
        ("wallet_low", 503, "cannot pay the COCOON network"),
        ("html_error", 502, "Bad response"),
    ],
)
def test_upstream_faults_before_first_byte_cost_nothing(
    platform: Server, database_url: str, fault: str, status: int, words: str
) -> None:
    key = new_account(platform, database_url, TON)
    for stream in (False, True):
        response = post(platform, key, f"[[sim:fault={fault}]] hi", stream=stream)
        assert response.status_code == status, (fault, stream, response.text)
        error = response.json()["error"]
        assert words in error["message"] and error["type"] == "server_error"
        assert "<html" not in error["message"].lower() and "error_code" not in error["message"]
        assert usage_row(database_url, response.headers["x-request-id"])[:2] == ("upstream_error", status)
    assert balance(platform, key) == TON
    assert holds(database_url) == 0


def test_coefficient_refusal_is_a_clear_503(platform: Server, database_url: str, simulator: Simulator) -> None:
    key = new_account(platform, database_url, TON)
    simulator.configure(coefficient=1500)
    try:
        response = post(platform, key, "pricey")
    finally:
        simulator.configure(coefficient=1000)
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "max_coefficient 1000" in message and "coefficient 1500" in message
    assert balance(platform, key) == TON


def test_bare_json_stream_becomes_standard_sse(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    with httpx.stream(
        "POST",
        platform.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={
            "model": QWEN,
            "stream": True,
            "max_tokens": 50,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "[[sim:fault=bare_json]] [[sim:tokens=6]] x"}],
        },
    ) as r:
        body = r.read().decode()
        request_id = r.headers["x-request-id"]
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]" and '"cost_nanoton"' in events[-2]
    assert sum('"delta"' in e for e in events) == 6
    status, _, _, completion, cost, estimated = usage_row(database_url, request_id)
    assert (status, completion, bool(estimated)) == ("ok", 6, False)
    assert balance(platform, key) == TON - int(cost)  # type: ignore[call-overload]


def test_stream_cut_midway_sends_error_event_and_bills_what_was_delivered(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    with httpx.stream(
        "POST",
        platform.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={
            "model": QWEN,
            "stream": True,
            "max_tokens": 200,
            "messages": [{"role": "user", "content": "[[sim:fault=cut]] [[sim:tokens=40]] x"}],
        },
    ) as r:
        body = r.read().decode()
        request_id = r.headers["x-request-id"]
    events = [e[6:] for e in body.split("\n\n") if e.startswith("data: ")]
    delivered = sum('"delta"' in e for e in events)
    assert 2 <= delivered < 40
    assert '"error"' in events[-1] and "[DONE]" not in body
    status, _, prompt, completion, cost, estimated = usage_row(database_url, request_id)
    assert status == "upstream_cut" and bool(estimated)
    assert completion == delivered and int(prompt) > 0  # type: ignore[call-overload]
    assert 0 < int(cost) < 200 * 240  # type: ignore[call-overload]
    assert balance(platform, key) == TON - int(cost)  # type: ignore[call-overload]
    assert holds(database_url) == 0


def test_client_disconnect_cancels_upstream_and_bills_delivered(
    server_factory: object, slow_simulator: Simulator, database_url: str
) -> None:
    server: Server = server_factory(upstream_url=slow_simulator.url)  # type: ignore[operator]
    key = new_account(server, database_url, TON)
    before = int(slow_simulator.stats()["streams_disconnected"])  # type: ignore[call-overload]
    received = 0
    with httpx.stream(
        "POST",
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={
            "model": QWEN,
            "stream": True,
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "[[sim:tokens=1000]] long"}],
        },
    ) as r:
        request_id = r.headers["x-request-id"]
        for line in r.iter_lines():
            if line.startswith("data: {"):
                received += 1
            if received == 5:
                break  # leave after five chunks
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and int(slow_simulator.stats()["streams_disconnected"]) == before:  # type: ignore[call-overload]
        time.sleep(0.05)
    assert int(slow_simulator.stats()["streams_disconnected"]) == before + 1  # type: ignore[call-overload]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not db_rows(
        database_url, "SELECT 1 FROM usage_records WHERE request_id = :r", {"r": request_id}
    ):
        time.sleep(0.05)
    status, _, _, completion, cost, estimated = usage_row(database_url, request_id)
    assert status == "client_disconnected" and bool(estimated)
    assert 5 <= int(completion) < 30  # type: ignore[call-overload]
    assert 0 < int(cost) < 1000 * 240  # type: ignore[call-overload]  # never free, never the full max_tokens
    assert balance(server, key) == TON - int(cost)  # type: ignore[call-overload]
    assert holds(database_url) == 0 and not ledger_consistent(database_url)


def test_upstream_hang_times_out_with_504_and_no_charge(
    server_factory: object, simulator: Simulator, database_url: str
) -> None:
    server: Server = server_factory(upstream_url=simulator.url, upstream_read_timeout="1")  # type: ignore[operator]
    key = new_account(server, database_url, TON)
    for stream in (False, True):
        started = time.monotonic()
        response = post(server, key, "[[sim:fault=hang]] wait", stream=stream)
        assert response.status_code == 504, response.text
        assert time.monotonic() - started < 5
    assert balance(server, key) == TON
    assert holds(database_url) == 0


def test_unreachable_upstream_is_503_and_releases(server_factory: object, database_url: str) -> None:
    from support import free_port

    server: Server = server_factory(upstream_url=f"http://127.0.0.1:{free_port()}")  # type: ignore[operator]
    key = new_account(server, database_url, TON)
    response = post(server, key, "anyone?")
    assert response.status_code == 503 and "unavailable" in response.json()["error"]["message"]
    assert balance(server, key) == TON and holds(database_url) == 0


def test_non_streamed_answer_has_the_networks_own_fields(
    platform: Server, database_url: str, simulator: Simulator
) -> None:
    """Assembled from the network's stream, the answer is the one the network sends whole."""
    key = new_account(platform, database_url, TON)
    body = {"model": QWEN, "max_tokens": 200, "messages": [{"role": "user", "content": "[[sim:tokens=9]] same"}]}
    ours = httpx.post(
        platform.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body, timeout=30
    ).json()
    theirs = httpx.post(
        simulator.url + "/v1/chat/completions", json={**body, "max_coefficient": 1000}, timeout=30
    ).json()
    assert simulator.stats()["last_requests"][-2]["stream"] is True  # type: ignore[index]
    assert list(ours) == list(theirs) and ours["object"] == "chat.completion"
    assert list(ours["choices"][0]) == list(theirs["choices"][0])
    assert ours["choices"][0]["message"] == theirs["choices"][0]["message"]
    assert ours["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"]
    usage = dict(ours["usage"])
    assert usage.pop("cost_nanoton") > 0 and usage.pop("cost_ton") > 0
    assert usage == theirs["usage"]  # the network's cost fields included
    text = httpx.post(
        platform.url + "/v1/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={"model": QWEN, "max_tokens": 20, "prompt": "[[sim:tokens=5]] t"},
    ).json()
    assert text["object"] == "text_completion" and len(text["choices"][0]["text"]) > 0
    assert list(text["choices"][0]) == ["index", "text", "logprobs", "finish_reason", "stop_reason"]


def test_non_streamed_answer_slower_than_the_idle_timeout_completes(
    server_factory: object, slow_simulator: Simulator, database_url: str
) -> None:
    server: Server = server_factory(upstream_url=slow_simulator.url, upstream_read_timeout="1")  # type: ignore[operator]
    key = new_account(server, database_url, TON)
    response = post(server, key, "[[sim:tokens=40]] slow but alive")  # 40 x 50 ms: 2 s in all
    assert response.status_code == 200, response.text
    status, _, _, completion, cost, estimated = usage_row(database_url, response.headers["x-request-id"])
    assert (status, completion, bool(estimated)) == ("ok", 40, False)
    assert balance(server, key) == TON - int(cost)  # type: ignore[call-overload]


def test_non_streamed_answer_past_the_networks_timeout_is_billed(
    server_factory: object, slow_simulator: Simulator, database_url: str
) -> None:
    """The network gets 95% of the request's timeout and ends the answer; what it generated is billed."""
    server: Server = server_factory(
        upstream_url=slow_simulator.url,
        upstream_request_timeout="1",  # type: ignore[operator]
        upstream_deadline_margin="1",
    )
    key = new_account(server, database_url, TON)
    response = post(server, key, "[[sim:tokens=100]] too slow")  # 5 s of tokens against 0.95 s
    assert response.status_code == 502 and "billed" in response.json()["error"]["message"]
    status, _, prompt, completion, cost, estimated = usage_row(database_url, response.headers["x-request-id"])
    assert status == "upstream_cut" and bool(estimated) and int(prompt) > 0  # type: ignore[call-overload]
    assert 5 <= int(completion) < 100 and int(cost) > 0  # type: ignore[call-overload]
    assert balance(server, key) == TON - int(cost) and holds(database_url) == 0  # type: ignore[call-overload]


def test_non_streamed_answer_cut_by_the_network_is_billed(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, TON)
    response = post(platform, key, "[[sim:fault=cut]] [[sim:tokens=40]] x")
    assert response.status_code == 502, response.text
    status, _, _, completion, cost, estimated = usage_row(database_url, response.headers["x-request-id"])
    assert status == "upstream_cut" and bool(estimated)
    assert 2 <= int(completion) < 40 and int(cost) > 0  # type: ignore[call-overload]
    assert balance(platform, key) == TON - int(cost)  # type: ignore[call-overload]


def test_client_leaving_a_non_streamed_request_is_billed_for_what_was_generated(
    server_factory: object, slow_simulator: Simulator, database_url: str
) -> None:
    server: Server = server_factory(upstream_url=slow_simulator.url)  # type: ignore[operator]
    key = new_account(server, database_url, TON)
    before = int(slow_simulator.stats()["streams_disconnected"])  # type: ignore[call-overload]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            timeout=1,
            json={
                "model": QWEN,
                "max_tokens": 1000,
                "messages": [{"role": "user", "content": "[[sim:tokens=1000]] long"}],
            },
        )
    deadline = time.monotonic() + 10
    records: list[dict[str, object]] = []
    while time.monotonic() < deadline and not records:
        time.sleep(0.1)
        records = httpx.get(server.url + "/v1/usage", headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert [r["status"] for r in records] == ["client_disconnected"]
    completion, cost = int(records[0]["completion_tokens"]), int(records[0]["cost_nanoton"])  # type: ignore[call-overload]
    assert 5 <= completion < 100 and cost > 0
    assert int(slow_simulator.stats()["streams_disconnected"]) == before + 1  # type: ignore[call-overload]
    assert balance(server, key) == TON - int(cost)  # type: ignore[call-overload]
