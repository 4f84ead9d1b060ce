"""Holds whose request died with its process are released here, off the hot path."""

from __future__ import annotations

import time

from typing import cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocoon_platform.db.models import Account, ApiKey, Hold

holds = cast(Table, Hold.__table__)
accounts = cast(Table, Account.__table__)
api_keys = cast(Table, ApiKey.__table__)


async def sweep_expired(engine: AsyncEngine, limit: int = 500) -> int:
    """Release holds past their expiry (their request died with its process); returns how many."""
    async with engine.begin() as conn:
        expired = (
            await conn.execute(
                select(holds.c.id).where(holds.c.expires_at < int(time.time())).order_by(holds.c.account_id).limit(limit)
            )
        ).scalars().all()
        if not expired:
            return 0
        # DELETE ... RETURNING only yields holds no settlement took first.
        rows = (
            await conn.execute(
                delete(holds).where(holds.c.id.in_(expired))
                .returning(holds.c.account_id, holds.c.amount_nanoton, holds.c.key_id)
            )
        ).all()
        per_account: dict[int, int] = {}
        per_key: dict[int, int] = {}
        for account_id, amount, key_id in rows:
            per_account[account_id] = per_account.get(account_id, 0) + amount
            if key_id is not None:  # the hold counted against its key's credit limit
                per_key[key_id] = per_key.get(key_id, 0) + amount
        for account_id, amount in sorted(per_account.items()):
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(reserved_nanoton=accounts.c.reserved_nanoton - amount)
            )
        for key_id, amount in sorted(per_key.items()):  # keys after accounts, as reservations lock them
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(limit_reserved_nanoton=api_keys.c.limit_reserved_nanoton - amount)
            )
        return len(rows)
