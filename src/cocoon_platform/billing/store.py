"""Reservations and settlements of metered requests, with the fewest database round trips.

- A reservation is one guarded UPDATE of the account row (no read-then-write): it only
  succeeds when the key is live, the balance is at least the minimum, and the worst-case
  cost fits in balance - open holds + overdraft. A hold row records it with an expiry.
- A settlement releases the hold, posts the charge to the ledger and writes the usage
  record in one transaction. Settlements (and on SQLite, reservations) are group-committed:
  whatever queued while the previous batch ran goes into the next transaction, and each
  caller resumes only after the transaction holding its work has committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cocoon_platform.billing.ledger import EntryKind
from cocoon_platform.db.models import Account, ApiKey, Hold, LedgerEntry, UsageRecord, utcnow

logger = logging.getLogger("cocoon_platform.billing")

accounts = Account.__table__
holds = Hold.__table__
ledger = LedgerEntry.__table__
usage = UsageRecord.__table__
api_keys = ApiKey.__table__

# Parameters are cast so PostgreSQL can type them when preparing the statement.
GUARD = """balance_nanoton >= CAST(:min_balance AS BIGINT)
   AND balance_nanoton - reserved_nanoton - CAST(:amount AS BIGINT) >= -CAST(:overdraft AS BIGINT)"""

SQLITE_RESERVE = text(f"""
UPDATE accounts SET reserved_nanoton = reserved_nanoton + :amount
 WHERE id = (SELECT account_id FROM api_keys WHERE key_hash = :key_hash AND revoked_at IS NULL)
   AND {GUARD}
RETURNING id, (SELECT id FROM api_keys WHERE key_hash = :key_hash) AS key_id""")

SQLITE_HOLD = text("INSERT INTO holds (id, account_id, amount_nanoton, expires_at) "
                   "VALUES (:hold_id, :account_id, :amount, :expires_at)")

POSTGRES_RESERVE = text(f"""
WITH k AS (SELECT id, account_id FROM api_keys WHERE key_hash = :key_hash AND revoked_at IS NULL),
     a AS (UPDATE accounts SET reserved_nanoton = reserved_nanoton + CAST(:amount AS BIGINT)
             FROM k WHERE accounts.id = k.account_id AND {GUARD}
           RETURNING accounts.id AS id, k.id AS key_id),
     h AS (INSERT INTO holds (id, account_id, amount_nanoton, expires_at)
           SELECT CAST(:hold_id AS VARCHAR), a.id, CAST(:amount AS BIGINT), CAST(:expires_at AS BIGINT)
             FROM a RETURNING 1)
