"""The billing store against the real databases: reservations, settlements and their books,
whether a request commits on its own (inline, on SQLite) or in a group with others."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from support import db_rows, fund, ledger_consistent, run_cli

from cocoon_platform.accounts.keys import hash_api_key, new_api_key
from cocoon_platform.billing.store import BillingStore, Reservation, Settlement, batching, create_billing_store
from cocoon_platform.billing.store import sqlite as sqlite_store
from cocoon_platform.config import Settings
from cocoon_platform.proxy.handler import new_request_id

T = TypeVar("T")
FUNDS = 1_000_000


@pytest.fixture(scope="module")
def migrated(database_url: str) -> str:
    result = run_cli(["migrate"], database_url)
    assert result.returncode == 0, result.stderr
    return database_url


def new_key(database_url: str, nanoton: int = FUNDS) -> tuple[str, int]:
    """A funded account with one key; returns the key and the account id."""
    code = uuid.uuid4().hex[:16].upper()
    db_rows(
        database_url,
        "INSERT INTO accounts (deposit_code, balance_nanoton, reserved_nanoton, created_at) "
        "VALUES (:code, 0, 0, CURRENT_TIMESTAMP)",
        {"code": code},
    )
    account_id = int(db_rows(database_url, "SELECT id FROM accounts WHERE deposit_code = :code", {"code": code})[0][0])  # type: ignore[call-overload]
    key = new_api_key()
    db_rows(
        database_url,
        "INSERT INTO api_keys (account_id, key_hash, prefix, created_at) "
        "VALUES (:account, :hash, 'ck_test', CURRENT_TIMESTAMP)",
        {"account": account_id, "hash": hash_api_key(key)},
    )
    if nanoton:
        fund(database_url, key, nanoton)
    return key, account_id


def funds(database_url: str, account_id: int) -> tuple[int, int]:
    row = db_rows(
        database_url, "SELECT balance_nanoton, reserved_nanoton FROM accounts WHERE id = :id", {"id": account_id}
    )[0]
    return int(row[0]), int(row[1])  # type: ignore[call-overload]


def settlement(reservation: Reservation, charge: int) -> Settlement:
    return Settlement(reservation, charge, reservation.hold_id, "m", "chat", 10, 0, 20, 0, "ok", 200, False, 3)


def with_store(database_url: str, scenario: Callable[[BillingStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = create_billing_store(Settings(database_url=database_url))
        stop = asyncio.Event()
        committer = asyncio.create_task(store.run(stop))
        try:
            return await scenario(store)
        finally:
            stop.set()
            await committer

    return asyncio.run(run())


async def reserve(store: BillingStore, key: str, amount: int, request_id: str | None = None) -> Reservation | None:
    return await store.reserve(
        hash_api_key(key), amount, 0, 0, request_id or new_request_id(), 600, model="m", overdraft_min_credits=0
    )


def test_one_request_at_a_time_reserves_charges_and_releases(migrated: str) -> None:
    key, account = new_key(migrated)

    async def scenario(store: BillingStore) -> None:
        for charge in (700, 0, 55):
            held = await reserve(store, key, 10_000)
            assert held is not None and held.account_id == account
            assert (await asyncio.to_thread(funds, migrated, account))[1] == 10_000
            await store.settle(settlement(held, charge))

    with_store(migrated, scenario)
    assert funds(migrated, account) == (FUNDS - 755, 0)
    # A free request leaves a usage record but no ledger entry.
    assert db_rows(migrated, "SELECT COUNT(*) FROM usage_records WHERE account_id = :a", {"a": account}) == [(3,)]
    assert db_rows(
        migrated,
        "SELECT amount_nanoton FROM ledger_entries WHERE account_id = :a AND kind = 'usage' ORDER BY id",
        {"a": account},
    ) == [(-700,), (-55,)]
    assert ledger_consistent(migrated) == []


def test_concurrent_requests_on_many_accounts_keep_exact_books(migrated: str) -> None:
    accounts = [new_key(migrated) for _ in range(4)]

    async def one(store: BillingStore, key: str, charge: int) -> None:
        held = await reserve(store, key, 5_000)
        assert held is not None
        await asyncio.sleep(0)  # the upstream's turn: others reserve meanwhile
        await store.settle(settlement(held, charge))

    async def scenario(store: BillingStore) -> None:
        await asyncio.gather(*(one(store, key, 10 + i) for i in range(40) for key, _ in accounts))

    with_store(migrated, scenario)
    spent = sum(10 + i for i in range(40))
    for _, account in accounts:
        assert funds(migrated, account) == (FUNDS - spent, 0)
    assert db_rows(migrated, "SELECT COUNT(*) FROM holds") == [(0,)]
    assert ledger_consistent(migrated) == []


def test_reservations_in_one_batch_for_one_account_see_each_other(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=1_000)

    async def scenario(store: BillingStore) -> tuple[int, tuple[int, int], list[tuple[object, ...]]]:
        # Queued in the same turn, they go to the database together (on PostgreSQL, one call).
        granted = [r for r in await asyncio.gather(*(reserve(store, key, 400) for _ in range(3))) if r]
        held = await asyncio.to_thread(funds, migrated, account)
        holds = await asyncio.to_thread(
            db_rows, migrated, "SELECT SUM(amount_nanoton) FROM holds WHERE account_id = :a", {"a": account}
        )
        for reservation in granted:
            await store.settle(settlement(reservation, 0))  # other tests expect no open holds
        return len(granted), held, holds

    assert with_store(migrated, scenario) == (2, (1_000, 800), [(800,)])
    assert funds(migrated, account) == (1_000, 0)


def test_refusals_leave_nothing_held(migrated: str) -> None:
    key, account = new_key(migrated, nanoton=1_000)
    db_rows(migrated, "UPDATE api_keys SET revoked_at = CURRENT_TIMESTAMP WHERE account_id = :a", {"a": account})
    live_key, live_account = new_key(migrated, nanoton=1_000)

    async def scenario(store: BillingStore) -> list[Reservation | None]:
        return [
            await reserve(store, key, 10),
            await reserve(store, live_key, 1_001),
            await reserve(store, new_api_key(), 10),
        ]

    assert with_store(migrated, scenario) == [None, None, None]
    assert funds(migrated, account) == (1_000, 0)
    assert funds(migrated, live_account) == (1_000, 0)


def test_a_hold_the_sweeper_released_is_still_charged_once(migrated: str) -> None:
    key, account = new_key(migrated)

    async def scenario(store: BillingStore) -> None:
        held = await reserve(store, key, 9_000)
        assert held is not None
        # The sweeper got there first (the request outlived its hold).
        await asyncio.to_thread(db_rows, migrated, "DELETE FROM holds WHERE id = :id", {"id": held.hold_id})
        await asyncio.to_thread(
            db_rows,
            migrated,
            "UPDATE accounts SET reserved_nanoton = reserved_nanoton - 9000 WHERE id = :a",
            {"a": account},
        )
        await store.settle(settlement(held, 400))
        await store.settle(settlement(held, 400))  # applied again: counts as done, charges nothing more

    with_store(migrated, scenario)
    assert funds(migrated, account) == (FUNDS - 400, 0)
    assert db_rows(migrated, "SELECT COUNT(*) FROM usage_records WHERE account_id = :a", {"a": account}) == [(1,)]
    assert ledger_consistent(migrated) == []


def test_sqlite_wal_starts_over_under_continuous_writes(
    migrated: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a restart the WAL (and the index each process maps) grows for as long as writes go on."""
    if backend != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    monkeypatch.setattr(sqlite_store, "CHECKPOINT_SECONDS", 0.05)
    monkeypatch.setattr(sqlite_store, "RESTART_FRAMES", 64)
    keys = [new_key(migrated)[0] for _ in range(4)]
    wal = Path(migrated.split("///", 1)[1] + "-wal")
    page = int(db_rows(migrated, "PRAGMA page_size")[0][0]) + 24  # type: ignore[call-overload]  # a frame

    async def scenario(store: BillingStore) -> int:
        largest = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while loop.time() < deadline:
            for key in keys:
                held = await reserve(store, key, 100)
                assert held is not None
                await store.settle(settlement(held, 1))
            await asyncio.sleep(0)
            largest = max(largest, os.path.getsize(wal))
        return largest

    largest = with_store(migrated, scenario)
    written = int(db_rows(migrated, "SELECT COUNT(*) FROM usage_records")[0][0]) * 8  # type: ignore[call-overload]
    # The file only grows to its longest stretch between restarts (it is rewritten from the start,
    # not cut back); without restarts it would hold every frame written. Half is the bound: on a
    # loaded machine the checkpoints run less often against the writes (a quarter failed there).
    assert written * page > 2 * largest
    assert ledger_consistent(migrated) == []


