"""A settlement above its hold (the network reported more than the worst case reserved: a
miscounting or hostile upstream, a low prompt estimate), against the real databases: the charge is
capped where charging it all would break a promise (an account below the overdraft's minimum
credits never under 0, one with the overdraft never past it, a key never past its credit limit)
and the rest is the operator's loss, recorded on the usage record and reported."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from support import Server, db_rows, ledger_consistent, new_account, run_cli
from test_billing_store_db import funds, migrated, new_key, settlement, with_store
from test_key_limits_store import key_counters, limit_key, reserve

from cocoon_platform.accounts.keys import hash_api_key
from cocoon_platform.billing.store import BillingStore
from cocoon_platform.billing.sweeper import sweep_expired
from cocoon_platform.config import Settings, format_ton
from cocoon_platform.db.engine import create_engine

__all__ = ["migrated"]  # the fixture, imported for pytest

TON = 1_000_000_000


def usage_of(database_url: str, request_id: str) -> tuple[int, int | None, int]:
    """(cost, capped, completion tokens) of one request's usage record."""
    row = db_rows(
        database_url,
        "SELECT cost_nanoton, capped_nanoton, completion_tokens FROM usage_records WHERE request_id = :r",
        {"r": request_id},
    )[0]
    return int(row[0]), None if row[1] is None else int(row[1]), int(row[2])  # type: ignore[call-overload]


def usage_entries(database_url: str, account_id: int) -> list[int]:
    rows = db_rows(
        database_url,
        "SELECT amount_nanoton FROM ledger_entries WHERE account_id = :a AND kind = 'usage' ORDER BY id",
        {"a": account_id},
    )
    return [int(r[0]) for r in rows]  # type: ignore[call-overload]


def test_a_charge_above_its_hold_never_takes_an_account_without_the_overdraft_under_zero(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=10_000)  # lifetime credits far below the minimum

    async def scenario(store: BillingStore) -> tuple[str, int | None]:
        held = await reserve(store, key, 4_000, overdraft=50_000, min_credits=TON)
        assert held is not None
        return held.hold_id, await store.settle(settlement(held, 25_000))

    request_id, charged = with_store(migrated, scenario)
    assert funds(migrated, account) == (0, 0)
    assert usage_entries(migrated, account) == [-10_000]
    assert usage_of(migrated, request_id) == (10_000, 15_000, 20)  # the true counts, the charge capped
    assert charged == 10_000
    assert ledger_consistent(migrated) == []


def test_an_account_with_the_overdraft_pays_a_charge_above_its_hold_down_to_the_overdraft(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=10_000)  # its credits reach the minimum below

    async def scenario(store: BillingStore) -> list[tuple[str, int | None]]:
        holds = [await reserve(store, key, 4_000, overdraft=50_000, min_credits=10_000) for _ in range(2)]
        charged = []
        for held, charge in zip(holds, (25_000, 100_000), strict=True):
            assert held is not None
            charged.append((held.hold_id, await store.settle(settlement(held, charge))))
        return charged

    (first, paid), (second, capped) = with_store(migrated, scenario)
    assert paid == 25_000 and usage_of(migrated, first) == (25_000, None, 20)  # -15,000: within the overdraft
    assert capped == 35_000 and usage_of(migrated, second) == (35_000, 65_000, 20)  # no further than -50,000
    assert funds(migrated, account) == (-50_000, 0)
    assert usage_entries(migrated, account) == [-25_000, -35_000]
    assert ledger_consistent(migrated) == []


def test_a_charge_above_its_hold_never_takes_a_key_past_its_limit(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=TON)
    limit_key(migrated, key, limit=10_000, spent=1_000)

    async def scenario(store: BillingStore) -> tuple[str, int | None]:
        held = await reserve(store, key, 4_000)
        assert held is not None
        return held.hold_id, await store.settle(settlement(held, 25_000))

    request_id, charged = with_store(migrated, scenario)
    assert key_counters(migrated, key) == (10_000, 0)
    assert funds(migrated, account) == (TON - 9_000, 0)
    assert usage_of(migrated, request_id) == (9_000, 16_000, 20)
    assert charged == 9_000
    assert ledger_consistent(migrated) == []


