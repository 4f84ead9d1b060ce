"""Money has one home: nothing outside the billing package writes a balance, a hold or the
ledger (docs/money.md lists each movement). The search is checked against the billing package
itself, so a pattern that stopped matching the statements it looks for would fail here too.
An operator's debit is one guarded statement: tested racing a reservation, on both databases."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from cocoon_platform.billing.ledger import NotEnoughAvailable, operator_credit, operator_debit
from cocoon_platform.config import Settings
from cocoon_platform.db.migrate import upgrade_head
from cocoon_platform.db.models import Account, LedgerEntry

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "cocoon_platform"
BILLING = PACKAGE / "billing"
# The schema declares the tables; migrations create them and the PostgreSQL functions the
# billing store calls (docs/money.md names each).
NOT_CODE = (PACKAGE / "db" / "models.py", PACKAGE / "migrations")

WRITES = {
    # `SET balance_nanoton = ...`, `account.balance_nanoton = ...`, `Account(balance_nanoton=...)`,
    # `.values(balance_nanoton=...)` (not a response field filled from the column, which reads it)
    "a balance column assigned": re.compile(
        r"\bSET\s+(balance|reserved|credited)_nanoton\b|\.(balance|reserved|credited)_nanoton\s*=(?!=)"
        r"|\b(Account|values)\([^)]*\b(balance|reserved|credited)_nanoton\s*=",
        re.IGNORECASE,
    ),
    # `reserved_nanoton = reserved_nanoton - ...` (SQL, any line of a SET list), `Account.balance_nanoton + ...`
    "a balance column moved": re.compile(
        r"\b(balance|reserved|credited)_nanoton\s*=\s*(\w+\.)?\1_nanoton\s*[-+]"
        r"|\bAccount\.(balance|reserved|credited)_nanoton\s*[-+]"
    ),
    "a ledger entry written": re.compile(
        r"(?-i:(?<!class )\bLedgerEntry\()|(insert|update|delete)\(\s*LedgerEntry\b"
        r"|\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+ledger_entries\b",
        re.IGNORECASE,
    ),
    "a hold written": re.compile(
        r"(?-i:(?<!class )\bHold\()|(insert|update|delete)\(\s*(Hold|holds)\b"
        r"|\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+holds\b",
        re.IGNORECASE,
    ),
}


def writes_in(paths: list[Path]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {name: [] for name in WRITES}
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name, pattern in WRITES.items():
                if pattern.search(line):
                    found[name].append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    return found


def sources(inside_billing: bool) -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.is_relative_to(BILLING) == inside_billing
        and not any(path == skip or path.is_relative_to(skip) for skip in NOT_CODE)
    ]


def test_no_money_is_written_outside_the_billing_package() -> None:
    outside = writes_in(sources(inside_billing=False))
    assert outside == {name: [] for name in WRITES}, outside


def test_the_search_finds_the_billing_packages_own_writes() -> None:
    inside = writes_in(sources(inside_billing=True))
    missing = [name for name, lines in inside.items() if not lines]
    assert missing == [], f"no match in billing/ for: {missing}"


@pytest.fixture
def migrated(database_url: str) -> str:
    upgrade_head(Settings(database_url=database_url, _env_file=None))  # type: ignore[call-arg]
    return database_url


def test_a_debit_never_takes_what_a_hold_reserved(migrated: str, backend: str) -> None:
    """A debit racing a reservation: the reservation commits while the debit waits for the row,
    and the debit is judged on the committed row (a read-then-write debit would pass here)."""

    async def scenario() -> None:
        engine = create_async_engine(migrated)
        try:
            async with AsyncSession(engine) as session:
                account_id = (
                    await session.execute(
                        insert(Account).values(deposit_code=secrets.token_hex(6).upper()).returning(Account.id)
                    )
                ).scalar_one()
                await operator_credit(session, account_id, 1000, "funds")
                await session.commit()
            async with engine.connect() as reserving, AsyncSession(engine) as operator:
                await reserving.begin()
                await reserving.execute(
                    update(Account)
                    .where(Account.id == account_id)
                    .values(reserved_nanoton=Account.reserved_nanoton + 600)
                )
                debit = asyncio.create_task(operator_debit(operator, account_id, 500, "race"))
                if backend == "postgresql":
                    await waiting_for_a_row_lock(engine)
                await reserving.commit()
                with pytest.raises(NotEnoughAvailable) as refused:
                    await debit
                assert refused.value.available == 400
                await operator.rollback()
                assert await operator_debit(operator, account_id, 400, "all that is free") == 600
                await operator.commit()
            async with engine.begin() as conn:
                entries = (
                    await conn.execute(
                        select(LedgerEntry.kind, LedgerEntry.amount_nanoton)
                        .where(LedgerEntry.account_id == account_id)
                        .order_by(LedgerEntry.id)
                    )
                ).all()
                # The request in flight ends: its hold goes (the database is shared with other tests).
                await conn.execute(
                    update(Account)
                    .where(Account.id == account_id)
                    .values(reserved_nanoton=Account.reserved_nanoton - 600)
                )
            assert [(kind, amount) for kind, amount in entries] == [("admin_credit", 1000), ("admin_debit", -400)]
        finally:
            await engine.dispose()

    asyncio.run(scenario())


async def waiting_for_a_row_lock(engine: AsyncEngine) -> None:
    """Until a session of this database waits for a lock (the debit, on the reserved row)."""
    async with engine.connect() as conn:
        for _ in range(3000):
            waiting = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
            if waiting:
                return
            await asyncio.sleep(0.01)
    raise AssertionError("the debit never waited for the reserved row")
