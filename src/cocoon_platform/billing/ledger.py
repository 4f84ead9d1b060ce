"""The ledger: the only way a balance changes.

Each change is an append-only entry with a unique reference, written in the caller's
transaction together with the balance update, so a balance always equals the sum of its
entries and a reference can never be applied twice. Every kind of money movement, the function
and statement that make it, and the test that proves it are listed in docs/money.md.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.db.models import Account, LedgerEntry


class EntryKind(StrEnum):
    DEPOSIT = "deposit"
    USAGE = "usage"
    ADMIN_CREDIT = "admin_credit"
    ADMIN_DEBIT = "admin_debit"


# The money put into an account: these entries also count in its lifetime credits.
CREDIT_KINDS = frozenset({EntryKind.DEPOSIT, EntryKind.ADMIN_CREDIT})


class NotEnoughAvailable(Exception):
    """A debit larger than what the account has outside its holds; nothing was changed."""

    def __init__(self, available: int) -> None:
        super().__init__(f"{available} nanoTON available")
        self.available = available


async def post_entry(
    session: AsyncSession,
    account_id: int,
    amount_nanoton: int,
    kind: EntryKind,
    reference: str,
    memo: str | None = None,
) -> int:
    """Move `amount_nanoton` (signed) on an account; returns the new balance.

    Raises IntegrityError when `reference` was already used; the caller's transaction
    must then roll back, which is what makes every posting exactly-once. A deposit or an
    operator's credit also counts in the account's lifetime credits.
    """
    new_balance = await _move(session, account_id, amount_nanoton, kind, reference, memo)
    if new_balance is None:
        raise LookupError(f"no account {account_id}")
    return new_balance


async def operator_credit(session: AsyncSession, account_id: int, amount_nanoton: int, reason: str) -> int:
    """An operator's credit of a positive amount (`admin credit`); returns the new balance."""
    if amount_nanoton <= 0:
        raise ValueError("a credit is a positive amount")
    kind = EntryKind.ADMIN_CREDIT
    return await post_entry(session, account_id, amount_nanoton, kind, _operator_reference(kind), reason)


async def operator_debit(session: AsyncSession, account_id: int, amount_nanoton: int, reason: str) -> int:
    """An operator's debit of a positive amount (`admin debit`); returns the new balance.

    One guarded statement: the balance drops only if what is left outside the account's holds
    covers the amount, judged on the row as it is when the update takes it. So a debit can never
    take money that a request in flight has reserved, however the two interleave (a read of the
    balance followed by a write could). Raises NotEnoughAvailable, changing nothing, otherwise."""
    if amount_nanoton <= 0:
        raise ValueError("a debit is a positive amount")
    kind = EntryKind.ADMIN_DEBIT
    guard = Account.balance_nanoton - Account.reserved_nanoton >= amount_nanoton
    new_balance = await _move(session, account_id, -amount_nanoton, kind, _operator_reference(kind), reason, guard)
    if new_balance is not None:
        return new_balance
    row = (
        await session.execute(select(Account.balance_nanoton, Account.reserved_nanoton).where(Account.id == account_id))
    ).one_or_none()
    if row is None:
        raise LookupError(f"no account {account_id}")
    raise NotEnoughAvailable(row.balance_nanoton - row.reserved_nanoton)


def _operator_reference(kind: EntryKind) -> str:
    return f"{kind.value}:{uuid.uuid4()}"


async def _move(
    session: AsyncSession,
    account_id: int,
    amount_nanoton: int,
    kind: EntryKind,
    reference: str,
    memo: str | None,
    guard: ColumnElement[bool] | None = None,
) -> int | None:
    """The balance update and its ledger entry; None (and nothing written) when no row matched."""
    values: dict[str, Any] = {"balance_nanoton": Account.balance_nanoton + amount_nanoton}
    if kind in CREDIT_KINDS and amount_nanoton > 0:
        values["credited_nanoton"] = Account.credited_nanoton + amount_nanoton
    statement = update(Account).where(Account.id == account_id)
    if guard is not None:
        statement = statement.where(guard)
    new_balance = await session.scalar(statement.values(values).returning(Account.balance_nanoton))
    if new_balance is None:
        return None
    await session.execute(
        insert(LedgerEntry).values(
            account_id=account_id,
            kind=kind.value,
            amount_nanoton=amount_nanoton,
            reference=reference,
            memo=memo,
        )
    )
    return int(new_balance)
