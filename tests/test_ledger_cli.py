"""The admin CLI and the ledger invariant, on both databases."""

from __future__ import annotations

import asyncio

from conftest import ServerFactory
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine
from support import run_cli

from cocoon_platform.db.models import Account, LedgerEntry


def balances_and_sums(database_url: str) -> list[tuple[int, int, int]]:
    async def read() -> list[tuple[int, int, int]]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                sums = (
                    select(LedgerEntry.account_id, func.sum(LedgerEntry.amount_nanoton).label("total"))
                    .group_by(LedgerEntry.account_id)
                    .subquery()
                )
                rows = await conn.execute(
                    select(Account.id, Account.balance_nanoton, func.coalesce(sums.c.total, 0)).outerjoin(
                        sums, sums.c.account_id == Account.id
                    )
                )
                return [(r[0], r[1], int(r[2])) for r in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_credits_and_debits_keep_the_ledger_invariant(server_factory: ServerFactory, database_url: str) -> None:
    server = server_factory()
    with server.client() as client:
        body = client.post("/api/register").json()
    code = body["deposit_code"]
    steps = [("credit", "2"), ("debit", "0.5"), ("credit", "0.000000001"), ("debit", "1.000000001")]
    for verb, amount in steps:
        result = run_cli(
            ["admin", verb, "--deposit-code", code.lower(), "--amount-ton", amount, "--reason", "t"], database_url
        )
        assert result.returncode == 0, result.stderr
    assert "0.500000000 TON" in result.stdout
    # Overdrawing by debit is refused and changes nothing.
    refused = run_cli(["admin", "debit", "--deposit-code", code, "--amount-ton", "0.6", "--reason", "t"], database_url)
    assert refused.returncode != 0 and "available" in refused.stderr
    with server.client() as client:
        assert (
            client.get("/v1/balance", headers={"Authorization": f"Bearer {body['api_key']}"}).json()["balance_nanoton"]
            == 500_000_000
        )
    for account_id, balance, total in balances_and_sums(database_url):
        assert balance == total, f"account {account_id}: balance {balance} != ledger {total}"


def test_cli_errors_are_clear(database_url: str) -> None:
    wrong_key = run_cli(
        ["admin", "credit", "--api-key-stdin", "--amount-ton", "1", "--reason", "x"], database_url, stdin="ck_nobody\n"
    )
    assert wrong_key.returncode != 0 and "no account has that API key" in wrong_key.stderr
    wrong_code = run_cli(
        ["admin", "credit", "--deposit-code", "ZZZZZZZZ", "--amount-ton", "1", "--reason", "x"], database_url
    )
    assert wrong_code.returncode != 0 and "ZZZZZZZZ" in wrong_code.stderr
    too_precise = run_cli(
        ["admin", "credit", "--deposit-code", "ZZZZZZZZ", "--amount-ton", "0.0000000001", "--reason", "x"], database_url
    )
    assert too_precise.returncode != 0 and "9 decimal places" in too_precise.stderr
    negative = run_cli(
        ["admin", "credit", "--deposit-code", "ZZZZZZZZ", "--amount-ton", "-1", "--reason", "x"], database_url
    )
    assert negative.returncode != 0


def test_bad_settings_are_reported_at_start(database_url: str) -> None:
    for setting, value, words in [
        ("COCOON_MARKUP_MULTIPLIER", "-1", "MARKUP_MULTIPLIER"),
        ("COCOON_DEPOSIT_WALLET", "EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sx", "DEPOSIT_WALLET"),
        ("COCOON_DATABASE_URL", "not a url", "DATABASE_URL"),
        ("COCOON_DATABASE_URL", "mysql://x/y", "unsupported database"),
    ]:
        result = run_cli(["migrate"], database_url, {setting: value})
        assert result.returncode != 0, setting
        assert "invalid configuration" in result.stderr and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_key_is_read_from_stdin_never_from_the_command_line(server_factory: ServerFactory, database_url: str) -> None:
    """Seen: `admin credit --api-key ck_...` put the key where ps and the shell's history show it."""
    with server_factory().client() as client:
        key = client.post("/api/register").json()["api_key"]
    on_the_line = run_cli(["admin", "credit", "--api-key", key, "--amount-ton", "1", "--reason", "x"], database_url)
    assert on_the_line.returncode != 0 and "--api-key-stdin" in on_the_line.stderr
    piped = run_cli(
        ["admin", "credit", "--api-key-stdin", "--amount-ton", "0.25", "--reason", "x"], database_url, stdin=key + "\n"
    )
    assert piped.returncode == 0 and "0.250000000 TON" in piped.stdout, piped.stderr
    empty = run_cli(["admin", "debit", "--api-key-stdin", "--amount-ton", "0.1", "--reason", "x"], database_url)
    assert empty.returncode != 0 and "standard input has no key" in empty.stderr
    for command in ("credit", "debit"):
        usage = run_cli(["admin", command, "--help"], database_url).stdout
        assert "--api-key-stdin" in usage and "never taken as an argument" in usage.replace("\n", " ").replace(
            "  ", " "
        )
        assert "--api-key " not in usage.replace("--api-key-stdin", "")