def test_settlements_committed_together_share_what_is_left(migrated: str) -> None:
    """One batch, one account: the charges are taken in order until the balance is spent."""
    key, account = new_key(migrated, nanoton=10_000)

    async def scenario(store: BillingStore) -> list[int | None]:
        holds = [await reserve(store, key, 3_000, min_credits=TON) for _ in range(3)]
        assert all(holds)
        return await asyncio.gather(
            *(store.settle(settlement(h, c)) for h, c in zip(holds, (6_000, 6_000, 1_000), strict=True) if h)
        )

    charged = with_store(migrated, scenario)
    assert funds(migrated, account) == (0, 0)
    assert sum(c or 0 for c in charged) == 10_000
    capped = db_rows(
        migrated,
        "SELECT SUM(capped_nanoton), SUM(cost_nanoton) FROM usage_records WHERE account_id = :a",
        {"a": account},
    )
    assert capped == [(3_000, 10_000)]
    assert ledger_consistent(migrated) == []


def test_a_late_settlement_of_a_swept_hold_is_capped_by_its_key_limit(migrated: str) -> None:
    """The sweeper released the hold (its request outlived it): the charge still counts against
    the key, within its limit."""
    key, account = new_key(migrated, nanoton=TON)
    limit_key(migrated, key, limit=10_000)

    async def scenario(store: BillingStore) -> int | None:
        held = await reserve(store, key, 8_000)
        assert held is not None
        await asyncio.to_thread(
            db_rows, migrated, "UPDATE holds SET expires_at = 0 WHERE id = :id", {"id": held.hold_id}
        )
        engine = create_engine(Settings(database_url=migrated))
        try:
            assert await sweep_expired(engine) >= 1
        finally:
            await engine.dispose()
        assert await asyncio.to_thread(key_counters, migrated, key) == (0, 0)
        return await store.settle(settlement(held, 12_000))

    assert with_store(migrated, scenario) == 10_000
    assert key_counters(migrated, key) == (10_000, 0)
    assert funds(migrated, account) == (TON - 10_000, 0)
    assert ledger_consistent(migrated) == []


def test_a_capped_settlement_applied_twice_reports_the_capped_charge(migrated: str) -> None:
    """The repeat rolls back and reports what the first application charged, not the bill."""
    key, account = new_key(migrated, nanoton=10_000)

    async def scenario(store: BillingStore) -> tuple[int, int]:
        held = await reserve(store, key, 4_000, min_credits=TON)
        assert held is not None
        capped = settlement(held, 25_000)
        return await store.settle(capped), await store.settle(capped)

    assert with_store(migrated, scenario) == (10_000, 10_000)
    assert funds(migrated, account) == (0, 0)
    assert usage_entries(migrated, account) == [-10_000]
    assert ledger_consistent(migrated) == []


def test_a_capped_settlement_whose_reply_was_lost_reports_the_capped_charge(migrated: str, backend: str) -> None:
    """PostgreSQL: the settlement commits and the connection drops before its reply. The batch is
    retried, meets the usage record it wrote, and reports (and counts, once) the capped charge."""
    if backend != "postgresql":
        pytest.skip("only a PostgreSQL reply can be lost after its commit")
    key, account = new_key(migrated, nanoton=10_000)
    counted_before = capped_counted()

    async def scenario(store: BillingStore) -> int:
        held = await reserve(store, key, 4_000, min_credits=TON)
        assert held is not None
        lose_first_settlement_reply(store)
        return await store.settle(settlement(held, 25_000))

    assert with_store(migrated, scenario) == 10_000
    assert capped_counted() == (counted_before[0] + 1, counted_before[1] + 15_000)
    assert funds(migrated, account) == (0, 0)
    assert usage_entries(migrated, account) == [-10_000]
    assert ledger_consistent(migrated) == []


def capped_counted() -> tuple[float, float]:
    """This process's cocoon_capped_charges_total and cocoon_capped_nanoton_total."""
    return (
        REGISTRY.get_sample_value("cocoon_capped_charges_total") or 0.0,
        REGISTRY.get_sample_value("cocoon_capped_nanoton_total") or 0.0,
    )


def lose_first_settlement_reply(store: BillingStore) -> None:
    """The settlement lane's next statement runs and commits, then its connection 'drops'."""
    taken = store._connection  # type: ignore[attr-defined]
    lost: list[bool] = []

    async def connection(lane: str, pool: Any) -> Any:
        held = await taken(lane, pool)
        if lane != "settle" or lost:
            return held

        class ReplyLost:
            async def fetch(self, *args: Any) -> Any:
                await held.fetch(*args)
                lost.append(True)
                raise ConnectionResetError("the reply was lost")

        return ReplyLost()

    store._connection = connection  # type: ignore[attr-defined]


