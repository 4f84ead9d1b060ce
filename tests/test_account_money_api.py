"""The user's own money over HTTP (#18), on both databases: deposits (pending, then credited) as
the watcher sees them through the toncenter fake, one request's record by its id, usage as CSV
and by key and model, and the low-balance threshold."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import ServerFactory
from support import Server, Simulator, new_account, start_simulator

from cocoon_simulator.toncenter import inject_deposit_command

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """A simulator of this module's own, so no other test's watcher reads its wallet."""
    sim = start_simulator(tmp_path_factory.mktemp("chain"))
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory, chain: Simulator) -> Server:
    return server_factory(
        upstream_url=chain.url,
        toncenter_url=chain.url,
        deposit_watcher="true",
        deposit_poll_seconds="0.2",
        ton_explorer_tx_url="https://explorer.example/tx/{tx_hash}",
    )


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def get(server: Server, key: str, path: str, **params: object) -> httpx.Response:
    return httpx.get(server.url + path, headers=auth(key), params=params, timeout=10)  # type: ignore[arg-type]


def wait_for(check: object, timeout: float = 20.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()  # type: ignore[operator]
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("timed out")


def code_of(server: Server, key: str) -> str:
    return str(get(server, key, "/v1/deposit").json()["memo"])


def test_a_deposit_shows_pending_then_credited_with_its_explorer_link(server: Server, chain: Simulator) -> None:
    key = new_account(server, "")
    code = code_of(server, key)
    assert get(server, key, "/v1/deposits").json() == {"data": [], "has_more": False, "next_before": None}
    [pending_tx] = inject_deposit_command(chain.url, code, "1.25", finalised=False)

    def listed_pending() -> list[dict[str, object]]:
        return [d for d in get(server, key, "/v1/deposits").json()["data"] if d["status"] == "pending"]

    [pending] = wait_for(listed_pending)  # type: ignore[misc]
    assert pending["amount_nanoton"] == 1_250_000_000 and pending["amount_ton"] == 1.25
    assert pending["credited_at"] is None
    assert get(server, key, "/v1/balance").json()["balance_nanoton"] == 0  # seen, not credited
    httpx.post(chain.url + "/_ton/finalise", timeout=10).raise_for_status()

    def listed_credited() -> list[dict[str, object]]:
        return [d for d in get(server, key, "/v1/deposits").json()["data"] if d["status"] == "credited"]

    [credited] = wait_for(listed_credited)  # type: ignore[misc]
    assert credited["tx_hash"] == pending["tx_hash"] and credited["credited_at"] is not None
    assert credited["explorer_url"] == f"https://explorer.example/tx/{credited['tx_hash']}"
    assert pending_tx  # the fake's own record of it
    assert [d["status"] for d in get(server, key, "/v1/deposits").json()["data"]] == ["credited"]
    assert get(server, key, "/v1/balance").json()["balance_nanoton"] == 1_250_000_000
    account = get(server, key, "/api/account").json()
    assert account["credited_nanoton"] == 1_250_000_000 and account["overdraft_available"] is True


def test_deposits_page_newest_first_and_are_only_the_callers(server: Server, chain: Simulator) -> None:
    key, other = new_account(server, ""), new_account(server, "")
    inject_deposit_command(chain.url, code_of(server, key), "0.1", count=3)
    inject_deposit_command(chain.url, code_of(server, other), "0.2")
    wait_for(lambda: len(get(server, key, "/v1/deposits").json()["data"]) == 3)
    first = get(server, key, "/v1/deposits", limit=2).json()
    assert len(first["data"]) == 2 and first["has_more"] is True
    rest = get(server, key, "/v1/deposits", limit=2, before=first["next_before"]).json()
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    hashes = [d["tx_hash"] for d in first["data"] + rest["data"]]
    assert len(set(hashes)) == 3
    assert all(d["amount_nanoton"] == 100_000_000 for d in first["data"] + rest["data"])
    times = [d["created_at"] for d in first["data"] + rest["data"]]
    assert times == sorted(times, reverse=True)
    assert get(server, "ck_" + "y" * 43, "/v1/deposits").status_code == 401


def test_a_request_is_found_by_the_id_in_its_answer_and_only_by_its_owner(server: Server, database_url: str) -> None:
    key = new_account(server, database_url, TON)
    answer = httpx.post(
        server.url + "/v1/chat/completions",
        headers=auth(key),
        timeout=30,
        json={"model": QWEN, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    record = get(server, key, "/v1/generation", id=body["id"])
    assert record.status_code == 200, record.text
    found = record.json()
    assert found["id"] == body["id"] and found["model"] == QWEN and found["status"] == "ok"
    assert found["cost_nanoton"] == body["usage"]["cost_nanoton"] > 0
    assert found["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert found["completion_tokens"] == body["usage"]["completion_tokens"]
    assert found["duration_ms"] >= 0 and found["http_status"] == 200
    assert found["capped_nanoton"] == 0  # charged whole (tests/test_settlement_caps.py: a capped one)
    stranger = new_account(server, database_url)
    refused = get(server, stranger, "/v1/generation", id=body["id"])
    assert refused.status_code == 404 and refused.json()["error"]["type"] == "invalid_request_error"
    assert get(server, key, "/v1/generation", id="chatcmpl-nope").status_code == 404
    assert get(server, key, "/v1/generation").status_code == 422


def test_usage_narrows_by_key_and_model_and_exports_csv(server: Server, database_url: str) -> None:
    key = new_account(server, database_url, TON)
    second = httpx.post(server.url + "/v1/keys", headers=auth(key), json={"name": "second"}, timeout=10).json()
    second_key, second_id = str(second["api_key"]), int(second["key"]["id"])
    for caller, model in ((key, QWEN), (second_key, QWEN), (second_key, "ByteDance-Seed/Seed-X-PPO-7B")):
        response = httpx.post(
            server.url + "/v1/chat/completions",
            headers=auth(caller),
            timeout=30,
            json={"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
        )
        assert response.status_code == 200, response.text
    everything = get(server, key, "/v1/usage").json()
    assert len(everything["data"]) == 3
    by_key = get(server, key, "/v1/usage", key_id=second_id).json()
    assert len(by_key["data"]) == 2 and {r["key_id"] for r in by_key["data"]} == {second_id}
    assert sum(t["requests"] for t in by_key["totals"]) == 2
    by_both = get(server, key, "/v1/usage", key_id=second_id, model=QWEN).json()
    assert [r["model"] for r in by_both["data"]] == [QWEN]
    assert [t["model"] for t in by_both["totals"]] == [QWEN]

    exported = get(server, key, "/v1/usage", format="csv", limit=2)
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.headers["x-next-before"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["request_id"] for r in rows] == [r["request_id"] for r in everything["data"][:2]]
    assert int(rows[0]["cost_nanoton"]) == everything["data"][0]["cost_nanoton"]
    # Charged whole, so nothing uncharged (tests/test_settlement_caps.py: a capped one).
    assert [r["capped_nanoton"] for r in rows] == ["0", "0"]
    assert [r["capped_nanoton"] for r in everything["data"]] == [0, 0, 0]
    assert get(server, key, "/v1/usage", limit=500).status_code == 400
    assert get(server, key, "/v1/usage", format="xml").status_code == 422


def test_low_balance_threshold(server: Server, database_url: str) -> None:
    key = new_account(server, database_url, TON // 2)
    assert get(server, key, "/v1/balance").json()["low_balance"] is False
    set_low = httpx.patch(
        server.url + "/api/account", headers=auth(key), json={"low_balance_threshold_ton": "1"}, timeout=10
    )
    assert set_low.status_code == 200, set_low.text
    assert set_low.json()["low_balance"] is True and set_low.json()["low_balance_threshold_nanoton"] == TON
    balance = get(server, key, "/v1/balance").json()
    assert balance["low_balance"] is True and balance["balance_nanoton"] == TON // 2
    assert get(server, key, "/api/account").json()["overdraft_available"] is False  # 0.5 TON of credits
    lowered = httpx.patch(
        server.url + "/api/account", headers=auth(key), json={"low_balance_threshold_ton": "0.1"}, timeout=10
    ).json()
    assert lowered["low_balance"] is False
    cleared = httpx.patch(
        server.url + "/api/account", headers=auth(key), json={"low_balance_threshold_ton": None}, timeout=10
    ).json()
    assert (
        cleared["low_balance_threshold_ton"] is None and get(server, key, "/v1/balance").json()["low_balance"] is False
    )
    bad = httpx.patch(
        server.url + "/api/account", headers=auth(key), json={"low_balance_threshold_ton": "-1"}, timeout=10
    )
    assert bad.status_code == 422
