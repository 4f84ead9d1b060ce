"""Ruling 3 of #23: extending the spec is additive. The seed's conditions answer exactly as the seed's
own schemas say (tests/fixtures/seed-openapi.yaml is the seed contract, unchanged), and each new
condition answers with a code the published /openapi.json lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from conftest import ServerFactory
from support import Server, Simulator, db_rows, new_account

SEED = yaml.safe_load((Path(__file__).parent / "fixtures" / "seed-openapi.yaml").read_text())
QWEN = "Qwen/Qwen3-32B"
TON = 1_000_000_000


def openapi_3_0_to_json_schema(node: Any) -> Any:
    """The spec writes `nullable: true` (OpenAPI 3.0 style): as JSON Schema, null is then allowed too."""
    if isinstance(node, list):
        return [openapi_3_0_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: openapi_3_0_to_json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def validate(document: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    resolvable = openapi_3_0_to_json_schema({**schema, "components": document.get("components", {})})
    jsonschema.validate(body, resolvable)


def seed_response_schema(path: str, method: str, status: str) -> dict[str, Any]:
    response = SEED["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = SEED["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server(server_factory: ServerFactory, simulator: Simulator) -> Server:
    return server_factory(upstream_url=simulator.url)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(server: Server, key: str, model: str = QWEN, max_tokens: int = 8) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers=auth(key),
        timeout=30,
        json={"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "x"}]},
    )


def test_seed_paths_answer_in_the_seeds_shapes(server: Server, database_url: str) -> None:
    key = new_account(server, database_url, TON)
    balance = httpx.get(server.url + "/v1/balance", headers=auth(key), timeout=10)
    validate(SEED, seed_response_schema("/v1/balance", "get", "200"), balance.json())
    assert {"balance_ton", "balance_nanoton", "balance_usd", "ton_usd_rate"} <= set(balance.json())
    made = httpx.post(server.url + "/v1/keys", headers=auth(key), json={"credit_limit_ton": "0.000001"}, timeout=10)
    validate(SEED, seed_response_schema("/v1/keys", "post", "201"), made.json())
    for path, method in (("/v1/balance", "get"), ("/v1/deposit", "get")):
        refused = httpx.request(method, server.url + path, headers=auth("ck_" + "z" * 43), timeout=10)
        assert refused.status_code == 401
        validate(SEED, seed_response_schema(path, method, "401"), refused.json())
        assert refused.json()["error"]["code"] == "invalid_api_key"
    poor = new_account(server, database_url)
    refused = chat(server, poor)
    assert refused.status_code == 402 and refused.json()["error"]["code"] == "insufficient_balance"
    validate(SEED, seed_response_schema("/v1/chat/completions", "post", "402"), refused.json())


def test_new_conditions_answer_with_codes_the_published_document_lists(server: Server, database_url: str) -> None:
    published = httpx.get(server.url + "/openapi.json", timeout=10).json()
    error_schema = {"$ref": "#/components/schemas/Error"}
    owner = new_account(server, database_url, TON)

    def key_with(**settings: object) -> tuple[str, int]:
        made = httpx.post(server.url + "/v1/keys", headers=auth(owner), json=settings, timeout=10).json()
        return str(made["api_key"]), int(made["key"]["id"])

    capped, _ = key_with(credit_limit_ton="0.000001")
    listed, _ = key_with(models=["ByteDance-Seed/Seed-X-PPO-7B"])
    expiring, expiring_id = key_with(expires_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())
    db_rows(database_url, "UPDATE api_keys SET expires_at = 1 WHERE id = :id", {"id": expiring_id})
    answers = {
        "key_limit_reached": chat(server, capped),
        "model_not_allowed": chat(server, listed),
        "key_expired": chat(server, expiring),
        "key_management_not_allowed": httpx.post(server.url + "/v1/keys", headers=auth(capped), json={}, timeout=10),
    }
    for code, answer in answers.items():
        assert answer.json()["error"]["code"] == code, answer.text
        validate(published, error_schema, answer.json())
        with pytest.raises(jsonschema.ValidationError):  # the seed's enum does not know it: it is new
            validate(SEED, {"$ref": "#/components/schemas/Error"}, answer.json())
