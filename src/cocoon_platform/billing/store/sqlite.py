"""The SQLite store: each batch runs inline on the event loop with the sqlite3 module, and a
worker thread keeps the WAL short."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from cocoon_platform.accounts.limits import model_needle, period_starts
from cocoon_platform.billing.store.batching import BillingStore, Busy, count_capped
from cocoon_platform.billing.store.records import (
    FUNDS_COLUMNS,
    LEDGER_COLUMNS,
    USAGE_COLUMNS,
    AccountFunds,
    KeyLimit,
    Released,
    Reservation,
    Settlement,
    settlement_rows,
)
from cocoon_platform.db.engine import sqlite_setup

logger = logging.getLogger(__name__)

# A worker thread copies the WAL back into the database this often (a passive checkpoint, which
# never blocks the writer). Under continuous writes it never quite catches up, and SQLite only
# starts the WAL over once one has: so when the WAL holds RESTART_FRAMES or more, the committer
# pauses while the thread copies the few frames written meanwhile and resets the log. Without
# that, the WAL and the shared-memory index this process maps grow without end.
CHECKPOINT_SECONDS = 2.0
RESTART_FRAMES = 4096
# How long a restart waits for another connection's reader or writer before trying next time.
RESTART_PATIENCE_MS = 50
# A WAL that a burst made longer than this is cut back when it starts over. Kept well above what
# RESTART_FRAMES lets it reach: cutting a large file takes the writer tens of milliseconds.
WAL_SIZE_LIMIT = 128 * 1024 * 1024

# Reserve on the account of a live, unexpired key that allows the model (?6; ?7: now), if the funds
# allow it: the overdraft (?4) only for accounts whose lifetime credits reach the minimum (?5). One
# statement, as before key limits; it returns the key's id, negated when the key has a credit limit
# (then SQLITE_RESERVE_KEY counts the reservation against it, or the reservation is undone).
SQLITE_RESERVE = """
UPDATE accounts SET reserved_nanoton = reserved_nanoton + ?2
 WHERE id = (SELECT account_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > ?7) AND (models IS NULL OR instr(models, ?6) > 0))
   AND balance_nanoton >= ?3
   AND balance_nanoton - reserved_nanoton - ?2 >= -(CASE WHEN credited_nanoton >= ?5 THEN ?4 ELSE 0 END)
