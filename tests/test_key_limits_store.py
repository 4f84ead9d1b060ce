"""Key limits and the overdraft rule in the billing store, against the real databases: a key's
credit limit, allow-list and expiry ride the reservation, and hold under concurrency exactly as
the balance does; only accounts with enough lifetime credits may overdraw."""

from __future__ import annotations

import asyncio
import time

from support import db_rows, ledger_consistent, run_cli
from test_billing_store_db import funds, migrated, new_key, settlement, with_store

from cocoon_platform.accounts.keys import hash_api_key
from cocoon_platform.accounts.limits import period_starts
from cocoon_platform.billing.store import BillingStore, Reservation
from cocoon_platform.billing.sweeper import sweep_expired
from cocoon_platform.config import Settings
from cocoon_platform.db.engine import create_engine
from cocoon_platform.proxy.handler import new_request_id

__all__ = ["migrated"]  # the fixture, imported for pytest

TON = 1_000_000_000


def limit_key(
    database_url: str,
    key: str,
    limit: int | None,
    spent: int = 0,
    reset: str | None = None,
    period_start: int = 0,
    models: str | None = None,
    expires_at: int | None = None,
) -> None:
    db_rows(
        database_url,
        "UPDATE api_keys SET credit_limit_nanoton = :limit, limit_spent_nanoton = :spent, "
        "limit_reset = :reset, limit_period_start = :start, models = :models, expires_at = :expires "
        "WHERE key_hash = :hash",
        {
            "limit": limit,
            "spent": spent,
            "reset": reset,
            "start": period_start,
            "models": models,
            "expires": expires_at,
            "hash": hash_api_key(key),
        },
    )


def key_counters(database_url: str, key: str) -> tuple[int, int]:
    row = db_rows(
        database_url,
        "SELECT limit_spent_nanoton, limit_reserved_nanoton FROM api_keys WHERE key_hash = :hash",
        {"hash": hash_api_key(key)},
    )[0]
    return int(row[0]), int(row[1])  # type: ignore[call-overload]


async def reserve(
    store: BillingStore, key: str, amount: int, *, model: str = "m", overdraft: int = 0, min_credits: int = 0
) -> Reservation | None:
    return await store.reserve(
        hash_api_key(key), amount, 0, overdraft, new_request_id(), 600, model=model, overdraft_min_credits=min_credits
    )


def test_thirty_concurrent_requests_never_take_a_nearly_spent_key_past_its_limit(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=10 * TON)
    limit_key(migrated, key, limit=10_000, spent=9_000)

    async def scenario(store: BillingStore) -> tuple[int, Reservation | None]:
        async def one() -> int:
            held = await reserve(store, key, 100)
            if held is None:
                return 0
            assert held.key_counted
            await asyncio.sleep(0.01)  # in flight while the others reserve
            await store.settle(settlement(held, 100))
            return 1

        granted = sum(await asyncio.gather(*(one() for _ in range(30))))
        return granted, await reserve(store, key, 1)

    granted, after = with_store(migrated, scenario)
    assert granted == 10
    assert after is None  # spent to the last nanoTON
    assert key_counters(migrated, key) == (10_000, 0)
    assert funds(migrated, account) == (10 * TON - 1_000, 0)
    assert ledger_consistent(migrated) == []


def test_a_request_that_would_cross_the_limit_is_refused_whole_and_the_account_keeps_nothing_held(
    migrated: str,
) -> None:
    key, account = new_key(migrated, nanoton=10 * TON)
    limit_key(migrated, key, limit=1_000, spent=500)

    async def scenario(
        store: BillingStore,
    ) -> tuple[Reservation | None, Reservation | None, tuple[int, int], tuple[int, int]]:
        refused, granted = await reserve(store, key, 501), await reserve(store, key, 500)
        held = await asyncio.to_thread(funds, migrated, account), await asyncio.to_thread(key_counters, migrated, key)
        if granted is not None:  # other tests count open holds in this shared database
            await store.settle(settlement(granted, 0))
        return refused, granted, *held

    refused, granted, account_funds, counters = with_store(migrated, scenario)
    assert refused is None and granted is not None
    assert account_funds == (10 * TON, 500)  # only the granted hold
    assert counters == (500, 500)


def test_a_limit_that_resets_counts_only_the_current_period(migrated: str) -> None:
    key, _ = new_key(migrated, nanoton=10 * TON)
    day, _, _ = period_starts(time.time())
    limit_key(migrated, key, limit=1_000, spent=1_000, reset="daily", period_start=day - 86_400)

    async def scenario(store: BillingStore) -> Reservation | None:
        held = await reserve(store, key, 1_000)
        assert held is not None
        await store.settle(settlement(held, 300))
        return await reserve(store, key, 701)

    assert with_store(migrated, scenario) is None  # yesterday's 1,000 no longer count; today's 300 do
    assert key_counters(migrated, key) == (300, 0)
    assert db_rows(
        migrated, "SELECT limit_period_start FROM api_keys WHERE key_hash = :h", {"h": hash_api_key(key)}
    ) == [(day,)]


