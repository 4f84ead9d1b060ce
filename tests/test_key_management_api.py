"""Per-key controls over HTTP (#18; rulings 3 and 5 of #23), on both databases: keys with a credit
limit, a model allow-list and an expiry; what each refusal says; who may manage keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import openai
import pytest
from conftest import ServerFactory
from support import Server, Simulator, db_rows, ledger_consistent, new_account, run_cli, start_simulator

QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory, simulator: Simulator) -> Server:
    return server_factory(upstream_url=simulator.url, rate_limit_signup_per_minute="0")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_key(server: Server, owner: str, **settings: object) -> dict[str, object]:
    response = httpx.post(server.url + "/v1/keys", headers=auth(owner), json=settings, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def chat(server: Server, key: str, model: str = QWEN, max_tokens: int = 20, content: str = "hi") -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers=auth(key),
        timeout=30,
        json={"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens},
    )


def keys_of(server: Server, key: str) -> dict[int, dict[str, object]]:
    response = httpx.get(server.url + "/v1/keys", headers=auth(key), timeout=10)
    assert response.status_code == 200, response.text
    return {int(k["id"]): k for k in response.json()["data"]}


def test_a_key_is_made_with_settings_and_lists_them(server: Server, database_url: str) -> None:
    owner = new_account(server, database_url, TON)
    expires = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    made = make_key(
        server,
        owner,
        name="ci",
        credit_limit_ton="0.25",
        limit_reset="daily",
        models=[QWEN],
        expires_at=expires.isoformat(),
    )
    assert str(made["api_key"]).startswith("ck_") and {"deposit_code", "balance_ton", "created_at"} <= made.keys()
    info = made["key"]
    assert isinstance(info, dict)
    assert info["credit_limit_ton"] == 0.25 and info["credit_limit_nanoton"] == 250_000_000
    assert info["limit_reset"] == "daily" and info["models"] == [QWEN] and info["restricted"] is True
    assert datetime.fromisoformat(str(info["expires_at"])) == expires
    assert info["spent_nanoton"] == 0 and info["resets_at"] is not None
    listed = keys_of(server, owner)
    assert listed[int(info["id"])]["credit_limit_nanoton"] == 250_000_000
    own = [k for k in listed.values() if not k["restricted"]]
    assert len(own) == 1 and own[0]["credit_limit_ton"] is None and own[0]["models"] is None


def test_spending_shows_against_the_limit(server: Server, database_url: str) -> None:
    owner = new_account(server, database_url, TON)
    capped = make_key(server, owner, credit_limit_ton="0.5")
    key_id, key = int(capped["key"]["id"]), str(capped["api_key"])  # type: ignore[index]
    answer = chat(server, key)
    assert answer.status_code == 200, answer.text
    cost = int(answer.json()["usage"]["cost_nanoton"])
    assert cost > 0
    assert keys_of(server, owner)[key_id]["spent_nanoton"] == cost
    assert chat(server, owner).status_code == 200  # the unlimited key's spending is read from its usage
    listed = keys_of(server, owner)
    assert next(k["spent_nanoton"] for k in listed.values() if k["id"] != key_id) > 0  # type: ignore[operator]


def test_a_spent_key_gets_402_key_limit_reached_with_what_to_change(server: Server, database_url: str) -> None:
    owner = new_account(server, database_url, TON)
    capped = make_key(server, owner, credit_limit_ton="0.001")
    key, key_id = str(capped["api_key"]), capped["key"]["id"]  # type: ignore[index]
    refused = chat(server, key, max_tokens=100_000)
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    assert error["code"] == "key_limit_reached" and error["type"] == "insufficient_balance"
    assert "credit_limit_ton" in error["message"] and f"/v1/keys/{key_id}" in error["message"]
    fits = int(error["message"].split("the largest that fits is ")[1].split(")")[0])
    assert chat(server, key, max_tokens=fits).status_code == 200
    # The account itself is fine: another key goes on.
    assert chat(server, owner, max_tokens=100_000).status_code == 200


def test_a_model_outside_the_allow_list_gets_403_model_not_allowed(server: Server, database_url: str) -> None:
    owner = new_account(server, database_url, TON)
    listed = make_key(server, owner, models=["ByteDance-Seed/Seed-X-PPO-7B"])
    refused = chat(server, str(listed["api_key"]))
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "model_not_allowed" and error["param"] == "model"
    assert "ByteDance-Seed/Seed-X-PPO-7B" in error["message"] and "models" in error["message"]
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(
            base_url=server.url + "/v1", api_key=str(listed["api_key"]), max_retries=0
        ).chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "hi"}])


def test_an_expired_key_gets_401_key_expired_everywhere(server: Server, database_url: str) -> None:
    owner = new_account(server, database_url, TON)
    made = make_key(server, owner, expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    key = str(made["api_key"])
    assert chat(server, key).status_code == 200
    db_rows(database_url, "UPDATE api_keys SET expires_at = 1 WHERE id = :id", {"id": made["key"]["id"]})  # type: ignore[index]
    for response in (
        chat(server, key),
        httpx.get(server.url + "/v1/balance", headers=auth(key), timeout=10),
        httpx.post(server.url + "/api/login", json={"api_key": key}, timeout=10),
    ):
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert error["code"] == "key_expired" and error["type"] == "invalid_auth"
        assert "expires_at" in error["message"]
    counted = httpx.post(  # Anthropic's count_tokens, in its own error shape
        server.url + "/v1/messages/count_tokens",
        headers={"x-api-key": key},
        json={"model": QWEN, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )
    assert counted.status_code == 401, counted.text
    assert (
        counted.json()["error"]["type"] == "authentication_error" and counted.json()["error"]["code"] == "key_expired"
    )
    # An unknown key keeps the seed's answer exactly (ruling 3).
    unknown = httpx.get(server.url + "/v1/balance", headers=auth("ck_" + "x" * 43), timeout=10)
    assert unknown.json() == {
        "error": {"message": "Invalid API key", "type": "invalid_auth", "param": None, "code": "invalid_api_key"}
    }


def test_restricted_keys_cannot_manage_keys(server: Server, database_url: str) -> None:
    owner = new_account(server, database_url, TON)
    for restriction in (
        {"credit_limit_ton": "1"},
        {"models": [QWEN]},
        {"expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
    ):
        made = make_key(server, owner, **restriction)
        key, key_id = str(made["api_key"]), made["key"]["id"]  # type: ignore[index]
        attempts = [
            httpx.post(server.url + "/v1/keys", headers=auth(key), json={}, timeout=10),
            httpx.patch(
                server.url + f"/v1/keys/{key_id}", headers=auth(key), json={"credit_limit_ton": None}, timeout=10
            ),
            httpx.delete(server.url + f"/v1/keys/{key_id}", headers=auth(key), timeout=10),
        ]
        for response in attempts:
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert error["code"] == "key_management_not_allowed" and "unrestricted key" in error["message"]
        assert keys_of(server, key)[int(key_id)]["restricted"] is True  # reading is allowed
    plain = make_key(server, owner, name="plain")
    assert make_key(server, str(plain["api_key"]))["key"]["restricted"] is False  # type: ignore[index]


def test_restricted_keys_cannot_change_the_accounts_settings(server: Server, database_url: str) -> None:
    # Ruling 5's reasoning: a key handed out with less than the account's trust manages nothing of it.
    owner = new_account(server, database_url, TON)
    for restriction in (
        {"credit_limit_ton": "1"},
        {"models": [QWEN]},
        {"expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
    ):
        key = str(make_key(server, owner, **restriction)["api_key"])
        refused = httpx.patch(
            server.url + "/api/account", headers=auth(key), json={"low_balance_threshold_ton": "5"}, timeout=10
        )
        assert refused.status_code == 403, refused.text
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("permission_error", "account_management_not_allowed")
        assert "change the account's settings" in error["message"] and "unrestricted key" in error["message"]
        account = httpx.get(server.url + "/api/account", headers=auth(key), timeout=10)  # reading is allowed
        assert account.status_code == 200 and account.json()["low_balance_threshold_nanoton"] is None
    changed = httpx.patch(
        server.url + "/api/account", headers=auth(owner), json={"low_balance_threshold_ton": "5"}, timeout=10
    )
    assert changed.status_code == 200 and changed.json()["low_balance_threshold_nanoton"] == 5 * TON


def test_patch_changes_only_what_is_sent_and_null_lifts_a_restriction(server: Server, database_url: str) -> None:
    owner = new_account(server, database_url, TON)
    made = make_key(server, owner, name="a", credit_limit_ton="0.001", models=[QWEN])
    key, key_id = str(made["api_key"]), made["key"]["id"]  # type: ignore[index]
    assert chat(server, key, max_tokens=100_000).status_code == 402
    changed = httpx.patch(
        server.url + f"/v1/keys/{key_id}",
        headers=auth(owner),
        timeout=10,
        json={"credit_limit_ton": "0.9", "limit_reset": "monthly"},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "a" and body["models"] == [QWEN] and body["credit_limit_nanoton"] == 900_000_000
    assert body["limit_reset"] == "monthly" and body["resets_at"] is not None
    assert chat(server, key, max_tokens=100_000).status_code == 200
    lifted = httpx.patch(
        server.url + f"/v1/keys/{key_id}",
        headers=auth(owner),
        timeout=10,
        json={"credit_limit_ton": None, "models": None, "name": None},
    ).json()
    assert lifted["restricted"] is False and lifted["name"] is None and lifted["models"] is None
    other = new_account(server, database_url)
    assert (
        httpx.patch(server.url + f"/v1/keys/{key_id}", headers=auth(other), json={"name": "x"}, timeout=10).status_code
        == 404
    )
    assert (
        httpx.delete(server.url + "/v1/keys/99999999999999999999", headers=auth(owner), timeout=10).status_code == 422
    )


@pytest.mark.parametrize(
    "body",
    [
        {"credit_limit_ton": "-1"},
        {"credit_limit_ton": "0.0000000001"},
        {"limit_reset": "hourly"},
        {"models": []},
        {"models": ["a b"]},
        {"expires_at": "2001-01-01T00:00:00Z"},
        {"expires_at": "soon"},
    ],
)
def test_bad_settings_are_refused_with_a_reason(server: Server, database_url: str, body: dict[str, object]) -> None:
    owner = new_account(server, database_url)
    response = httpx.post(server.url + "/v1/keys", headers=auth(owner), json=body, timeout=10)
    assert response.status_code in (400, 422), response.text
    assert "expires_at" in response.text or "detail" in response.json()


def test_thirty_concurrent_requests_on_a_nearly_spent_key_stay_within_its_limit(
    server: Server, database_url: str
) -> None:
    owner = new_account(server, database_url, TON)
    made = make_key(server, owner, credit_limit_ton="0.02")
    key, key_id = str(made["api_key"]), int(made["key"]["id"])  # type: ignore[index]
    db_rows(database_url, "UPDATE api_keys SET limit_spent_nanoton = 15000000 WHERE id = :id", {"id": key_id})
    body = {
        "model": QWEN,
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": "[[sim:tokens=2000]] [[sim:cost=0]] spend"}],
    }

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.url, headers=auth(key), timeout=60, limits=httpx.Limits(max_connections=30)
        ) as aclient:
            return await asyncio.gather(*(aclient.post("/v1/chat/completions", json=body) for _ in range(30)))

    responses = asyncio.run(run())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 402} and 402 in statuses and 200 in statuses, statuses
    assert all(r.json()["error"]["code"] == "key_limit_reached" for r in responses if r.status_code == 402)
    spent = keys_of(server, owner)[key_id]
    assert spent["held_nanoton"] == 0
    assert 15_000_000 < int(spent["spent_nanoton"]) <= 20_000_000  # type: ignore[call-overload]
    assert not ledger_consistent(database_url)


@pytest.fixture(scope="module")
def slow_server(server_factory: ServerFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A platform whose network answers at 20 tokens a second, for requests that stay in flight."""
    slow = start_simulator(tmp_path_factory.mktemp("slow-keys"), "--tpt-ms", "50")
    yield server_factory(upstream_url=slow.url)
    slow.stop()


