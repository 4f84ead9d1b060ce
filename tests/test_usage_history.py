"""GET /v1/usage: the account's requests newest first, paginated, and totals per day and model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from support import Server, new_account, run_cli

QWEN = "Qwen/Qwen3-32B"
SEED = "ByteDance-Seed/Seed-X-PPO-7B"


def test_usage_pages_and_totals(platform: Server, database_url: str) -> None:
    key = new_account(platform, database_url, 1_000_000_000)
    auth = {"Authorization": f"Bearer {key}"}
    ids, costs = [], 0
    for i in range(5):
        response = httpx.post(
            platform.url + "/v1/chat/completions",
            headers=auth,
            timeout=30,
            json={"model": QWEN, "max_tokens": 20, "messages": [{"role": "user", "content": f"question {i}"}]},
        )
        ids.append(response.headers["x-request-id"])
        costs += response.json()["usage"]["cost_nanoton"]
    response = httpx.post(
        platform.url + "/v1/completions",
        headers=auth,
        timeout=30,
        json={
            "model": SEED,
            "max_tokens": 10,
            "prompt": "Translate the following English sentence into Chinese: hi <zh>",
        },
    )
    ids.append(response.headers["x-request-id"])
    costs += response.json()["usage"]["cost_nanoton"]
    httpx.post(
        platform.url + "/v1/chat/completions",
        headers=auth,
        timeout=30,
        json={"model": QWEN, "messages": [{"role": "user", "content": "[[sim:fault=no_workers]] x"}]},
    )

    first = httpx.get(platform.url + "/v1/usage", headers=auth, params={"limit": 4}).json()
    assert len(first["data"]) == 4 and first["has_more"] is True
    assert first["data"][0]["status"] == "upstream_error" and first["data"][0]["cost_nanoton"] == 0
    assert first["data"][1]["request_id"] == ids[-1] and first["data"][1]["endpoint"] == "completions"
    rest = httpx.get(
        platform.url + "/v1/usage", headers=auth, params={"limit": 4, "before": first["next_before"]}
    ).json()
    assert rest["has_more"] is False and rest["next_before"] is None
    seen = [item["request_id"] for item in first["data"][1:] + rest["data"]]
    assert seen == ids[::-1]
    item = rest["data"][-1]
    assert item["total_tokens"] == item["prompt_tokens"] + item["completion_tokens"]
    assert item["cost_ton"] == item["cost_nanoton"] / 1e9 and item["estimated"] is False

    totals = {row["model"]: row for row in first["totals"]}
    today = datetime.now(UTC).date().isoformat()
    assert totals[QWEN]["date"] == today and totals[QWEN]["requests"] == 6
    assert totals[SEED]["requests"] == 1
    assert sum(row["cost_nanoton"] for row in first["totals"]) == costs
    balance = httpx.get(platform.url + "/v1/balance", headers=auth).json()["balance_nanoton"]
    assert balance == 1_000_000_000 - costs

    past = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    assert (
        httpx.get(platform.url + "/v1/usage", headers=auth, params={"start": past, "end": past}).json()["totals"] == []
    )
    bad = httpx.get(platform.url + "/v1/usage", headers=auth, params={"start": today, "end": past})
    assert bad.status_code == 400 and "start" in bad.json()["error"]["message"]
    assert httpx.get(platform.url + "/v1/usage", headers=auth, params={"limit": 0}).status_code == 422
    assert httpx.get(platform.url + "/v1/usage").status_code == 401
    other = new_account(platform, database_url)
    assert httpx.get(platform.url + "/v1/usage", headers={"Authorization": f"Bearer {other}"}).json()["data"] == []


def test_wallet_network_must_match(database_url: str) -> None:
    testnet = "kQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR28j"
    mismatch = run_cli(["migrate"], database_url, {"COCOON_DEPOSIT_WALLET": testnet})
    assert mismatch.returncode != 0
    assert "invalid configuration" in mismatch.stderr and "testnet" in mismatch.stderr
