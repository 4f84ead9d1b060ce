"""Registration, keys, login, balance, deposit, pricing and health over HTTP, on both databases."""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest
from conftest import ServerFactory
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from support import Server, run_cli

from cocoon_platform.db.models import ApiKey

INVALID_KEY = {
    "error": {"message": "Invalid API key", "type": "invalid_auth", "param": None, "code": "invalid_api_key"}
}
WALLET = "EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp"


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory) -> Server:
    return server_factory()


@pytest.fixture(scope="module")
def admin_server(server_factory: ServerFactory) -> Server:
    return server_factory(admin_token="s3cret-admin")


def register(client: httpx.Client) -> dict[str, object]:
    response = client.post("/api/register")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def auth(key: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stored_key_rows(database_url: str) -> list[tuple[bytes, str]]:
    async def read() -> list[tuple[bytes, str]]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                rows = (await conn.execute(select(ApiKey.key_hash, ApiKey.prefix))).all()
                return [(bytes(r.key_hash), r.prefix) for r in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_register_returns_key_once_and_stores_only_its_hash(server: Server, database_url: str) -> None:
    with server.client() as client:
        body = register(client)
    key = body["api_key"]
    assert isinstance(key, str) and key.startswith("ck_") and len(key) >= 3 + 43
    assert body["balance_ton"] == 0.0
    assert body["deposit_wallet"] == WALLET
    code = body["deposit_code"]
    assert isinstance(code, str) and len(code) == 8
    assert not set(code) & set("01OIL") and code == code.upper()
    assert str(body["created_at"]).endswith(("Z", "+00:00"))
    rows = stored_key_rows(database_url)
    digest = hashlib.sha256(key.encode()).digest()
    assert digest in [h for h, _ in rows]
    # Nothing stored can give the key back: only the digest and a short display prefix.
    assert all(len(p) <= 9 and key not in p for _, p in rows)


def test_two_registrations_get_distinct_keys_and_codes(server: Server) -> None:
    with server.client() as client:
        a, b = register(client), register(client)
    assert a["api_key"] != b["api_key"] and a["deposit_code"] != b["deposit_code"]


def test_login_balance_and_deposit_flow(server: Server, database_url: str) -> None:
    with server.client() as client:
        body = register(client)
        key = body["api_key"]
        login = client.post("/api/login", json={"api_key": key})
        assert login.status_code == 200
        assert login.json() == {"balance_ton": 0.0, "deposit_code": body["deposit_code"], "deposit_wallet": WALLET}

        balance = client.get("/v1/balance", headers=auth(key)).json()
        assert balance["balance_ton"] == 0.0 and balance["balance_nanoton"] == 0
        assert balance["balance_usd"] is None and balance["ton_usd_rate"] is None

        deposit = client.get("/v1/deposit", headers=auth(key)).json()
        assert deposit["wallet"] == WALLET and deposit["memo"] == body["deposit_code"]
        assert body["deposit_code"] in deposit["instructions"] and WALLET in deposit["instructions"]
        assert deposit["payment_link"] == f"ton://transfer/{WALLET}?text={body['deposit_code']}"

        credited = run_cli(
            ["admin", "credit", "--api-key-stdin", "--amount-ton", "1.5", "--reason", "test"],
            database_url,
            stdin=f"{key}\n",
        )
        assert credited.returncode == 0, credited.stderr
        assert "1.500000000 TON" in credited.stdout
        balance = client.get("/v1/balance", headers=auth(key)).json()
        assert balance["balance_ton"] == 1.5 and balance["balance_nanoton"] == 1_500_000_000
        assert client.post("/api/login", json={"api_key": key}).json()["balance_ton"] == 1.5


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer ck_unknown"},
        {"Authorization": "Bearer sk-openai-style"},
        {"Authorization": "ck_no_scheme"},
    ],
)
@pytest.mark.parametrize("path", ["/v1/balance", "/v1/deposit", "/v1/keys"])
def test_missing_malformed_or_unknown_key_is_401(server: Server, headers: dict[str, str], path: str) -> None:
    with server.client() as client:
        response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == INVALID_KEY


def test_login_with_wrong_key_is_401_and_bad_body_is_422(server: Server) -> None:
    with server.client() as client:
        assert client.post("/api/login", json={"api_key": "ck_nope"}).json() == INVALID_KEY
        assert client.post("/api/login", json={"api_key": "nope"}).status_code == 401
        missing = client.post("/api/login", json={})
        assert missing.status_code == 422
        assert missing.json()["detail"] == [{"loc": ["body", "api_key"], "msg": "Field required", "type": "missing"}]
        assert missing.json()["error"] == {
            "message": "Invalid 'api_key': Field required (missing)",
            "type": "invalid_request_error",
            "param": "api_key",
            "code": "validation_error",
        }
        wrong_type = client.post("/api/login", json={"api_key": 5})
        assert wrong_type.status_code == 422 and wrong_type.json()["detail"][0]["loc"] == ["body", "api_key"]
        not_json = client.post("/api/login", content=b"{", headers={"content-type": "application/json"})
        assert not_json.status_code == 422 and "detail" in not_json.json()