SELECT a.id, a.key_id FROM a""")

ACCOUNT_BY_KEY = (
    select(accounts.c.id, accounts.c.balance_nanoton, accounts.c.reserved_nanoton)
    .select_from(api_keys.join(accounts, accounts.c.id == api_keys.c.account_id))
    .where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None))
)

RELEASE_HOLDS = (
    delete(holds)
    .where(holds.c.id.in_(bindparam("ids", expanding=True)))
    .returning(holds.c.id, holds.c.amount_nanoton)
)
MOVE_ACCOUNT = (
    update(accounts)
    .where(accounts.c.id == bindparam("account"))
    .values(
        balance_nanoton=accounts.c.balance_nanoton - bindparam("charge"),
        reserved_nanoton=accounts.c.reserved_nanoton - bindparam("released"),
    )
)
INSERT_LEDGER = insert(ledger)
INSERT_USAGE = insert(usage)

# Transient failures worth retrying a batch for: SQLite busy/locked, PostgreSQL deadlock or
# serialization failure.
RETRIES = 5


@dataclass(frozen=True, slots=True)
class Reservation:
    hold_id: str
    account_id: int
    key_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class AccountFunds:
    balance: int
    reserved: int


@dataclass(slots=True)
class Settlement:
    """The outcome of one request: its charge and its usage record."""

    reservation: Reservation
    charge: int
    request_id: str
    model: str
    endpoint: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    status: str
    http_status: int
    estimated: bool
    duration_ms: int

    def usage_row(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "account_id": self.reservation.account_id,
            "key_id": self.reservation.key_id,
            "model": self.model[:200],
            "endpoint": self.endpoint,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_nanoton": self.charge,
            "status": self.status,
            "http_status": self.http_status,
            "estimated": self.estimated,
            "duration_ms": self.duration_ms,
            "created_at": int(time.time() * 1000),
        }


@dataclass(slots=True)
class _ReserveOp:
    params: dict[str, Any]
    future: asyncio.Future[Reservation | None]


@dataclass(slots=True)
class _SettleOp:
    settlement: Settlement
    future: asyncio.Future[None]


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError) and "locked" in str(exc).lower():
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(
        getattr(getattr(exc, "orig", None), "__cause__", None), "sqlstate", None
    )
    return code in ("40P01", "40001")


class BillingStore:
    def __init__(self, engine: AsyncEngine, max_batch: int) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._max_batch = max_batch
        self._reserves: list[_ReserveOp] = []
        self._settles: list[_SettleOp] = []
        self._wakeup = asyncio.Event()
        self._closing = False

    # --- the public operations --------------------------------------------------------------

    async def reserve(
        self, key_hash: bytes, amount: int, min_balance: int, overdraft: int, hold_id: str, ttl: float
    ) -> Reservation | None:
        """Hold `amount` on the key's account, or None when the key or the funds don't allow it."""
        params = {
            "key_hash": key_hash,
            "amount": amount,
            "min_balance": min_balance,
            "overdraft": overdraft,
            "hold_id": hold_id,
            "expires_at": int(time.time() + ttl),
        }
        if self._postgres:
            # One statement in autocommit: PostgreSQL groups the commits of concurrent connections.
            async with self._engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                row = (await conn.execute(POSTGRES_RESERVE, params)).first()
            return Reservation(hold_id, row.id, row.key_id, amount) if row else None
        future: asyncio.Future[Reservation | None] = asyncio.get_running_loop().create_future()
        self._reserves.append(_ReserveOp(params, future))
        self._wakeup.set()
        return await future

    async def settle(self, settlement: Settlement) -> None:
        """Charge, record usage and release the hold; returns once committed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settles.append(_SettleOp(settlement, future))
        self._wakeup.set()
        await future

    async def funds(self, key_hash: bytes) -> AccountFunds | None:
        """The key's account balance and open holds (to explain a refused reservation)."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(ACCOUNT_BY_KEY, {"key_hash": key_hash})).first()
        return AccountFunds(row.balance_nanoton, row.reserved_nanoton) if row else None

    # --- the group committer ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Commit queued work in batches until stopped and drained."""
        stopping = asyncio.create_task(stop.wait())
        try:
            async with self._engine.connect() as conn:
                while True:
                    if not (self._reserves or self._settles):
                        if stop.is_set():
                            return
                        waking = asyncio.create_task(self._wakeup.wait())
                        await asyncio.wait({waking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                        waking.cancel()
                        self._wakeup.clear()
                        continue
                    reserves, self._reserves = self._reserves[: self._max_batch], self._reserves[self._max_batch :]
                    settles, self._settles = self._settles[: self._max_batch], self._settles[self._max_batch :]
                    await self._commit_batch(conn, reserves, settles)
        finally:
            stopping.cancel()

    async def _commit_batch(
        self, conn: AsyncConnection, reserves: list[_ReserveOp], settles: list[_SettleOp]
    ) -> None:
        for attempt in range(RETRIES):
            try:
                results = await self._execute(conn, reserves, [op.settlement for op in settles])
            except DBAPIError as exc:
                await conn.rollback()
                if _is_transient(exc) and attempt < RETRIES - 1:
                    await asyncio.sleep(0.01 * (attempt + 1))
                    continue
                if len(reserves) + len(settles) > 1:
                    # Isolate the failing operation so the others still commit.
                    for op in reserves:
                        await self._commit_batch(conn, [op], [])
                    for sop in settles:
                        await self._commit_batch(conn, [], [sop])
                    return
                logger.exception("billing batch failed")
                for op in [*reserves, *settles]:
                    if not op.future.done():
                        op.future.set_exception(exc)
                return
            except BaseException as exc:  # connection lost, cancelled: callers must not hang
                for op in [*reserves, *settles]:
                    if not op.future.done():
                        op.future.set_exception(exc)
                raise
            for op, result in zip(reserves, results, strict=True):
                if not op.future.done():
                    op.future.set_result(result)
            for sop in settles:
                if not sop.future.done():
                    sop.future.set_result(None)
            return

    async def _execute(
        self, conn: AsyncConnection, reserves: list[_ReserveOp], settles: Sequence[Settlement]
    ) -> list[Reservation | None]:
        results: list[Reservation | None] = []
        async with conn.begin():
            for op in reserves:
                row = (await conn.execute(SQLITE_RESERVE, op.params)).first()
                if row is None:
                    results.append(None)
                    continue
                await conn.execute(SQLITE_HOLD, {**op.params, "account_id": row.id})
                results.append(Reservation(op.params["hold_id"], row.id, row.key_id, op.params["amount"]))
            if settles:
                await apply_settlements(conn, settles)
        return results


async def apply_settlements(conn: AsyncConnection, settles: Sequence[Settlement]) -> None:
    """Release holds, move balances, post ledger entries and usage rows, in the caller's transaction.

    A hold the sweeper already released counts as released zero: the charge still applies.
    Accounts are updated in id order so concurrent batches can't deadlock.
    """
    released = dict(
        (await conn.execute(RELEASE_HOLDS, {"ids": [s.reservation.hold_id for s in settles]})).tuples().all()
    )
    moves: dict[int, list[int]] = {}
    now = utcnow()
    entries = []
    for s in settles:
        move = moves.setdefault(s.reservation.account_id, [0, 0])
        move[0] += s.charge
        move[1] += released.pop(s.reservation.hold_id, 0)
        if s.charge:
            entries.append(
                {
                    "account_id": s.reservation.account_id,
                    "kind": EntryKind.USAGE.value,
                    "amount_nanoton": -s.charge,
                    "reference": f"usage:{s.request_id}",
                    "memo": None,
                    "created_at": now,
                }
            )
    account_moves = [{"account": a, "charge": c, "released": r} for a, (c, r) in sorted(moves.items()) if c or r]
    if account_moves:
        await conn.execute(MOVE_ACCOUNT, account_moves)
    if entries:
        await conn.execute(INSERT_LEDGER, entries)
    await conn.execute(INSERT_USAGE, [s.usage_row() for s in settles])


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
                delete(holds).where(holds.c.id.in_(expired)).returning(holds.c.account_id, holds.c.amount_nanoton)
            )
        ).all()
        per_account: dict[int, int] = {}
        for account_id, amount in rows:
            per_account[account_id] = per_account.get(account_id, 0) + amount
        if per_account:
            await conn.execute(
                MOVE_ACCOUNT,
                [{"account": a, "charge": 0, "released": r} for a, r in sorted(per_account.items())],
            )
        return len(rows)