def test_reconcile_reports_what_caps_left_unbilled(migrated: str) -> None:
    key, _ = new_key(migrated, nanoton=10_000)

    async def scenario(store: BillingStore) -> None:
        held = await reserve(store, key, 4_000, min_credits=TON)
        assert held is not None
        await store.settle(settlement(held, 10_500))

    with_store(migrated, scenario)
    count, total = db_rows(
        migrated, "SELECT COUNT(*), SUM(capped_nanoton) FROM usage_records WHERE capped_nanoton IS NOT NULL"
    )[0]
    result = run_cli(["admin", "reconcile"], migrated)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = f"{count} capped charge{'s' if count != 1 else ''}"
    assert shown in result.stdout and f"{format_ton(int(total), 9)} TON unbilled" in result.stdout  # type: ignore[call-overload]


def answer_usage(platform: Server, key: str, stream: bool) -> dict[str, int]:
    body: dict[str, object] = {
        "model": "Qwen/Qwen3-32B",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "[[sim:tokens=40]] [[sim:overcount=100000]] count"}],
    }
    headers = {"Authorization": f"Bearer {key}"}
    if not stream:
        answer = httpx.post(platform.url + "/v1/chat/completions", headers=headers, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["usage"]  # type: ignore[no-any-return]
    body.update(stream=True, stream_options={"include_usage": True})
    with httpx.stream("POST", platform.url + "/v1/chat/completions", headers=headers, json=body, timeout=30) as answer:
        assert answer.status_code == 200
        chunks = [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: {")]
    return chunks[-1]["usage"]  # type: ignore[no-any-return]


def shown_capped(platform: Server, key: str) -> tuple[int, int, int, int]:
    """The account's latest request as the user sees it: its cost, and its uncharged rest in
    /v1/usage, in its CSV export and in /v1/generation."""
    headers = {"Authorization": f"Bearer {key}"}
    latest = httpx.get(platform.url + "/v1/usage", headers=headers, params={"limit": 1}, timeout=10).json()["data"][0]
    exported = httpx.get(platform.url + "/v1/usage", headers=headers, params={"limit": 1, "format": "csv"}, timeout=10)
    (row,) = csv.DictReader(io.StringIO(exported.text))
    assert row["request_id"] == latest["request_id"]
    found = httpx.get(platform.url + "/v1/generation", headers=headers, params={"id": latest["request_id"]}, timeout=10)
    return latest["cost_nanoton"], latest["capped_nanoton"], int(row["capped_nanoton"]), found.json()["capped_nanoton"]


def test_an_upstream_reporting_far_more_than_max_tokens_gets_no_more_than_the_balance(
    platform: Server, database_url: str
) -> None:
    """Through the platform, streamed and not: the answer says what was charged, the usage the
    tokens the network reported, /v1/usage (JSON and CSV) and /v1/generation the uncharged rest,
    and /metrics counts the capped charges."""
    for stream in (False, True):
        key = new_account(platform, database_url, TON // 50)  # 0.02 TON: far below the overdraft's minimum
        usage = answer_usage(platform, key, stream)
        assert usage["completion_tokens"] == 4_000_000  # 40 generated, reported 100,000 times
        assert usage["cost_nanoton"] == TON // 50
        (balance, capped, cost), *_ = db_rows(
            database_url,
            "SELECT a.balance_nanoton, u.capped_nanoton, u.cost_nanoton FROM usage_records u "
            "JOIN api_keys k ON k.id = u.key_id JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = :h",
            {"h": hash_api_key(key)},
        )
        assert (balance, cost) == (0, TON // 50) and int(capped) > 0  # type: ignore[call-overload]
        assert shown_capped(platform, key) == (cost, capped, capped, capped)
    published = httpx.get(platform.url + "/openapi.json", timeout=10).json()["components"]["schemas"]
    for schema in (published["UsageItem"], published["GenerationResponse"]):
        assert schema["properties"]["capped_nanoton"]["type"] == "integer"
        assert "capped_nanoton" not in schema["required"]  # an added field: optional
    scrape = httpx.get(platform.url + "/metrics", timeout=10).text
    counted = next(line for line in scrape.splitlines() if line.startswith("cocoon_capped_charges_total "))
    assert float(counted.split()[1]) >= 2
    assert ledger_consistent(database_url) == []
