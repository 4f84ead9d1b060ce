"""`admin reconcile`: the ledger and reservation invariants, checked account by account."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

BALANCE_VS_LEDGER = text("""
SELECT a.id, a.balance_nanoton, COALESCE(l.total, 0)
  FROM accounts a
  LEFT JOIN (SELECT account_id, SUM(amount_nanoton) AS total FROM ledger_entries GROUP BY account_id) l
         ON l.account_id = a.id
 WHERE a.balance_nanoton != COALESCE(l.total, 0)""")

RESERVED_VS_HOLDS = text("""
SELECT a.id, a.reserved_nanoton, COALESCE(h.total, 0)
  FROM accounts a
  LEFT JOIN (SELECT account_id, SUM(amount_nanoton) AS total FROM holds GROUP BY account_id) h
         ON h.account_id = a.id
 WHERE a.reserved_nanoton != COALESCE(h.total, 0) OR a.reserved_nanoton < 0""")

# A key's limit counts the holds that count against it (billing/key_limits.py).
KEY_HELD_VS_HOLDS = text("""
SELECT k.id, k.limit_reserved_nanoton, COALESCE(h.total, 0)
  FROM api_keys k
  LEFT JOIN (SELECT key_id, SUM(amount_nanoton) AS total FROM holds WHERE key_counted GROUP BY key_id) h
         ON h.key_id = k.id
 WHERE k.limit_reserved_nanoton != COALESCE(h.total, 0) OR k.limit_reserved_nanoton < 0""")

# While a key has a limit every hold of the key counts against it, and none does otherwise.
HOLDS_VS_KEY_LIMITS = text("""
SELECT h.id, k.id, h.key_counted
  FROM holds h JOIN api_keys k ON k.id = h.key_id
 WHERE h.key_counted != (k.credit_limit_nanoton IS NOT NULL)""")

ORPHANED = text("SELECT COUNT(*), COALESCE(SUM(reserved_nanoton), 0) FROM usage_records WHERE status = 'orphaned'")

CAPPED = text("SELECT COUNT(*), COALESCE(SUM(capped_nanoton), 0) FROM usage_records WHERE capped_nanoton IS NOT NULL")

STALE_HOLDS = text("SELECT id, account_id, amount_nanoton, expires_at FROM holds WHERE expires_at < :now")


async def find_discrepancies(engine: AsyncEngine) -> list[str]:
    """Every broken invariant, one line each; empty when the books are sound."""
    problems = []
    async with engine.connect() as conn:
        for account_id, balance, total in await conn.execute(BALANCE_VS_LEDGER):
            problems.append(f"account {account_id}: balance {balance} != sum of ledger entries {total}")
        for account_id, reserved, total in await conn.execute(RESERVED_VS_HOLDS):
            problems.append(f"account {account_id}: reserved {reserved} != sum of open holds {total}")
        for key_id, held, total in await conn.execute(KEY_HELD_VS_HOLDS):
            problems.append(f"key {key_id}: held against its limit {held} != sum of its open holds {total}")
        for hold_id, key_id, counted in await conn.execute(HOLDS_VS_KEY_LIMITS):
            problems.append(
                f"key {key_id}: hold {hold_id} {'counts' if counted else 'does not count'} against a limit "
                f"the key {'does not have' if counted else 'has'}"
            )
        for hold_id, account_id, amount, expires_at in await conn.execute(STALE_HOLDS, {"now": int(time.time())}):
            problems.append(
                f"account {account_id}: hold {hold_id} of {amount} expired at {expires_at} and was not released"
            )
    return problems


async def orphaned_holds(engine: AsyncEngine) -> tuple[int, int]:
    """Holds the platform's own crashes left open, released at 0 by the sweeper, and the nanoTON
    they reserved (ruling 1 of #23): not a discrepancy, what crashes cost the operator."""
    async with engine.connect() as conn:
        count, reserved = (await conn.execute(ORPHANED)).one()
    return int(count), int(reserved)


async def capped_charges(engine: AsyncEngine) -> tuple[int, int]:
    """Settlements charged less than their requests cost (the network reported more than the
    hold's worst case, and charging it all would have taken an account without the overdraft
    under 0 or a key past its limit), and the nanoTON left uncharged: the operator's loss."""
    async with engine.connect() as conn:
        count, uncharged = (await conn.execute(CAPPED)).one()
    return int(count), int(uncharged)
