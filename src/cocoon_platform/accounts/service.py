"""Accounts and keys. Services flush; the request or command owns the transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.accounts.keys import (
    display_prefix,
    hash_api_key,
    new_api_key,
    new_deposit_code,
    normalise_deposit_code,
)
from cocoon_platform.accounts.limits import is_restricted, period_start
from cocoon_platform.billing.key_limits import set_credit_limit
from cocoon_platform.db.models import Account, ApiKey, UsageRecord


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who a live key belongs to, and whether it may manage keys."""

    key_id: int
    account_id: int
    restricted: bool = False
    expires_at: int | None = None  # unix seconds

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class KeySettings:
    """A key's restrictions (see accounts/limits.py); None leaves each one off."""

    credit_limit_nanoton: int | None = None
    limit_reset: str | None = None
    models: str | None = None  # stored form
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class KeySpending:
    """What a key spent in its limit's current period, and what its requests in flight hold
    against the limit (only a limited key counts those)."""

    spent_nanoton: int
    held_nanoton: int
    period_start: int  # unix seconds; 0: since the key was made


@dataclass(frozen=True, slots=True)
class IssuedKey:
    account: Account
    api_key: str  # plaintext: returned once to the caller, never stored or logged
    key_id: int


async def _insert_account(session: AsyncSession) -> Account:
    for _ in range(8):
        try:
            async with session.begin_nested():
                account = Account(deposit_code=new_deposit_code())
                session.add(account)
                await session.flush()
            return account
        except IntegrityError:
            continue  # a deposit-code collision (31^8 codes): draw again
    raise RuntimeError("could not draw a unique deposit code")


async def add_key(
    session: AsyncSession, account_id: int, name: str | None = None, settings: KeySettings | None = None
) -> tuple[str, int]:
    """Create a key for an account; returns (plaintext, key id)."""
    plaintext = new_api_key()
    settings = settings or KeySettings()
    key_id = await session.scalar(
        insert(ApiKey)
        .values(
            account_id=account_id,
            key_hash=hash_api_key(plaintext),
            prefix=display_prefix(plaintext),
            name=name,
            credit_limit_nanoton=settings.credit_limit_nanoton,
            limit_reset=settings.limit_reset,
            models=settings.models,
            expires_at=settings.expires_at,
            limit_period_start=period_start(settings.limit_reset, time.time()),
        )
        .returning(ApiKey.id)
    )
    assert key_id is not None
    return plaintext, int(key_id)


async def register(session: AsyncSession, name: str | None = None, settings: KeySettings | None = None) -> IssuedKey:
    """A new account with its first key."""
    account = await _insert_account(session)
    plaintext, key_id = await add_key(session, account.id, name, settings)
    await session.refresh(account)
    return IssuedKey(account=account, api_key=plaintext, key_id=key_id)


async def identify(session: AsyncSession, key_hash: bytes) -> KeyIdentity | None:
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.account_id, ApiKey.credit_limit_nanoton, ApiKey.models, ApiKey.expires_at).where(
                ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
            )
        )
    ).first()
    if row is None:
        return None
    return KeyIdentity(
        key_id=row.id,
        account_id=row.account_id,
        expires_at=row.expires_at,
        restricted=is_restricted(row.credit_limit_nanoton, row.models, row.expires_at),
    )


def low_balance(account: Account) -> bool:
    """Whether the balance is below the user's own low-balance threshold (none set: never)."""
    return account.low_balance_nanoton is not None and account.balance_nanoton < account.low_balance_nanoton


async def account_by_key(session: AsyncSession, api_key: str) -> Account | None:
    """The account of a live, unexpired key."""
    identity = await identify(session, hash_api_key(api_key))
    if identity is None or identity.expired(time.time()):
        return None
    return await session.get(Account, identity.account_id)


async def account_by_code(session: AsyncSession, code: str) -> Account | None:
    return await session.scalar(select(Account).where(Account.deposit_code == normalise_deposit_code(code)))


async def list_keys(session: AsyncSession, account_id: int) -> list[ApiKey]:
    result = await session.scalars(
        select(ApiKey).where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None)).order_by(ApiKey.id)
    )
    return list(result)


async def revoke_key(session: AsyncSession, account_id: int, key_id: int) -> bool:
    """Revoke one of the account's keys; False when it has no such live key."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def keys_spending(session: AsyncSession, keys: list[ApiKey], now: float) -> dict[int, KeySpending]:
    """Each key's spending in its current period, by key id: a limited key's own counters; for the
    others, their charges from usage records (an unlimited key keeps no counters, so the hot path
    writes nothing for it), one grouped query per distinct period start."""
    spending: dict[int, KeySpending] = {}
    unlimited: dict[int, list[int]] = {}  # period start -> key ids
    account_ids = {key.account_id for key in keys}
    for key in keys:
        start = period_start(key.limit_reset, now)
        if key.credit_limit_nanoton is not None:
            spent = key.limit_spent_nanoton if key.limit_period_start >= start else 0
            spending[key.id] = KeySpending(spent, key.limit_reserved_nanoton, start)
        else:
            unlimited.setdefault(start, []).append(key.id)
    for start, key_ids in unlimited.items():
        charged = dict(
            (
                await session.execute(
                    select(UsageRecord.key_id, func.sum(UsageRecord.cost_nanoton))
                    .where(
                        UsageRecord.account_id.in_(account_ids),
                        UsageRecord.key_id.in_(key_ids),
                        UsageRecord.created_at >= start * 1000,
                    )
                    .group_by(UsageRecord.key_id)
                )
            )
            .tuples()
            .all()
        )
        for key_id in key_ids:
            spending[key_id] = KeySpending(int(charged.get(key_id) or 0), 0, start)
    return spending


async def live_key(session: AsyncSession, account_id: int, key_id: int) -> ApiKey | None:
    return await session.scalar(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
    )


async def change_key(session: AsyncSession, key: ApiKey, changes: dict[str, Any]) -> ApiKey:
    """Apply `changes` (name and KeySettings fields; None clears a restriction) to a live key.

    A limit or period that changes is set by the billing package (billing/key_limits.py): the
    limit counts what the key already spent in the period and what its requests in flight hold.
    """
    values = dict(changes)
    if "credit_limit_nanoton" in values or "limit_reset" in values:
        await set_credit_limit(
            session,
            key,
            values.pop("credit_limit_nanoton", key.credit_limit_nanoton),
            values.pop("limit_reset", key.limit_reset),
        )
    if values:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(values))
    await session.refresh(key)
    return key