def test_a_limit_set_while_streams_are_in_flight_counts_them(slow_server: Server, database_url: str) -> None:
    """Two slow streams on an unlimited key; meanwhile a limit is set below what they hold, above
    one of them: they are held against it at once (a third request is refused), their charges
    count when they end, and the key's spending is then what its usage says."""
    server = slow_server
    owner = new_account(server, database_url, TON)
    made = make_key(server, owner, name="worker")
    key, key_id = str(made["api_key"]), int(made["key"]["id"])  # type: ignore[index]
    body = {
        "model": QWEN,
        "max_tokens": 2000,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "[[sim:tokens=100]] go on"}],
    }

    async def run() -> tuple[list[int], dict[str, object], int]:
        started = [asyncio.Event(), asyncio.Event()]
        async with httpx.AsyncClient(base_url=server.url, headers=auth(key), timeout=60) as aclient:

            async def stream(started: asyncio.Event) -> int:
                async with aclient.stream("POST", "/v1/chat/completions", json=body) as answer:
                    assert answer.status_code == 200
                    chunks = []
                    async for line in answer.aiter_lines():
                        if line.startswith("data: {"):
                            started.set()
                            chunks.append(json.loads(line[6:]))
                return int(chunks[-1]["usage"]["cost_nanoton"])

            streams = [asyncio.create_task(stream(event)) for event in started]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in started)), 30)
            (held,), *_ = await asyncio.to_thread(
                db_rows,
                database_url,
                "SELECT amount_nanoton FROM holds WHERE account_id = (SELECT account_id FROM api_keys WHERE id = :k)",
                {"k": key_id},
            )
            limit = int(held) * 3 // 2  # type: ignore[call-overload]  # one stream's hold fits, two don't
            changed = await asyncio.to_thread(
                httpx.patch,
                server.url + f"/v1/keys/{key_id}",
                headers=auth(owner),
                json={"credit_limit_ton": str(Decimal(limit) / TON)},
                timeout=10,
            )
            assert changed.status_code == 200, changed.text
            in_flight = (await asyncio.to_thread(keys_of, server, owner))[key_id]
            refused = await asyncio.to_thread(chat, server, key, QWEN, 2000)
            assert refused.status_code == 402, refused.text
            assert refused.json()["error"]["code"] == "key_limit_reached"
            return await asyncio.gather(*streams), in_flight, 2 * int(held)  # type: ignore[call-overload]

    costs, in_flight, holds = asyncio.run(run())
    assert (in_flight["held_nanoton"], in_flight["spent_nanoton"]) == (holds, 0)
    after = keys_of(server, owner)[key_id]
    assert (after["held_nanoton"], after["spent_nanoton"]) == (0, sum(costs))
    charged = db_rows(database_url, "SELECT SUM(cost_nanoton) FROM usage_records WHERE key_id = :k", {"k": key_id})
    assert charged == [(sum(costs),)]
    assert chat(server, key, max_tokens=2000).status_code == 200  # one request's hold fits again
    assert not ledger_consistent(database_url)


