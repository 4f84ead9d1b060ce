"""The ledger: the only way a balance changes.

Each change is an append-only entry with a unique reference, written in the caller's
transaction together with the balance update, so a balance always equals the sum of its
entries and a reference can never be applied twice.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.db.models import Account, LedgerEntry


class EntryKind(StrEnum):
    DEPOSIT = "deposit"
    USAGE = "usage"
    ADMIN_CREDIT = "admin_credit"
    ADMIN_DEBIT = "admin_debit"


# The money put into an account: these entries also count in its lifetime credits.
CREDIT_KINDS = frozenset({EntryKind.DEPOSIT, EntryKind.ADMIN_CREDIT})


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
    values = {"balance_nanoton": Account.balance_nanoton + amount_nanoton}
    if kind in CREDIT_KINDS and amount_nanoton > 0:
        values["credited_nanoton"] = Account.credited_nanoton + amount_nanoton
    new_balance = await session.scalar(
        update(Account).where(Account.id == account_id).values(values).returning(Account.balance_nanoton)
    )
    if new_balance is None:
        raise LookupError(f"no account {account_id}")
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
