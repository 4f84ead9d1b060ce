"""`cocoon-platform watch` and `admin deposits` as real processes, on SQLite and PostgreSQL.

The commands run through ``RUNNER``: the real ``cocoon_platform.cli.main``.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from support import Process, base_env
from test_deposit_watcher import (
    NANO,
    WALLET,
    Fake,
    balance_of,
    check_books,
    database,
    deposit_rows,
    eventually,
    fake,
    fake_url,
    harness,
    migrated,
    new_accounts,
)

from cocoon_platform.db.models import Deposit

__all__ = ["fake", "fake_url", "migrated"]  # fixtures shared with test_deposit_watcher

RUNNER = "import sys; from cocoon_platform.cli import main; sys.exit(main())"


POLL_SECONDS = 0.5


def command(*args: str) -> list[str]:
    return [sys.executable, "-c", RUNNER, *args]


def cocoon(database_url: str, *commands: list[str], settings: Mapping[str, str] | None = None) -> list[Result]:
    """Run the commands at once (each is a process start, the slow part) and wait for all."""
    env = base_env({"COCOON_DATABASE_URL": database_url, **(settings or {})})
    running = [
        subprocess.Popen(command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in commands
    ]
    results = []
    for process in running:
        stdout, stderr = process.communicate(timeout=60)
        results.append(Result(process.returncode, stdout, stderr))
    return results


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def start_watch(tmp_path: Path, name: str, database_url: str, fake_url: str, wallet: str) -> Process:
    env = base_env(
        {
            "COCOON_DATABASE_URL": database_url,
            "COCOON_TONCENTER_URL": fake_url,
            "COCOON_DEPOSIT_WALLET": wallet,
            "COCOON_DEPOSIT_POLL_SECONDS": str(POLL_SECONDS),
            "COCOON_LOG_LEVEL": "info",
        }
    )
    return Process(command("watch"), env, tmp_path / f"{name}.log").start()


def wait_watching(*processes: Process) -> None:
    """Until each has logged that it is watching (its signal handlers are in place by then)."""
    deadline = time.monotonic() + 30
    for process in processes:
        while "cocoon_platform.cli.deposits watching " not in process.log():
            assert process.proc is not None and process.proc.poll() is None, process.log()
            assert time.monotonic() < deadline, process.log()
            time.sleep(0.02)


def test_watch_processes_credit_each_deposit_once(migrated: str, fake: Fake, tmp_path: Path) -> None:
    (a, code_a), (b, code_b) = asyncio.run(_accounts(migrated, 2))
    # Two watchers at once, each given the wallet in another form.
    first = start_watch(tmp_path, "first", migrated, fake.url, WALLET.to_raw())
    second = start_watch(tmp_path, "second", migrated, fake.url, WALLET.to_friendly(bounceable=False))
    processes = [first, second]
    try:
        wait_watching(first, second)
        # A burst, and one watcher killed while it lands; a third one takes its place.
        hashes = fake.deposit(comment=code_a, count=200)
        hashes += fake.deposit(comment=code_b.lower(), count=200)
        hashes += fake.deposit(comment="NOPE0000", count=200)
        asyncio.run(_wait_for_rows(migrated, hashes[:1]))
        first.kill()
        third = start_watch(tmp_path, "third", migrated, fake.url, WALLET.to_friendly())
        processes.append(third)
        wait_watching(third)
        asyncio.run(_wait_for_rows(migrated, hashes))
        assert second.stop() == 0 and third.stop() == 0
        assert "Traceback" not in second.log() + third.log()
        # One watcher is active at a time: the survivor of the first two took over the lease.
        assert "lease acquired" in second.log() + third.log()
        assert "deposit watcher stopped" in second.log() + third.log()
    finally:
        for process in processes:
            process.kill()
    asyncio.run(_check(migrated, hashes, {a: 200 * NANO, b: 200 * NANO}))


def test_one_watch_process_credits_within_a_poll_and_stops_on_sigint(
    migrated: str, fake: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [(account, code)] = asyncio.run(_accounts(migrated, 1))
    watch = start_watch(tmp_path, "single", migrated, fake.url, WALLET.to_friendly())
    try:
        wait_watching(watch)
        latencies = asyncio.run(_measure_latency(migrated, fake, account, code, 8))
        with capsys.disabled():
            print(
                f"\ndeposit latency, one watcher polling every {POLL_SECONDS} s ({migrated.split(':')[0]}): "
                f"median {statistics.median(latencies):.3f} s, min {min(latencies):.3f} s, "
                f"max {max(latencies):.3f} s over {len(latencies)} deposits"
            )
        assert watch.stop(signal.SIGINT) == 0, watch.log()
        assert "deposit watcher stopped: 8 credited" in watch.log()
    finally:
        watch.kill()


async def _accounts(database_url: str, count: int) -> list[tuple[int, str]]:
    async with database(database_url) as sessions:
        return await new_accounts(sessions, count)


async def _measure_latency(database_url: str, fake: Fake, account: int, code: str, count: int) -> list[float]:
    """Seconds from a transaction appearing in the fake to the balance rising, one by one.

    Each deposit waits a random part of the poll interval first: right after a credit the
    watcher has just polled, so back-to-back deposits would all measure the worst case.
    """
    latencies: list[float] = []
    async with database(database_url) as sessions:
        for _ in range(count):
            before = await balance_of(sessions, account)
            await asyncio.sleep(random.uniform(0, POLL_SECONDS))
            started = time.monotonic()
            fake.deposit(comment=code)
            while await balance_of(sessions, account) == before:
                assert time.monotonic() - started < 20, "deposit not credited"
                await asyncio.sleep(0.005)
            latencies.append(time.monotonic() - started)
    return latencies


async def _wait_for_rows(database_url: str, hashes: list[str]) -> None:
    async with database(database_url) as sessions:

        async def recorded() -> bool:
            return len(await deposit_rows(sessions, hashes)) == len(hashes)

        await eventually(recorded, timeout=30)


async def _check(database_url: str, hashes: list[str], balances: dict[int, int]) -> None:
    async with database(database_url) as sessions:
        rows = await deposit_rows(sessions, hashes)
        assert len(rows) == len(hashes) == 600
        assert sum(row.status == "unmatched" for row in rows.values()) == 200
        assert {account: await balance_of(sessions, account) for account in balances} == balances
        await check_books(sessions)


def test_watch_refuses_invalid_settings(tmp_path: Path) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path}/unused.db"
    cases = [
        ("COCOON_DEPOSIT_WALLET", "EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sx"),
        ("COCOON_TONCENTER_URL", "toncenter.com"),  # Settings takes it; the watcher must not
    ]
    for name, value in cases:
        [result] = cocoon(database_url, ["watch"], settings={name: value})
        assert result.returncode == 1, result.stderr
        assert "invalid configuration" in result.stderr and name in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "unused.db").exists()


def test_admin_lists_and_assigns_deposits(migrated: str, fake: Fake) -> None:
    async def populate() -> tuple[int, str, list[str]]:
        async with harness(migrated, fake) as h:
            [(account, code)] = await new_accounts(h.sessions, 1)
            hashes = fake.deposit(comment=code, amount_nanoton=NANO)
            hashes += fake.deposit(kind="binary", comment="x", amount_nanoton=4 * NANO)
            hashes += fake.deposit(comment="\x1b]0;owned\x07NOPE")
            await h.watcher().poll_once()
            return account, code, hashes

    account, code, (credited, binary, hostile) = asyncio.run(populate())

    listed, unmatched, no_deposit, no_account = cocoon(
        migrated,
        ["admin", "deposits"],
        ["admin", "deposits", "--unmatched"],
        ["admin", "deposits", "assign", "ab" * 32, "--deposit-code", code],
        ["admin", "deposits", "assign", hostile, "--deposit-code", "NOPE0000"],
    )
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert lines[credited].split()[-2:] == ["credited", code]
    assert "1.000000000" in lines[credited] and lines[credited].split()[3].startswith("UQ")
    assert "<binary>" in lines[binary] and "4.000000000" in lines[binary]
    assert "\x1b" not in listed.stdout and "\\x1b" in lines[hostile]  # escaped, not obeyed
    assert unmatched.returncode == 0, unmatched.stderr
    assert binary in unmatched.stdout and hostile in unmatched.stdout and credited not in unmatched.stdout
    for refused, message in [(no_deposit, "no deposit"), (no_account, "no account has deposit code")]:
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr

    # Two operators assign the same deposit at once: one credit, one refusal.
    results = cocoon(
        migrated,
        ["admin", "deposits", "assign", binary, "--deposit-code", f" {code.lower()}"],
        ["admin", "deposits", "assign", binary, "--deposit-code", code],
    )
    [assigned] = [r for r in results if r.returncode == 0]
    [refused] = [r for r in results if r.returncode != 0]
    assert "balance 5.000000000 TON" in assigned.stdout
    assert refused.returncode == 1 and "already credited" in refused.stderr, refused.stderr

    async def check() -> None:
        async with database(migrated) as sessions:
            assert await balance_of(sessions, account) == 5 * NANO
            async with sessions() as session:
                status = await session.scalar(select(Deposit.status).where(Deposit.tx_hash == hostile))
            assert status == "unmatched"
            await check_books(sessions)

    asyncio.run(check())
