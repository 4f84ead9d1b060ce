"""A key's credit-limit counters when its limit is set, changed or lifted (PATCH /v1/keys/{id},
`admin keys set`): the limit counts everything the key settles from the moment it is set.

Rules:
- While a key has a limit its counters are exact: `limit_spent_nanoton` is what its requests were
  charged in the current period (from its usage records when the limit is set, then moved by each
  settlement), `limit_reserved_nanoton` the sum of its holds that count against it
  (`holds.key_counted`), and every hold of the key counts.
- Setting a limit therefore counts the holds of the key's requests in flight (made while it had
  none): they are held against the limit at once, and their charges count when they settle, so
  the key can't spend past the new limit by what was in flight (a settlement that would is
  capped: billing/store/records.py, cap_charges). Lifting a limit uncounts them and zeroes the
  counters: an unlimited key keeps none.
- Locks: the account row first, as reservations, settlements and the sweeper take it. While it is
  held no hold of the account is made, settled or swept, so the counts are exact; a reservation
  that waited for it reads the new limit, and a settlement that waited finds its hold's new
  `key_counted` (PostgreSQL hands a statement the latest version of a row it waited for).
"""

from __future__ import annotations

import time

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.accounts.limits import period_start
from cocoon_platform.db.models import Account, ApiKey, Hold, UsageRecord


async def set_credit_limit(session: AsyncSession, key: ApiKey, limit: int | None, reset: str | None) -> None:
    """Give a key a credit limit (None lifts it) resetting so, and count it as the rules say."""
    await session.execute(select(Account.id).where(Account.id == key.account_id).with_for_update())
    limited = limit is not None
    await session.execute(
        update(Hold).where(Hold.key_id == key.id, Hold.key_counted != limited).values(key_counted=limited)
    )
    start = period_start(reset, time.time()) if limited else 0
    spent = held = 0
    if limited:
        spent = (
            await session.execute(
                select(func.coalesce(func.sum(UsageRecord.cost_nanoton), 0)).where(
                    UsageRecord.account_id == key.account_id,
                    UsageRecord.key_id == key.id,
                    UsageRecord.created_at >= start * 1000,
                )
            )
        ).scalar_one()
        held = (
            await session.execute(
                select(func.coalesce(func.sum(Hold.amount_nanoton), 0)).where(Hold.key_id == key.id, Hold.key_counted)
            )
        ).scalar_one()
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key.id)
        .values(
            credit_limit_nanoton=limit,
            limit_reset=reset,
            limit_spent_nanoton=int(spent),
            limit_reserved_nanoton=int(held),
            limit_period_start=start,
        )
    )
