"""Ruling 8 of #23: a request waits for an upstream connection only so long, then gets 503
`upstream_busy` with Retry-After in its dialect, is not billed, and /metrics shows the pool.

A real platform (one upstream connection, 0.5 s of waiting) before a simulator answering at
50 ms a token: one slow stream holds the only connection while others ask."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest
from conftest import ServerFactory
from support import Server, Simulator, db_rows, new_account, start_simulator

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000


@pytest.fixture(scope="module")
def slow_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    sim = start_simulator(tmp_path_factory.mktemp("slow"), "--tpt-ms", "50")
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def narrow(server_factory: ServerFactory, slow_simulator: Simulator) -> Server:
    """A platform with one upstream connection and half a second's wait for it."""
    return server_factory(
        upstream_url=slow_simulator.url, upstream_max_connections="1", upstream_pool_wait_seconds="0.5"
    )


def metric(server: Server, name: str) -> float:
    for line in httpx.get(server.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def balance(server: Server, key: str) -> int:
    answer = httpx.get(server.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return int(answer.json()["balance_nanoton"])


def usage(database_url: str, request_id: str) -> tuple[object, ...]:
    rows = db_rows(
        database_url,
        "SELECT status, http_status, cost_nanoton FROM usage_records WHERE request_id = :r",
        {"r": request_id},
    )
    assert len(rows) == 1, rows
    return rows[0]


class HeldStream:
    """A slow stream read in a thread: it holds the platform's one upstream connection until closed."""

    def __init__(self, server: Server, key: str) -> None:
        self.started = threading.Event()
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(server, key), daemon=True)
        self._thread.start()
        assert self.started.wait(30), "the slow stream did not start"

    def _run(self, server: Server, key: str) -> None:
        body = {
            "model": QWEN,
            "max_tokens": 1000,
            "stream": True,
            "messages": [{"role": "user", "content": "[[sim:tokens=1000]] a long story"}],
        }
        with httpx.stream(
            "POST",
            server.url + "/v1/chat/completions",
            json=body,
            timeout=60,
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            for _ in response.iter_lines():
                self.started.set()
                if self.stop.is_set():
                    return  # leaving mid-stream frees the connection

    def close(self) -> None:
        self.stop.set()
        self._thread.join(30)


def test_a_request_finding_the_pool_busy_gets_503_upstream_busy_unbilled(narrow: Server, database_url: str) -> None:
    holder = new_account(narrow, database_url, TON)
    key = new_account(narrow, database_url, TON)
    waited_before = metric(narrow, "cocoon_upstream_pool_wait_seconds_count")
    held = HeldStream(narrow, holder)
    try:
        assert metric(narrow, "cocoon_upstream_connections_in_use") == 1

        # The OpenAI dialect, through the SDK users run.
        chat = openai.OpenAI(base_url=narrow.url + "/v1", api_key=key, max_retries=0, timeout=30)
        for stream in (False, True):
            with pytest.raises(openai.APIStatusError) as refused:
                chat.chat.completions.create(
                    model=QWEN, messages=[{"role": "user", "content": "hi"}], max_tokens=50, stream=stream
                )
            assert refused.value.status_code == 503
            assert refused.value.code == "upstream_busy"
            assert int(refused.value.response.headers["retry-after"]) >= 1
            assert usage(database_url, refused.value.response.headers["x-request-id"]) == ("upstream_error", 503, 0)

        # The Anthropic dialect: 503 is its overloaded_error.
        messages = anthropic.Anthropic(base_url=narrow.url, api_key=key, max_retries=0, timeout=30)
        with pytest.raises(anthropic.APIStatusError) as overloaded:
            messages.messages.create(model=QWEN, max_tokens=50, messages=[{"role": "user", "content": "hi"}])
        assert overloaded.value.status_code == 503
        assert overloaded.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert overloaded.value.body["error"]["code"] == "upstream_busy"  # type: ignore[index]
        assert "retry-after" in overloaded.value.response.headers

        # A caller waiting shows in /metrics while it waits.
        seen_waiting = False
        waiting = threading.Thread(
            target=lambda: httpx.post(
                narrow.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
                json={"model": QWEN, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
            )
        )
        waiting.start()
        while waiting.is_alive() and not seen_waiting:
            seen_waiting = metric(narrow, "cocoon_upstream_callers_waiting") == 1
        waiting.join(30)
        assert seen_waiting
        assert metric(narrow, "cocoon_upstream_pool_wait_seconds_count") >= waited_before + 4
        assert balance(narrow, key) == TON  # none of the refused requests cost anything
    finally:
        held.close()
    # The connection came free: the next request is served (and billed).
    answer = httpx.post(
        narrow.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
        json={"model": QWEN, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200, answer.text
    assert balance(narrow, key) < TON
    assert metric(narrow, "cocoon_upstream_callers_waiting") == 0
