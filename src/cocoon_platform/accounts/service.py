"""Accounts and keys. Services flush; the request or command owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.accounts.keys import (
    display_prefix,
    hash_api_key,
    new_api_key,
    new_deposit_code,
    normalise_deposit_code,
)
from cocoon_platform.db.models import Account, ApiKey


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who a valid key belongs to."""

    key_id: int
    account_id: int


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


async def add_key(session: AsyncSession, account_id: int, name: str | None = None) -> tuple[str, int]:
    """Create a key for an account; returns (plaintext, key id)."""
    plaintext = new_api_key()
    key_id = await session.scalar(
        insert(ApiKey)
        .values(
            account_id=account_id,
            key_hash=hash_api_key(plaintext),
            prefix=display_prefix(plaintext),
            name=name,
        )
        .returning(ApiKey.id)
    )
    assert key_id is not None
    return plaintext, int(key_id)


async def register(session: AsyncSession, name: str | None = None) -> IssuedKey:
    """A new account with its first key."""
    account = await _insert_account(session)
    plaintext, key_id = await add_key(session, account.id, name)
    await session.refresh(account)
    return IssuedKey(account=account, api_key=plaintext, key_id=key_id)


async def identify(session: AsyncSession, key_hash: bytes) -> KeyIdentity | None:
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.account_id).where(
                ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
            )
        )
    ).first()
    return KeyIdentity(key_id=row.id, account_id=row.account_id) if row else None


async def account_by_key(session: AsyncSession, api_key: str) -> Account | None:
    identity = await identify(session, hash_api_key(api_key))
    return await session.get(Account, identity.account_id) if identity else None


async def account_by_code(session: AsyncSession, code: str) -> Account | None:
    return await session.scalar(
        select(Account).where(Account.deposit_code == normalise_deposit_code(code))
    )


async def list_keys(session: AsyncSession, account_id: int) -> list[ApiKey]:
    result = await session.scalars(
        select(ApiKey)
        .where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)
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