def test_openapi_lists_the_new_codes_beside_the_seeds(server: Server) -> None:
    document = httpx.get(server.url + "/openapi.json", timeout=10).json()
    error = document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    codes = error["code"]["enum"]
    assert codes[:4] == ["invalid_api_key", "insufficient_balance", "forbidden", "internal_error"]
    for code in (
        "key_limit_reached",
        "model_not_allowed",
        "key_expired",
        "key_management_not_allowed",
        "account_management_not_allowed",
    ):
        assert code in codes
    assert "permission_error" in error["type"]["enum"]
    assert "patch" in document["paths"]["/v1/keys/{key_id}"]
    refusals = document["paths"]["/api/account"]["patch"]["responses"]["403"]["content"]["application/json"]
    assert list(refusals["examples"]) == ["account_management_not_allowed"]


def test_operators_list_and_change_any_accounts_keys_without_seeing_them(server: Server, database_url: str) -> None:
    owner = new_account(server, database_url, TON)
    made = make_key(server, owner, name="worker", credit_limit_ton="2")
    key, key_id = str(made["api_key"]), int(made["key"]["id"])  # type: ignore[index]
    code = str(made["deposit_code"])
    listed = run_cli(["admin", "keys", "--deposit-code", code], database_url)
    assert listed.returncode == 0, listed.stderr
    assert f"{key_id} " in listed.stdout and "worker" in listed.stdout and "2" in listed.stdout
    assert key not in listed.stdout and owner not in listed.stdout and key[:9] in listed.stdout

    changed = run_cli(
        [
            "admin",
            "keys",
            "set",
            str(key_id),
            "--credit-limit-ton",
            "0.000001",
            "--models",
            QWEN,
            "--limit-reset",
            "weekly",
        ],
        database_url,
    )
    assert changed.returncode == 0, changed.stderr
    info = keys_of(server, owner)[key_id]
    assert info["credit_limit_nanoton"] == 1_000 and info["models"] == [QWEN] and info["limit_reset"] == "weekly"
    assert chat(server, key).json()["error"]["code"] == "key_limit_reached"
    bad = run_cli(["admin", "keys", "set", str(key_id), "--limit-reset", "hourly"], database_url)
    assert bad.returncode == 1 and "--limit-reset" in bad.stderr

    lifted = run_cli(
        ["admin", "keys", "set", str(key_id), "--credit-limit-ton", "none", "--models", "all"], database_url
    )
    assert lifted.returncode == 0, lifted.stderr
    assert chat(server, key).status_code == 200
    assert run_cli(["admin", "keys", "revoke", str(key_id)], database_url).returncode == 0
    assert chat(server, key).status_code == 401
    assert run_cli(["admin", "keys", "revoke", str(key_id)], database_url).returncode == 1