def test_unlimited_keys_keep_no_counters(migrated: str) -> None:
    key, _ = new_key(migrated, nanoton=10 * TON)

    async def scenario(store: BillingStore) -> None:
        held = await reserve(store, key, 1_000)
        assert held is not None and not held.key_counted
        await store.settle(settlement(held, 300))

    with_store(migrated, scenario)
    assert key_counters(migrated, key) == (0, 0)


def test_an_expired_key_or_a_model_outside_the_allow_list_reserves_nothing(migrated: str) -> None:
    expired, _ = new_key(migrated, nanoton=10 * TON)
    limit_key(migrated, expired, limit=None, expires_at=int(time.time()) - 1)
    listed, account = new_key(migrated, nanoton=10 * TON)
    limit_key(migrated, listed, limit=None, models="\nQwen/Qwen3-0.6B\nByteDance-Seed/Seed-X-PPO-7B\n")

    async def scenario(store: BillingStore) -> tuple[list[Reservation | None], int]:
        results = [
            await reserve(store, expired, 10),
            await reserve(store, listed, 10, model="Qwen/Qwen3-32B"),
            await reserve(store, listed, 10, model="Qwen/Qwen3"),
            await reserve(store, listed, 10, model="Qwen/Qwen3-0.6B\nByteDance-Seed/Seed-X-PPO-7B"),
            await reserve(store, listed, 10, model="Qwen/Qwen3-0.6B"),
        ]
        held = (await asyncio.to_thread(funds, migrated, account))[1]
        for granted in results:
            if granted is not None:
                await store.settle(settlement(granted, 0))
        return results, held

    results, held = with_store(migrated, scenario)
    assert results[:4] == [None, None, None, None]
    assert results[4] is not None
    assert held == 10


def test_the_sweeper_gives_a_key_back_what_a_dead_request_held(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=10 * TON)
    limit_key(migrated, key, limit=10_000)

    async def scenario(store: BillingStore) -> None:
        assert await reserve(store, key, 4_000) is not None

    with_store(migrated, scenario)
    assert key_counters(migrated, key) == (0, 4_000)
    db_rows(migrated, "UPDATE holds SET expires_at = 0 WHERE account_id = :a", {"a": account})

    async def sweep() -> int:
        engine = create_engine(Settings(database_url=migrated))
        try:
            return await sweep_expired(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(sweep()) >= 1
    assert key_counters(migrated, key) == (0, 0)
    assert funds(migrated, account) == (10 * TON, 0)


def test_an_account_below_the_minimum_credits_never_goes_under_zero(migrated: str) -> None:
    """#14: 0.01 TON of credits and concurrent long requests, with the overdraft offered."""
    small, small_account = new_key(migrated, nanoton=TON // 100)
    large, large_account = new_key(migrated, nanoton=TON)

    async def scenario(store: BillingStore) -> tuple[int, int]:
        async def one(key: str) -> int:
            held = await reserve(store, key, 4_000_000, overdraft=50_000_000, min_credits=TON)
            if held is None:
                return 0
            await asyncio.sleep(0.01)
            await store.settle(settlement(held, 4_000_000))
            return 1

        small_granted = sum(await asyncio.gather(*(one(small) for _ in range(8))))
        large_granted = sum(await asyncio.gather(*(one(large) for _ in range(300))))
        return small_granted, large_granted

    small_granted, large_granted = with_store(migrated, scenario)
    assert small_granted == 2  # 2 x 0.004 fit in 0.01; a third would go below zero
    assert funds(migrated, small_account) == (TON // 100 - 8_000_000, 0)
    # Lifetime credits of 1 TON reach the minimum: the overdraft is there.
    assert large_granted == (TON + 50_000_000) // 4_000_000
    assert funds(migrated, large_account)[0] < 0
    assert db_rows(migrated, "SELECT credited_nanoton FROM accounts WHERE id = :a", {"a": small_account}) == [
        (TON // 100,)
    ]
    assert ledger_consistent(migrated) == []


def test_reconcile_checks_what_keys_hold_against_their_open_holds(migrated: str) -> None:
    key, _ = new_key(migrated, nanoton=10 * TON)
    limit_key(migrated, key, limit=10_000)
    key_id = int(
        db_rows(
            migrated,
            "SELECT id FROM api_keys WHERE key_hash = :h",  # type: ignore[call-overload]
            {"h": hash_api_key(key)},
        )[0][0]
    )
    line = f"key {key_id}: held against its limit"
    assert line not in run_cli(["admin", "reconcile"], migrated).stdout
    db_rows(migrated, "UPDATE api_keys SET limit_reserved_nanoton = 5 WHERE id = :id", {"id": key_id})
    try:
        result = run_cli(["admin", "reconcile"], migrated)
        assert result.returncode != 0 and f"{line} 5 != sum of its open holds 0" in result.stdout
    finally:
        db_rows(migrated, "UPDATE api_keys SET limit_reserved_nanoton = 0 WHERE id = :id", {"id": key_id})
