"""The deposit watcher against the toncenter fake (a real subprocess), on SQLite and PostgreSQL.

Every test ends with the books checked: each balance equals the sum of its ledger entries, and
the credited deposits and the ledger's deposit entries match one to one (no double credit).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from support import free_port, wait_http

from cocoon_platform.accounts.keys import new_deposit_code
from cocoon_platform.billing.ledger import EntryKind
from cocoon_platform.config import Settings
from cocoon_platform.db.engine import create_engine, create_sessionmaker
from cocoon_platform.db.migrate import upgrade_head
from cocoon_platform.db.models import Account, Deposit, LedgerEntry, WatcherCursor
from cocoon_platform.ton.address import TonAddress
from cocoon_platform.ton.deposits import (
    AlreadyCredited,
    DepositError,
    DepositOutcome,
    UnknownDeposit,
    UnknownDepositCode,
    assign_unmatched,
    list_deposits,
    record_transaction,
    record_transactions,
)
from cocoon_platform.ton.toncenter import parse_transaction
from cocoon_platform.ton.watcher import DepositWatcher
from cocoon_simulator.toncenter import DEFAULT_WALLET

NANO = 10**9
WALLET = TonAddress.parse(DEFAULT_WALLET)
Sessions = async_sessionmaker[AsyncSession]


# --- the fake --------------------------------------------------------------------------------


class Fake:
    """Blocking helpers for a running toncenter fake."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, payload: Any) -> Any:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def deposit(self, **fields: Any) -> list[str]:
        """Inject transactions (see DepositRequest); returns their hashes as lower hex."""
        return [hex_hash(tx) for tx in self.post("/_ton/deposits", fields)["transactions"]]

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/_ton/stats", timeout=10) as response:
            stats: dict[str, Any] = json.loads(response.read())
        return stats


def hex_hash(tx: dict[str, Any]) -> str:
    return base64.b64decode(tx["hash"]).hex()