def test_postgres_committers_keep_their_connections_and_replace_a_lost_one(migrated: str, backend: str) -> None:
    """Each committer reuses one connection; one the server drops is given back and replaced, and
    the batch that met the loss is retried on the new one: no charge is lost or applied twice."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL's committer connections")
    key, account = new_key(migrated)

    async def scenario(store: BillingStore) -> None:
        first = await reserve(store, key, 1_000)
        assert first is not None
        await store.settle(settlement(first, 100))
        held = dict(store._held)  # type: ignore[attr-defined]
        assert set(held) == {"reserve", "settle"}
        second = await reserve(store, key, 1_000)
        assert second is not None
        assert store._held == held  # type: ignore[attr-defined]  # the same connections, kept
        pids = [connection.get_server_pid() for connection in held.values()]
        await asyncio.to_thread(
            db_rows,
            migrated,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid IN (:a, :b)",
            {"a": pids[0], "b": pids[1]},
        )
        await store.settle(settlement(second, 200))
        third = await reserve(store, key, 1_000)
        assert third is not None
        await store.settle(settlement(third, 300))
        renewed = store._held  # type: ignore[attr-defined]
        assert all(renewed[lane] is not held[lane] and not renewed[lane].is_closed() for lane in held)

    with_store(migrated, scenario)
    assert funds(migrated, account) == (FUNDS - 600, 0)
    assert db_rows(migrated, "SELECT COUNT(*) FROM usage_records WHERE account_id = :a", {"a": account}) == [(3,)]
    assert ledger_consistent(migrated) == []


def test_a_settlement_that_fails_fails_its_caller_and_the_committer_goes_on(migrated: str) -> None:
    """A settlement the database refuses (a count no column holds) raises in its caller instead
    of leaving it waiting; the committer keeps serving the others."""
    key, account = new_key(migrated)

    async def scenario(store: BillingStore) -> str:
        bad, good = await reserve(store, key, 1_000), await reserve(store, key, 1_000)
        assert bad is not None and good is not None
        broken = Settlement(bad, 10, bad.hold_id, "m", "chat", 2**63, 0, 20, 0, "ok", 200, False, 3)
        with pytest.raises(Exception):  # noqa: B017 - the database's own error, whichever it is
            await asyncio.wait_for(store.settle(broken), 10)
        await asyncio.wait_for(store.settle(settlement(good, 250)), 10)
        later = await asyncio.wait_for(reserve(store, key, 1_000), 10)
        assert later is not None
        await asyncio.wait_for(store.settle(settlement(later, 50)), 10)
        return bad.hold_id

    open_hold = with_store(migrated, scenario)
    assert funds(migrated, account) == (FUNDS - 300, 1_000)  # the failed one's hold waits for the sweeper
    # Release it as the sweeper would: the database is shared, and other tests count open holds.
    db_rows(migrated, "DELETE FROM holds WHERE id = :id", {"id": open_hold})
    db_rows(migrated, "UPDATE accounts SET reserved_nanoton = reserved_nanoton - 1000 WHERE id = :a", {"a": account})
    assert ledger_consistent(migrated) == []


def test_a_batch_gives_up_on_a_database_that_stays_locked(
    migrated: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its patience a batch fails its callers with a clear error instead of waiting forever."""
    if backend != "sqlite":
        pytest.skip("another SQLite writer holds the lock")
    monkeypatch.setattr(batching, "BUSY_PATIENCE_SECONDS", 0.3)
    key, account = new_key(migrated)
    path = migrated.split("///", 1)[1]

    async def scenario(store: BillingStore) -> None:
        import sqlite3

        first = await reserve(store, key, 1_000)
        assert first is not None
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(RuntimeError, match="stayed unavailable"):
                await asyncio.wait_for(reserve(store, key, 1_000), 10)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await asyncio.wait_for(store.settle(settlement(first, 70)), 10)

    with_store(migrated, scenario)
    assert funds(migrated, account) == (FUNDS - 70, 0)
    assert ledger_consistent(migrated) == []


def test_postgres_reservation_applied_twice_reserves_once(migrated: str, backend: str) -> None:
    """A batch retried after a lost reply meets the holds it made: they are reported as granted,
    as they were, and nothing more is held (migration 0004)."""
    if backend != "postgresql":
        pytest.skip("only a PostgreSQL reply can be lost after its commit")
    key, account = new_key(migrated)
    request_id = new_request_id()

    async def scenario(store: BillingStore) -> None:
        first = await reserve(store, key, 1_000, request_id)
        again = await reserve(store, key, 1_000, request_id)
        assert first is not None and again == first
        assert await asyncio.to_thread(funds, migrated, account) == (FUNDS, 1_000)
        await store.settle(settlement(first, 100))

    with_store(migrated, scenario)
    assert funds(migrated, account) == (FUNDS - 100, 0)
    assert ledger_consistent(migrated) == []