def test_unknown_path_and_method_have_error_shape(server: Server) -> None:
    with server.client() as client:
        missing = client.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
        wrong_method = client.delete("/health")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_keys_without_admin_token_creates_account(server: Server) -> None:
    with server.client() as client:
        response = client.post("/v1/keys")
        assert response.status_code == 201
        body = response.json()
        assert {"api_key", "deposit_code", "balance_ton", "created_at"} <= set(body)  # the new key's settings beside
        assert client.get("/v1/balance", headers=auth(body["api_key"])).status_code == 200


def test_keys_with_admin_token(admin_server: Server) -> None:
    with admin_server.client() as client:
        forbidden = {
            "error": {"message": "Admin token required", "type": "auth_error", "param": None, "code": "forbidden"}
        }
        assert client.post("/v1/keys").status_code == 403
        assert client.post("/v1/keys").json() == forbidden
        assert client.post("/v1/keys", headers=auth("wrong")).json() == forbidden
        created = client.post("/v1/keys", headers=auth("s3cret-admin"))
        assert created.status_code == 201 and created.json()["api_key"].startswith("ck_")
        # Self-service registration stays open with an admin token set.
        assert client.post("/api/register").status_code == 200


def test_user_key_management(server: Server) -> None:
    with server.client() as client:
        first = register(client)
        key = first["api_key"]
        second = client.post("/v1/keys", headers=auth(key), json={"name": "laptop"})
        assert second.status_code == 201
        assert second.json()["deposit_code"] == first["deposit_code"]
        new_key = second.json()["api_key"]
        listed = client.get("/v1/keys", headers=auth(new_key)).json()["data"]
        assert [k["name"] for k in listed] == [None, "laptop"]
        assert all(k["prefix"].startswith("ck_") and len(k["prefix"]) == 9 for k in listed)
        assert key not in str(listed) and new_key not in str(listed)
        laptop_id = listed[1]["id"]
        assert client.delete(f"/v1/keys/{laptop_id}", headers=auth(key)).status_code == 204
        assert client.get("/v1/balance", headers=auth(new_key)).json() == INVALID_KEY
        assert client.delete(f"/v1/keys/{laptop_id}", headers=auth(key)).status_code == 404
        # Another account's key id is not yours to revoke.
        other = register(client)
        other_id = client.get("/v1/keys", headers=auth(other["api_key"])).json()["data"][0]["id"]
        assert client.delete(f"/v1/keys/{other_id}", headers=auth(key)).status_code == 404
        assert client.post("/v1/keys", headers=auth("ck_unknown")).json() == INVALID_KEY


def test_pricing_defaults(server: Server) -> None:
    with server.client() as client:
        body = client.get("/v1/pricing").json()
    assert body["currency"] == "TON" and body["unit"] == "nanoton" and body["nanoton_per_ton"] == 1_000_000_000
    assert body["markup_multiplier"] == 1.5
    assert body["minimum_balance_ton"] == 0.01 and body["maximum_overdraft_ton"] == 0.05
    effective = {name: rate["effective_nanoton"] for name, rate in body["rates"].items()}
    assert effective == {"prompt_token": 30, "completion_token": 240, "reasoning_token": 240, "cached_prompt_token": 3}
    assert body["rates"]["cached_prompt_token"] == {"base_nanoton": 20, "multiplier": 0.1, "effective_nanoton": 3}


def test_health(server: Server) -> None:
    with server.client() as client:
        assert client.get("/health").json() == {"status": "ok", "version": "0.1.0", "service": "cocoon-platform"}


def test_openapi_describes_spec_paths(server: Server) -> None:
    with server.client() as client:
        doc = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    paths = doc["paths"]
    for path, method in [
        ("/api/register", "post"),
        ("/v1/keys", "post"),
        ("/api/login", "post"),
        ("/v1/balance", "get"),
        ("/v1/deposit", "get"),
        ("/v1/pricing", "get"),
        ("/health", "get"),
    ]:
        assert method in paths[path], path
    assert "201" in paths["/v1/keys"]["post"]["responses"] and "403" in paths["/v1/keys"]["post"]["responses"]
    balance_schema = doc["components"]["schemas"]["BalanceResponse"]["properties"]
    assert {"balance_ton", "balance_nanoton", "balance_usd", "ton_usd_rate"} <= set(balance_schema)