@pytest.fixture(scope="session")
def fake_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m cocoon_simulator.toncenter`` for the whole run."""
    port = free_port()
    log = tmp_path_factory.mktemp("toncenter") / "fake.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cocoon_simulator.toncenter", "--port", str(port), "--wallet", DEFAULT_WALLET],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/_ton/stats", proc=process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def migrated(database_url: str) -> str:
    upgrade_head(Settings(database_url=database_url, _env_file=None))  # type: ignore[call-arg]
    return database_url


@pytest.fixture()
def fake(fake_url: str, migrated: str) -> Fake:
    """An empty chain and no cursor: each test's watcher starts from the wallet's beginning.

    Deposits of earlier tests stay in the table (their hashes never repeat), which is also
    what the books check runs over.
    """
    client = Fake(fake_url)
    client.post("/_ton/reset", {})

    async def forget_cursor() -> None:
        async with database(migrated) as sessions, sessions() as session, session.begin():
            await session.execute(delete(WatcherCursor))

    asyncio.run(forget_cursor())
    return client


# --- the database ----------------------------------------------------------------------------


@asynccontextmanager
async def database(database_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(Settings(database_url=database_url, _env_file=None))  # type: ignore[call-arg]
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


@dataclass
class Harness:
    """A database and an HTTP session to build watchers on, inside one event loop."""

    database_url: str
    fake_url: str
    sessions: Sessions
    http: aiohttp.ClientSession

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "toncenter_url": self.fake_url,
            "deposit_wallet": DEFAULT_WALLET,
            "deposit_poll_seconds": 0.05,
            "_env_file": None,
            **overrides,
        }
        return Settings(**values)

    def watcher(self, sessions: Sessions | None = None, page_size: int = 100, **settings: Any) -> DepositWatcher:
        return DepositWatcher(self.settings(**settings), sessions or self.sessions, self.http, page_size=page_size)


@asynccontextmanager
async def harness(database_url: str, fake: Fake) -> AsyncIterator[Harness]:
    async with database(database_url) as sessions, aiohttp.ClientSession() as http:
        yield Harness(database_url, fake.url, sessions, http)


async def new_accounts(sessions: Sessions, count: int) -> list[tuple[int, str]]:
    """(id, deposit code) of fresh accounts with a zero balance."""
    async with sessions() as session, session.begin():
        rows = await session.execute(
            insert(Account)
            .values(
                [
                    {"deposit_code": new_deposit_code(), "balance_nanoton": 0, "reserved_nanoton": 0}
                    for _ in range(count)
                ]
            )
            .returning(Account.id, Account.deposit_code)
        )
        return [(row.id, row.deposit_code) for row in rows]


async def balance_of(sessions: Sessions, account_id: int) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(Account.balance_nanoton).where(Account.id == account_id)) or 0)


async def deposit_rows(sessions: Sessions, hashes: list[str]) -> dict[str, Deposit]:
    async with sessions() as session:
        rows = await session.scalars(select(Deposit).where(Deposit.tx_hash.in_(hashes)))
        return {row.tx_hash: row for row in rows}


async def check_books(sessions: Sessions) -> None:
    """Balances equal ledger sums; credited deposits and deposit entries match one to one."""
    async with sessions() as session:
        totals = (
            select(LedgerEntry.account_id, func.sum(LedgerEntry.amount_nanoton).label("total"))
            .group_by(LedgerEntry.account_id)
            .subquery()
        )
        rows = await session.execute(
            select(Account.id, Account.balance_nanoton, func.coalesce(totals.c.total, 0)).outerjoin(
                totals, totals.c.account_id == Account.id
            )
        )
        for account_id, balance, total in rows:
            assert balance == int(total), f"account {account_id}: balance {balance} != ledger {total}"
        entries = await session.execute(
            select(LedgerEntry.reference, LedgerEntry.account_id, LedgerEntry.amount_nanoton).where(
                LedgerEntry.kind == EntryKind.DEPOSIT.value
            )
        )
        credited = await session.execute(
            select(Deposit.tx_hash, Deposit.account_id, Deposit.amount_nanoton).where(Deposit.status == "credited")
        )
        by_reference = {reference: (account, amount) for reference, account, amount in entries}
        expected = {f"deposit:{tx_hash}": (account, amount) for tx_hash, account, amount in credited}
        assert by_reference == expected


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- tests -----------------------------------------------------------------------------------


def test_a_backlog_is_read_page_by_page(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            (a, code_a), (b, code_b), (c, code_c) = await new_accounts(h.sessions, 3)
            # 2,500 transactions in four blocks; unmatched ones keep the ledger work (and the
            # test) short while still having to survive every page boundary.
            hashes = fake.deposit(comment=code_a, amount_nanoton=NANO, count=400)
            hashes += fake.deposit(comment="NOPE0000", count=1000)
            hashes += fake.deposit(comment=code_b.lower(), amount_nanoton=NANO // 2, count=600)
            hashes += fake.deposit(comment=f" {code_c}\n", amount_nanoton=2 * NANO, count=500)
            watcher = h.watcher(page_size=100)

            result = await watcher.poll_once()
            assert (result.credited, result.unmatched, result.duplicates) == (1500, 1000, 0)
            assert 25 <= result.pages <= 27 and not result.waiting_on_pending
            assert [await balance_of(h.sessions, x) for x in (a, b, c)] == [400 * NANO, 300 * NANO, 1000 * NANO]
            async with h.sessions() as session:
                cursor = await session.get(WatcherCursor, WALLET.to_raw())
            assert cursor is not None and cursor.tx_hash == hashes[-1]

            # Nothing new: one request, nothing written. The rescan re-reads what it already has.
            requests = fake.stats()["requests"]
            again = await watcher.poll_once()
            assert (again.pages, again.credited) == (0, 0) and fake.stats()["requests"] == requests + 1
            rescan = await watcher.rescan_once()
            assert rescan.credited == rescan.unmatched == 0 and rescan.duplicates >= 1000
            assert (watcher.credited, watcher.unmatched, watcher.polls) == (1500, 1000, 2)
            assert watcher.last_lag_seconds is not None and 0 <= watcher.last_lag_seconds < 60
            rows = await deposit_rows(h.sessions, hashes)
            assert len(rows) == 2500
            assert sum(row.status == "credited" for row in rows.values()) == 1500
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_only_clean_transfers_with_a_known_code_are_credited(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            [(account, code)] = await new_accounts(h.sessions, 1)
            credited = [
                *fake.deposit(comment=code, amount_nanoton=3 * NANO),
                *fake.deposit(comment=f"  {code.lower()} \t"),
                *fake.deposit(comment=f"\u200b{code}\ufeff"),
                *fake.deposit(comment=code, decoded=False),  # only the BoC says what it is
            ]
            unmatched = {
                "empty": fake.deposit(kind="none"),
                "binary": fake.deposit(kind="binary", comment=code),
                "encrypted": fake.deposit(kind="encrypted", comment=code),
                "text": fake.deposit(comment="NOPE0000") + fake.deposit(comment="A\u0000B"),
            }
            ignored = [
                *fake.deposit(comment=code, bounced=True),
                *fake.deposit(comment=code, aborted=True),
                *fake.deposit(comment=code, out_msgs=1),
                *fake.deposit(kind="jetton", comment=code),
                *fake.deposit(comment=code, amount_nanoton=0),
            ]
            result = await h.watcher().poll_once()
            assert (result.credited, result.unmatched, result.ignored) == (4, 5, 5)

            unmatched_hashes = [tx for hashes in unmatched.values() for tx in hashes]
            rows = await deposit_rows(h.sessions, credited + unmatched_hashes + ignored)
            assert {tx: rows[tx].status for tx in credited} == dict.fromkeys(credited, "credited")
            assert all(rows[tx].account_id == account for tx in credited)
            for kind, hashes in unmatched.items():
                for tx in hashes:
                    row = rows[tx]
                    assert (row.status, row.body_kind, row.account_id) == ("unmatched", kind, None)
                    assert row.amount_nanoton == NANO and row.sender is not None
            assert [rows[tx].comment for tx in unmatched["text"]] == ["NOPE0000", "A\\x00B"]
            assert not set(ignored) & set(rows)
            assert await balance_of(h.sessions, account) == 6 * NANO
            async with h.sessions() as session:
                entry = await session.scalar(
                    select(LedgerEntry).where(LedgerEntry.reference == f"deposit:{credited[0]}")
                )
            assert entry is not None and (entry.account_id, entry.kind, entry.amount_nanoton) == (
                account,
                "deposit",
                3 * NANO,
            )
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_another_accounts_transaction_is_ignored_and_a_repeat_is_a_duplicate(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            [(account, code)] = await new_accounts(h.sessions, 1)
            raw = fake.post("/_ton/deposits", {"comment": code})["transactions"][0]
            tx = parse_transaction(raw)
            stranger = dataclasses.replace(tx, account=TonAddress(0, bytes(32)).to_raw())
            async with h.sessions() as session, session.begin():
                assert await record_transaction(session, stranger, WALLET) is DepositOutcome.IGNORED
                # Any spelling of the wallet is the same wallet; a repeat is a duplicate.
                same = TonAddress.parse(WALLET.to_friendly(bounceable=False))
                assert await record_transactions(session, [tx, tx], same) == ["credited", "duplicate"]
                assert await record_transaction(session, tx, WALLET) is DepositOutcome.DUPLICATE
            assert await balance_of(h.sessions, account) == NANO
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_pending_holds_the_cursor_and_a_restart_resumes_from_it(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            [(account, code)] = await new_accounts(h.sessions, 1)
            before = fake.deposit(comment=code, count=150)
            [pending] = fake.deposit(comment=code, amount_nanoton=5 * NANO, finalised=False)
            fake.deposit(comment=code, count=150)
            first = h.watcher()
            result = await first.poll_once()
            assert result.credited == 150 and result.waiting_on_pending
            assert await balance_of(h.sessions, account) == 150 * NANO

            # A restart: a new process (engine, watcher) resumes from the stored cursor.
            async with database(migrated) as sessions:
                second = h.watcher(sessions)
                still = await second.poll_once()
                assert still.credited == 0 and still.waiting_on_pending and still.duplicates == 0
                async with sessions() as session:
                    cursor = await session.get(WatcherCursor, WALLET.to_raw())
                assert cursor is not None and cursor.tx_hash == before[-1]
                fake.post("/_ton/finalise", {})
                resumed = await second.poll_once()
                assert resumed.credited == 151 and not resumed.waiting_on_pending
            assert (await first.poll_once()).credited == 0
            assert await balance_of(h.sessions, account) == 305 * NANO
            assert (await deposit_rows(h.sessions, [pending]))[pending].status == "credited"
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_a_long_pending_transaction_is_passed_over_and_found_by_the_rescan(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            [(account, code)] = await new_accounts(h.sessions, 1)
            [pending] = fake.deposit(comment=code, amount_nanoton=7 * NANO, finalised=False)
            fake.deposit(comment=code, count=5)
            watcher = DepositWatcher(h.settings(), h.sessions, h.http, page_size=100, pending_timeout=0.3)
            assert (await watcher.poll_once()).waiting_on_pending
            await asyncio.sleep(0.35)
            passed = await watcher.poll_once()
            assert passed.credited == 5 and not passed.waiting_on_pending
            fake.post("/_ton/finalise", {})
            assert (await watcher.poll_once()).credited == 0  # the cursor is past it
            assert (await watcher.rescan_once()).credited == 1
            assert await balance_of(h.sessions, account) == 12 * NANO
            assert (await deposit_rows(h.sessions, [pending]))[pending].status == "credited"
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_the_rescan_records_what_the_poll_missed(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            [(account, code)] = await new_accounts(h.sessions, 1)
            hashes = fake.deposit(comment=code, count=300)
            latest = fake.post("/_ton/deposits", {"comment": code})["transactions"][0]
            # As if a provider had skipped everything before the latest transaction.
            async with h.sessions() as session, session.begin():
                session.add(WatcherCursor(wallet=WALLET.to_raw(), lt=int(latest["lt"]), tx_hash=hex_hash(latest)))
            watcher = h.watcher(page_size=100)
            assert (await watcher.poll_once()).credited == 0
            found = await watcher.rescan_once()
            assert found.credited == 301 and found.pages == 4
            assert await balance_of(h.sessions, account) == 301 * NANO
            assert len(await deposit_rows(h.sessions, hashes)) == 300
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_two_watchers_at_once_credit_each_deposit_once(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h, database(migrated) as other:
            accounts = await new_accounts(h.sessions, 4)
            watchers = [h.watcher(), h.watcher(other)]
            stop = asyncio.Event()
            tasks = [asyncio.create_task(w.run(stop)) for w in watchers]
            hashes: list[str] = []
            for _ in range(3):  # batches land while both are polling
                for _, code in accounts:
                    hashes += await asyncio.to_thread(fake.deposit, comment=code, count=40)
                hashes += await asyncio.to_thread(fake.deposit, comment="NOPE0000", count=5)
                await asyncio.sleep(0.05)

            async def all_recorded() -> bool:
                return len(await deposit_rows(h.sessions, hashes)) == len(hashes)

            await eventually(all_recorded)
            stop.set()
            await asyncio.gather(*tasks)
            assert sum(w.credited for w in watchers) == 480
            assert sum(w.unmatched for w in watchers) == 15
            assert [await balance_of(h.sessions, a) for a, _ in accounts] == [120 * NANO] * 4
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_provider_errors_and_rate_limits_are_waited_out(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            [(account, code)] = await new_accounts(h.sessions, 1)
            # The wallet in its non-bounceable form: the same wallet, the same cursor.
            watcher = h.watcher(deposit_wallet=WALLET.to_friendly(bounceable=False))
            stop = asyncio.Event()
            task = asyncio.create_task(watcher.run(stop))

            async def credited(amount: int) -> bool:
                return await balance_of(h.sessions, account) == amount

            fake.post("/_ton/faults", {"errors": 3})
            fake.deposit(comment=code)
            await eventually(lambda: credited(NANO))
            fake.post("/_ton/faults", {"rate_limit": 2, "retry_after": 0.2})
            fake.deposit(comment=code, count=50)
            await eventually(lambda: credited(51 * NANO))
            stop.set()
            await task
            stats = fake.stats()
            assert (stats["served_500"], stats["served_429"]) == (3, 2)
            assert (watcher.errors, watcher.rate_limited) == (5, 2)
            assert watcher.credited == 51
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_an_unmatched_deposit_is_assigned_once(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            [(account, code)] = await new_accounts(h.sessions, 1)
            [matched] = fake.deposit(comment=code)
            [lost] = fake.deposit(kind="binary", comment="hi", amount_nanoton=4 * NANO)
            await h.watcher().poll_once()
            async with h.sessions() as session:
                listed = [row.tx_hash for row in await list_deposits(session, unmatched_only=True)]
                everything = {row.tx_hash: row for row in await list_deposits(session)}
            assert lost in listed and matched not in listed
            assert everything[matched].deposit_code == code and everything[lost].deposit_code is None

            async def assign(tx_hash: str, to: str) -> int:
                async with h.sessions() as session:
                    balance = await assign_unmatched(session, tx_hash, to)
                    await session.commit()
                    return balance

            # Two operators at once: exactly one wins.
            outcomes = await asyncio.gather(assign(lost, code.lower()), assign(lost, code), return_exceptions=True)
            assert sorted(type(o).__name__ for o in outcomes) == ["AlreadyCredited", "int"]
            assert 5 * NANO in outcomes
            for tx_hash, to, error in [
                (lost, code, AlreadyCredited),
                (matched, code, AlreadyCredited),
                ("ab" * 32, code, UnknownDeposit),
                (lost, "NOPE0000", UnknownDepositCode),
                ("not a hash", code, DepositError),
            ]:
                with pytest.raises(error):
                    await assign(tx_hash, to)
            rows = await deposit_rows(h.sessions, [lost])
            assert (rows[lost].status, rows[lost].account_id) == ("credited", account)
            assert await balance_of(h.sessions, account) == 5 * NANO
            await check_books(h.sessions)

    asyncio.run(scenario())


def test_the_cursor_belongs_to_the_wallet_not_its_spelling(migrated: str, fake: Fake) -> None:
    async def scenario() -> None:
        async with harness(migrated, fake) as h:
            [(_, code)] = await new_accounts(h.sessions, 1)
            fake.deposit(comment=code, count=3)
            assert (await h.watcher(deposit_wallet=WALLET.to_raw()).poll_once()).credited == 3
            fake.deposit(comment=code, count=2)
            friendly = h.watcher(deposit_wallet=WALLET.to_friendly(url_safe=False))
            assert (await friendly.poll_once()).credited == 2
            await check_books(h.sessions)

    asyncio.run(scenario())
