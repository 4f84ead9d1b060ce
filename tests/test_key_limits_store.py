"""Key limits and the overdraft rule in the billing store, against the real databases: a key's
credit limit, allow-list and expiry ride the reservation, and hold under concurrency exactly as
the balance does; only accounts with enough lifetime credits may overdraw."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select
from support import db_rows, ledger_consistent, run_cli
from test_billing_store_db import funds, migrated, new_key, settlement, with_store

from cocoon_platform.accounts.keys import hash_api_key
from cocoon_platform.accounts.limits import period_starts
from cocoon_platform.accounts.service import change_key
from cocoon_platform.billing.store import BillingStore, Reservation
from cocoon_platform.billing.sweeper import sweep_expired
from cocoon_platform.config import Settings
from cocoon_platform.db.engine import create_engine, create_sessionmaker
from cocoon_platform.db.models import ApiKey
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
        assert held is not None
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


def set_limit(database_url: str, key: str, limit: int | None) -> None:
    """Change a key's credit limit as PATCH /v1/keys/{id} and `admin keys set` do."""

    async def change() -> None:
        engine = create_engine(Settings(database_url=database_url))
        try:
            async with create_sessionmaker(engine)() as session:
                api_key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key)))
                assert api_key is not None
                await change_key(session, api_key, {"credit_limit_nanoton": limit})
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(change())


def charged_to(database_url: str, key: str) -> int:
    """What the key's requests were charged, from their usage records."""
    return int(
        db_rows(  # type: ignore[call-overload]
            database_url,
            "SELECT COALESCE(SUM(u.cost_nanoton), 0) FROM usage_records u JOIN api_keys k ON k.id = u.key_id "
            "WHERE k.key_hash = :h",
            {"h": hash_api_key(key)},
        )[0][0]
    )


async def settle_granted(store: BillingStore, reservation: Reservation | None) -> None:
    """Release a reservation a test expected to be refused (other tests count open holds)."""
    if reservation is not None:
        await store.settle(settlement(reservation, 0))


def test_a_limit_set_while_requests_are_in_flight_counts_them(migrated: str) -> None:
    """Two requests hold 4,000 each on an unlimited key; a limit of 5,000 is set meanwhile: they
    are held against it at once, and their charges count when they settle, within the limit."""
    key, account = new_key(migrated, nanoton=TON)

    async def scenario(store: BillingStore) -> list[object]:
        first, second = await reserve(store, key, 4_000), await reserve(store, key, 4_000)
        assert first is not None and second is not None
        await asyncio.to_thread(set_limit, migrated, key, 5_000)
        seen: list[object] = [await asyncio.to_thread(key_counters, migrated, key)]
        refused = await reserve(store, key, 1)
        await settle_granted(store, refused)
        seen.append(refused)
        seen.append(await store.settle(settlement(first, 3_000)))
        seen.append(await asyncio.to_thread(key_counters, migrated, key))
        seen.append(await store.settle(settlement(second, 3_000)))  # 2,000 left under the limit
        after = await reserve(store, key, 1)
        await settle_granted(store, after)
        seen.append(after)
        return seen

    in_flight, refused, first, after_first, second, after = with_store(migrated, scenario)
    assert in_flight == (0, 8_000)
    assert refused is None
    assert (first, after_first) == (3_000, (3_000, 4_000))
    assert second == 2_000
    assert after is None
    assert key_counters(migrated, key) == (5_000, 0) and charged_to(migrated, key) == 5_000
    assert funds(migrated, account) == (TON - 5_000, 0)
    assert ledger_consistent(migrated) == []


def test_a_limit_lifted_and_set_again_in_flight_keeps_the_counters_exact(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=TON)
    limit_key(migrated, key, limit=10_000)

    async def scenario(store: BillingStore) -> list[tuple[int, int]]:
        counted = await reserve(store, key, 4_000)
        assert counted is not None
        await asyncio.to_thread(set_limit, migrated, key, None)
        lifted = await asyncio.to_thread(key_counters, migrated, key)
        uncounted = await reserve(store, key, 4_000)
        assert uncounted is not None
        await asyncio.to_thread(set_limit, migrated, key, 20_000)
        again = await asyncio.to_thread(key_counters, migrated, key)
        await store.settle(settlement(counted, 1_000))
        await store.settle(settlement(uncounted, 2_000))
        return [lifted, again]

    lifted, again = with_store(migrated, scenario)
    assert lifted == (0, 0)  # an unlimited key keeps no counters
    assert again == (0, 8_000)
    assert key_counters(migrated, key) == (3_000, 0) and charged_to(migrated, key) == 3_000
    assert funds(migrated, account) == (TON - 3_000, 0)


def test_a_limit_lowered_below_what_is_in_flight_is_never_exceeded(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=TON)
    limit_key(migrated, key, limit=10_000)

    async def scenario(store: BillingStore) -> list[int]:
        first, second = await reserve(store, key, 4_000), await reserve(store, key, 4_000)
        assert first is not None and second is not None
        await asyncio.to_thread(set_limit, migrated, key, 3_000)
        return [await store.settle(settlement(first, 2_000)), await store.settle(settlement(second, 2_000))]

    assert with_store(migrated, scenario) == [2_000, 1_000]
    assert key_counters(migrated, key) == (3_000, 0) and charged_to(migrated, key) == 3_000
    assert funds(migrated, account) == (TON - 3_000, 0)
    assert ledger_consistent(migrated) == []


def test_limits_set_and_lifted_while_requests_race_keep_the_counters_exact(migrated: str) -> None:
    """Requests reserve and settle without pause while the key's limit is set and lifted: at every
    moment what the key holds is the sum of its counted holds, and every hold counts exactly when
    the key has a limit; at the end the key's spending is what its usage records say."""
    key, _ = new_key(migrated, nanoton=TON)
    check = (
        "SELECT k.limit_reserved_nanoton, "
        "(SELECT COALESCE(SUM(amount_nanoton), 0) FROM holds WHERE key_id = k.id AND key_counted), "
        "(SELECT COUNT(*) FROM holds WHERE key_id = k.id "
        " AND key_counted != (k.credit_limit_nanoton IS NOT NULL)) "
        "FROM api_keys k WHERE k.key_hash = :h"
    )

    async def scenario(store: BillingStore) -> list[tuple[object, ...]]:
        done = asyncio.Event()

        async def requests() -> None:
            while not done.is_set():
                held = await reserve(store, key, 1_000)
                assert held is not None
                await asyncio.sleep(0.001)
                await store.settle(settlement(held, 10))

        running = [asyncio.create_task(requests()) for _ in range(8)]
        seen = []
        for limit in (TON, None, TON, None, TON):
            await asyncio.to_thread(set_limit, migrated, key, limit)
            await asyncio.sleep(0.05)
            seen += await asyncio.to_thread(db_rows, migrated, check, {"h": hash_api_key(key)})
        done.set()
        await asyncio.gather(*running)
        return seen

    seen = with_store(migrated, scenario)
    assert all(held == counted and wrong == 0 for held, counted, wrong in seen), seen
    assert key_counters(migrated, key) == (charged_to(migrated, key), 0)
    assert charged_to(migrated, key) > 0
