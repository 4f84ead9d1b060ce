"""Holds whose request died with its process are released here, off the hot path."""

from __future__ import annotations

import time
from typing import cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cocoon_platform.billing.cost import UsageStatus
from cocoon_platform.db.models import Account, ApiKey, Hold, UsageRecord
from cocoon_platform.ops import metrics

holds = cast(Table, Hold.__table__)
accounts = cast(Table, Account.__table__)
api_keys = cast(Table, ApiKey.__table__)
usage_records = cast(Table, UsageRecord.__table__)


async def sweep_expired(engine: AsyncEngine, limit: int = 500) -> int:
    """Release holds past their expiry (their request died with its process); returns how many.

    A request never outlives its hold (the handler's deadline ends first), so an expired hold was
    left by a platform process that died mid-request. That is the operator's loss, not the user's
    (ruling 1 of #23): the hold is released at 0 and recorded as a usage record with status
    `orphaned` and the amount it reserved, for `admin reconcile` and the `cocoon_orphaned_*`
    metrics. The record's request id is the hold's with an `orphan_` prefix, so that a settlement
    arriving after all is still recorded (and charged) under its own id."""
    async with engine.begin() as conn:
        expired = (
            await conn.execute(
                select(holds.c.id, holds.c.account_id)
                .where(holds.c.expires_at < int(time.time()))
                .order_by(holds.c.account_id)
                .limit(limit)
            )
        ).all()
        if not expired:
            return 0
        # The accounts first, in id order, as reservations, settlements and limit changes lock them
        # (billing/key_limits.py): then the holds, then the keys.
        await conn.execute(
            select(accounts.c.id)
            .where(accounts.c.id.in_({account_id for _, account_id in expired}))
            .order_by(accounts.c.id)
            .with_for_update()
        )
        # DELETE ... RETURNING only yields holds no settlement took first.
        rows = (
            await conn.execute(
                delete(holds)
                .where(holds.c.id.in_([hold_id for hold_id, _ in expired]))
                .returning(holds.c.id, holds.c.account_id, holds.c.amount_nanoton, holds.c.key_id, holds.c.key_counted)
            )
        ).all()
        if not rows:
            return 0
        per_account: dict[int, int] = {}
        per_key: dict[int, int] = {}
        for _, account_id, amount, key_id, key_counted in rows:
            per_account[account_id] = per_account.get(account_id, 0) + amount
            if key_counted:  # the hold counted against its key's credit limit
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
        now_ms = int(time.time() * 1000)
        await conn.execute(
            insert(usage_records),
            [
                {
                    "request_id": orphan_id(hold_id),
                    "account_id": account_id,
                    "key_id": key_id or 0,
                    "model": "",
                    "endpoint": "",
                    "prompt_tokens": 0,
                    "cached_tokens": 0,
                    "completion_tokens": 0,
                    "reasoning_tokens": 0,
                    "cost_nanoton": 0,
                    "status": UsageStatus.ORPHANED.value,
                    "http_status": 0,
                    "estimated": False,
                    "duration_ms": 0,
                    "created_at": now_ms,
                    "reserved_nanoton": amount,
                }
                for hold_id, account_id, amount, key_id, _ in rows
            ],
        )
    metrics.ORPHANED_HOLDS.inc(len(rows))
    metrics.ORPHANED_NANOTON.inc(sum(amount for _, _, amount, _, _ in rows))
    return len(rows)


def orphan_id(hold_id: str) -> str:
    """The orphaned record's request id: the hold's time and random part (unique) after `orphan_`
    instead of its kind's prefix, within the id column's 40 characters."""
    return "orphan_" + hold_id.rsplit("_", 1)[-1].rsplit("-", 1)[-1][-31:]