RETURNING id, (SELECT CASE WHEN credit_limit_nanoton IS NULL THEN id ELSE -id END FROM api_keys WHERE key_hash = ?1)"""
SQLITE_UNRESERVE = "UPDATE accounts SET reserved_nanoton = reserved_nanoton - ?2 WHERE id = ?1"
# Count a reservation against the key's limit, if it fits (?3..?5: the current day, week and month's
# starts; the spending of a period that is over counts as zero).
_KEY_PERIOD = "(CASE limit_reset WHEN 'daily' THEN ?3 WHEN 'weekly' THEN ?4 WHEN 'monthly' THEN ?5 ELSE 0 END)"
SQLITE_RESERVE_KEY = f"""
UPDATE api_keys SET limit_spent_nanoton = CASE WHEN limit_period_start < {_KEY_PERIOD} THEN 0
                                          ELSE limit_spent_nanoton END,
                    limit_period_start = max(limit_period_start, {_KEY_PERIOD}),
                    limit_reserved_nanoton = limit_reserved_nanoton + ?2
 WHERE id = ?1 AND credit_limit_nanoton IS NOT NULL
   AND CASE WHEN limit_period_start < {_KEY_PERIOD} THEN 0 ELSE limit_spent_nanoton END
       + limit_reserved_nanoton + ?2 <= credit_limit_nanoton"""
SQLITE_HOLD = (
    "INSERT INTO holds (id, account_id, amount_nanoton, expires_at, key_id, key_counted) VALUES (?, ?, ?, ?, ?, ?)"
)
# Release the holds; with each, its account's funds, which a settlement's charge is capped against
# (records.py, cap_charges): read in the same statement, one step less per batch.
SQLITE_RELEASE = """
DELETE FROM holds WHERE id IN ({marks})
RETURNING id, amount_nanoton, key_id, key_counted, account_id,
          (SELECT balance_nanoton FROM accounts WHERE accounts.id = holds.account_id),
          (SELECT credited_nanoton FROM accounts WHERE accounts.id = holds.account_id)"""
# The same for a charged account none of whose holds the batch found (the sweeper released them
# first), and the counted keys' limits and spending in the current period (?1..?3: the day, week
# and month's starts).
SQLITE_CHARGED_ACCOUNTS = "SELECT id, balance_nanoton, credited_nanoton FROM accounts WHERE id IN ({marks})"
SQLITE_KEY_LIMITS = """
SELECT id, credit_limit_nanoton,
       CASE WHEN limit_period_start < (CASE limit_reset WHEN 'daily' THEN ?1 WHEN 'weekly' THEN ?2
                                       WHEN 'monthly' THEN ?3 ELSE 0 END) THEN 0 ELSE limit_spent_nanoton END
  FROM api_keys WHERE id IN ({marks})"""
SQLITE_MOVE = (
    "UPDATE accounts SET balance_nanoton = balance_nanoton - ?, reserved_nanoton = reserved_nanoton - ? WHERE id = ?"
)
SQLITE_LEDGER = f"INSERT INTO ledger_entries ({LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
SQLITE_USAGE = f"INSERT INTO usage_records ({USAGE_COLUMNS}) VALUES ({', '.join('?' * 16)})"
# A charge and a release on a limited key; a charge in a new period starts the period's count.
SQLITE_MOVE_KEY = """
UPDATE api_keys SET limit_spent_nanoton = ?1 + CASE WHEN limit_period_start < (CASE limit_reset
                        WHEN 'daily' THEN ?4 WHEN 'weekly' THEN ?5 WHEN 'monthly' THEN ?6 ELSE 0 END)
                        THEN 0 ELSE limit_spent_nanoton END,
                    limit_period_start = max(limit_period_start, CASE limit_reset
                        WHEN 'daily' THEN ?4 WHEN 'weekly' THEN ?5 WHEN 'monthly' THEN ?6 ELSE 0 END),
                    limit_reserved_nanoton = limit_reserved_nanoton - ?2
 WHERE id = ?3"""
SQLITE_RECORDED_COST = "SELECT cost_nanoton FROM usage_records WHERE request_id = ?"
SQLITE_FUNDS = f"""
SELECT {FUNDS_COLUMNS.replace("$", "?")} FROM api_keys k JOIN accounts a ON a.id = k.account_id
 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL"""


def _lowest_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: nice applies per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: checkpoints just run at normal priority


def _sqlite_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteBillingStore(BillingStore):
    """Runs each batch inline on the event loop: a local write transaction takes microseconds,
    less than a hop to a thread. It never blocks on another process's lock: a busy database
    fails at once and the batch is retried after an asynchronous pause."""

    def __init__(self, path: str, synchronous: str, max_batch: int) -> None:
        super().__init__(max_batch)
        self._path = path
        self._synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self._writable = asyncio.Event()  # cleared while a checkpoint lets the WAL start over
        self._writable.set()
        self._in_flight = 0  # requests of this process holding a reservation
        # Passive checkpoints copy pages and fsync: at the lowest CPU priority, they take the core
        # when the event loop leaves it idle instead of pre-empting requests for milliseconds.
        # The restart runs at normal priority: the writer waits for it.
        self._background_thread = ThreadPoolExecutor(1, "sqlite-checkpoint", initializer=_lowest_priority)
        self._restart_thread = ThreadPoolExecutor(1, "sqlite-wal-restart")

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            # As the engine's connections (foreign keys checked too), but never waiting for a lock:
            # a busy database fails at once and the batch is retried after an asynchronous pause.
            for statement in sqlite_setup(self._synchronous, busy_timeout_ms=0):
                db.execute(statement)
            # Checkpoints fsync the database file: keep them off the event loop (see maintain).
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._db = db
        return self._db

    async def maintain(self, stop: asyncio.Event) -> None:
        """Keep the WAL short from a worker thread: copy it back every CHECKPOINT_SECONDS, and
        let it start over once it is long (see RESTART_FRAMES)."""
        loop = asyncio.get_running_loop()
        restarted_at = -1
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), CHECKPOINT_SECONDS)
            except TimeoutError:
                pass
            try:
                frames = await loop.run_in_executor(self._background_thread, self._checkpoint, "PASSIVE")
                if frames >= RESTART_FRAMES and frames != restarted_at:
                    # The bulk is copied. Catch up with what the writer added meanwhile (at normal
                    # priority, so it is quick), then hold the writer back only for the last few
                    # frames and the syncs, so the checkpoint completes and the WAL resets.
                    await loop.run_in_executor(self._restart_thread, self._checkpoint, "PASSIVE")
                    self._writable.clear()
                    try:
                        await loop.run_in_executor(self._restart_thread, self._checkpoint, "RESTART")
                    finally:
                        self._writable.set()
                    restarted_at = frames  # until the next write, the WAL reports the same length
            except sqlite3.Error:
                logger.warning("WAL checkpoint failed; will retry", exc_info=True)

    def _checkpoint(self, mode: str) -> int:
        """Run a checkpoint on the checkpointer's own connection; returns the WAL's length in frames."""
        if self._checkpointer is None:
            # Its own connection, made once: opening one costs more than the checkpoint itself.
            self._checkpointer = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            self._checkpointer.execute(f"PRAGMA busy_timeout={RESTART_PATIENCE_MS}")
        _busy, frames, _copied = self._checkpointer.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(frames)

    async def close(self) -> None:
        for thread in (self._background_thread, self._restart_thread):
            # A checkpoint may still be running: wait for it without blocking the event loop.
            await asyncio.to_thread(thread.shutdown)
        for db in (self._db, self._checkpointer):
            if db is not None:
                db.close()
        self._db = self._checkpointer = None

    async def funds(self, key_hash: bytes) -> AccountFunds | None:
        params = (key_hash, *period_starts(time.time()))
        try:
            row = self._connection().execute(SQLITE_FUNDS, params).fetchone()
        except sqlite3.OperationalError:
            await asyncio.sleep(0.01)
            row = self._connection().execute(SQLITE_FUNDS, params).fetchone()
        return AccountFunds(*row) if row else None

    def _is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    async def _recorded_cost(self, request_id: str) -> int | None:
        row = self._connection().execute(SQLITE_RECORDED_COST, (request_id,)).fetchone()
        return None if row is None else int(row[0])

    async def reserve(
        self,
        key_hash: bytes,
        amount: int,
        min_balance: int,
        overdraft: int,
        hold_id: str,
        ttl: float,
        *,
        model: str,
        overdraft_min_credits: int,
    ) -> Reservation | None:
        if self._alone():
            try:
                reservation: Reservation | None = self._apply(
                    [
                        (
                            key_hash,
                            amount,
                            min_balance,
                            overdraft,
                            hold_id,
                            int(time.time() + ttl),
                            model_needle(model),
                            overdraft_min_credits,
                        )
                    ],
                    [],
                )[0][0]
            except Busy:
                pass  # queue it: the committer retries
            else:
                if reservation is not None:
                    self._in_flight += 1
                return reservation
        reservation = await super().reserve(
            key_hash,
            amount,
            min_balance,
            overdraft,
            hold_id,
            ttl,
            model=model,
            overdraft_min_credits=overdraft_min_credits,
        )
        if reservation is not None:
            self._in_flight += 1
        return reservation

    async def settle(self, settlement: Settlement) -> int:
        self._in_flight = max(0, self._in_flight - 1)
        if self._alone():
            try:
                (charged,) = self._apply([], [settlement])[1]
            except Busy:
                pass
            except sqlite3.IntegrityError as exc:
                if self._is_duplicate(exc):
                    return await self._charged_before(settlement)  # applied (and counted) before
                raise
            else:
                count_capped(settlement, charged)
                return charged
        return await super().settle(settlement)

    def _alone(self) -> bool:
        """Whether to commit in the caller, skipping the committer's hops: when no other request
        of this process is in flight there is nothing to group with (and a synchronous
        transaction can't be interrupted half-way)."""
        return self._in_flight == 0 and not (self._reserves or self._settles) and self._writable.is_set()

    async def _commit(
        self, reserves: Sequence[tuple[Any, ...]], settles: Sequence[Settlement]
    ) -> tuple[list[Reservation | None], list[int]]:
        await self._writable.wait()
        return self._apply(reserves, settles)

    @staticmethod
    def _reserve_one(
        db: sqlite3.Connection,
        key_hash: bytes,
        amount: int,
        min_balance: int,
        overdraft: int,
        hold_id: str,
        expires_at: int,
        needle: str,
        min_credits: int,
        now: int,
        starts: tuple[int, int, int],
    ) -> Reservation | None:
        """One reservation, inside the batch's transaction (SQLite has one writer: these statements
        see and change the rows as one step)."""
        row = db.execute(
            SQLITE_RESERVE, (key_hash, amount, min_balance, overdraft, min_credits, needle, now)
        ).fetchone()
        if row is None:
            return None
        account_id, signed_key_id = row
        limited = signed_key_id < 0
        key_id = -signed_key_id if limited else signed_key_id
        if limited and not db.execute(SQLITE_RESERVE_KEY, (key_id, amount, *starts)).rowcount:
            db.execute(SQLITE_UNRESERVE, (account_id, amount))
            return None
        db.execute(SQLITE_HOLD, (hold_id, account_id, amount, expires_at, key_id, limited))
        return Reservation(hold_id, account_id, key_id, amount, overdraft, min_credits)

    def _apply(
        self, reserves: Sequence[tuple[Any, ...]], settles: Sequence[Settlement]
    ) -> tuple[list[Reservation | None], list[int]]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _sqlite_busy(exc):
                raise Busy() from exc
            raise
        try:
            results: list[Reservation | None] = []
            now = time.time()
            starts = period_starts(now)
            for key_hash, amount, min_balance, overdraft, hold_id, expires_at, needle, min_credits in reserves:
                results.append(
                    self._reserve_one(
                        db,
                        key_hash,
                        amount,
                        min_balance,
                        overdraft,
                        hold_id,
                        expires_at,
                        needle,
                        min_credits,
                        int(now),
                        starts,
                    )
                )
            charged = self._settle_all(db, settles, starts) if settles else []
            db.execute("COMMIT")
            return results, charged
        except BaseException as exc:
            db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _sqlite_busy(exc):
                raise Busy() from exc
            raise

    @staticmethod
    def _settle_all(db: sqlite3.Connection, settles: Sequence[Settlement], starts: tuple[int, int, int]) -> list[int]:
        """A batch of settlements, inside the batch's transaction; what each charged."""
        hold_ids = [s.reservation.hold_id for s in settles]
        released: dict[str, Released] = {}
        accounts: dict[int, tuple[int, int]] = {}
        counted_keys: set[int] = set()  # the keys a charge may count against
        for hold_id, amount, key_id, counted, account_id, balance, credited in db.execute(
            SQLITE_RELEASE.format(marks=", ".join("?" * len(hold_ids))), hold_ids
        ).fetchall():
            released[hold_id] = Released(amount, key_id, bool(counted))
            accounts[account_id] = (balance, credited)
            if counted:
                counted_keys.add(key_id)
        unread: set[int] = set()
        for settlement in settles:
            reservation = settlement.reservation
            if reservation.hold_id not in released:  # the sweeper released it first
                counted_keys.add(reservation.key_id)  # if the key has a limit now
                if settlement.charge > 0 and reservation.account_id not in accounts:
                    unread.add(reservation.account_id)
        if unread:
            accounts.update(
                (account_id, (balance, credited))
                for account_id, balance, credited in db.execute(
                    SQLITE_CHARGED_ACCOUNTS.format(marks=", ".join("?" * len(unread))), sorted(unread)
                )
            )
        keys: dict[int, KeyLimit] = {}
        if counted_keys:
            keys = {
                key_id: KeyLimit(limit, spent)
                for key_id, limit, spent in db.execute(
                    SQLITE_KEY_LIMITS.format(marks=", ".join(f"?{n}" for n in range(4, 4 + len(counted_keys)))),
                    (*starts, *sorted(counted_keys)),
                )
            }
        rows = settlement_rows(settles, released, accounts, keys, datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"))
        db.executemany(SQLITE_MOVE, rows.account_moves())
        key_moves = rows.key_moves()
        if key_moves:
            db.executemany(SQLITE_MOVE_KEY, [(*move, *starts) for move in key_moves])
        db.executemany(SQLITE_LEDGER, rows.ledger)
        db.executemany(SQLITE_USAGE, rows.usage)
        return rows.charged
