"""The PostgreSQL store: asyncpg, one connection per committer lane; a reservation batch is one
call of the function in migrations 0003/0004/0006/0008, a settlement batch one statement."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cocoon_platform.accounts.limits import period_starts
from cocoon_platform.billing.ledger import EntryKind
from cocoon_platform.billing.store.batching import BillingStore, Busy
from cocoon_platform.billing.store.records import (
    FUNDS_COLUMNS,
    LEDGER_COLUMNS,
    USAGE_COLUMNS,
    AccountFunds,
    Reservation,
    Settlement,
)

logger = logging.getLogger(__name__)

# A lost connection is retried at this pace, not a lock's: each retry opens a new connection.
RECONNECT_PAUSE_SECONDS = 0.1
# See migrations 0003, 0006 and 0008: one call reserves a batch, in account order, checking each key's
# expiry, allow-list and credit limit too; returns the granted ones.
POSTGRES_RESERVE_BATCH = (
    "SELECT granted, granted_account, granted_key "
    "FROM cocoon_reserve_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
# The start of a key's current limit period, from its row ($20..$22: the current day, week and month's starts).
_KEY_PERIOD = """(CASE api_keys.limit_reset WHEN 'daily' THEN $20::bigint WHEN 'weekly' THEN $21::bigint
                  WHEN 'monthly' THEN $22::bigint ELSE 0 END)"""
# A whole batch of settlements in one statement (one round trip): lock the accounts, release the
# holds, cap the charges (records.py, cap_charges: the same rule, as window sums over the batch
# in its order), move the balances and the counted keys' counters, post the charges and record
# usage; returns the requests whose charge was capped, and by how much. Data-modifying CTEs all
# run to completion. $1: hold ids; $2: the ledger's timestamp; $3..$17: the usage columns in
# USAGE_COLUMNS order, the cost as billed ($12), without capped_nanoton; $18, $19: each
# reservation's overdraft minimum credits and overdraft; $20..$22: the current day, week and
# month's starts (a charge in a new period starts the period's count).
POSTGRES_SETTLE = f"""
WITH settled AS (
    SELECT * FROM unnest($3::varchar[], $4::bigint[], $5::bigint[], $6::varchar[], $7::varchar[], $8::int[], $9::int[],
                         $10::int[], $11::int[], $12::bigint[], $13::varchar[], $14::int[], $15::bool[], $16::int[],
                         $17::bigint[], $1::varchar[], $18::bigint[], $19::bigint[])
        WITH ORDINALITY AS s(request_id, account_id, key_id, model, endpoint, prompt_tokens, cached_tokens,
                             completion_tokens, reasoning_tokens, charge, status, http_status, estimated,
                             duration_ms, created_at, hold_id, min_credits, overdraft, n)
),
locked AS (  -- accounts first, in id order, as reservations, limit changes and the sweeper lock them
    SELECT id, balance_nanoton, credited_nanoton FROM accounts
     WHERE id IN (SELECT account_id FROM settled) ORDER BY id FOR UPDATE
),
released AS (  -- after the accounts are locked (the one-time count)
    DELETE FROM holds USING settled WHERE holds.id = settled.hold_id AND (SELECT count(*) FROM locked) >= 0
    RETURNING holds.id, holds.account_id, holds.amount_nanoton, holds.key_id, holds.key_counted
),
limits AS (  -- the keys a charge may count against: a counted hold's, or the key of a hold the sweeper took
    SELECT id, credit_limit_nanoton,
           CASE WHEN limit_period_start < {_KEY_PERIOD} THEN 0 ELSE limit_spent_nanoton END AS spent
      FROM api_keys
     WHERE id IN (SELECT key_id FROM released WHERE key_counted
                  UNION SELECT key_id FROM settled WHERE hold_id NOT IN (SELECT id FROM released))
     ORDER BY id FOR UPDATE
),
counted AS (
    SELECT settled.*, limits.credit_limit_nanoton AS key_limit, limits.spent AS key_spent,
           coalesce(released.key_counted, limits.credit_limit_nanoton IS NOT NULL, false) AS key_counted
      FROM settled
      LEFT JOIN released ON released.id = settled.hold_id
      LEFT JOIN limits ON limits.id = settled.key_id
),
within_key AS (  -- each charge within what its key's limit has left, charges taken in batch order
    SELECT counted.*,
           CASE WHEN key_counted AND key_limit IS NOT NULL AND charge > 0 THEN least(charge, greatest(
               greatest(key_limit - key_spent, 0)
               - ((sum(charge) OVER (PARTITION BY key_id, key_counted ORDER BY n))::bigint - charge), 0))
           ELSE charge END AS key_charge
      FROM counted
),
capped AS (  -- then within the balance and the overdraft the account has earned
    SELECT within_key.*,
           CASE WHEN key_charge > 0 THEN least(key_charge, greatest(
               greatest(locked.balance_nanoton
                        + CASE WHEN locked.credited_nanoton >= min_credits THEN overdraft ELSE 0 END, 0)
               - ((sum(key_charge) OVER (PARTITION BY account_id ORDER BY n))::bigint - key_charge), 0))
           ELSE key_charge END AS charged
      FROM within_key JOIN locked ON locked.id = within_key.account_id
),
moves AS (
    SELECT account_id, sum(charge) AS charge, sum(released) AS released FROM (
        SELECT account_id, charged AS charge, 0::bigint AS released FROM capped
        UNION ALL SELECT account_id, 0::bigint, amount_nanoton FROM released
    ) AS m GROUP BY account_id
),
moved AS (
    UPDATE accounts SET balance_nanoton = balance_nanoton - moves.charge,
                        reserved_nanoton = reserved_nanoton - moves.released
      FROM moves
     WHERE accounts.id = moves.account_id AND (moves.charge <> 0 OR moves.released <> 0)
    RETURNING 1
),
key_moves AS (
    SELECT key_id, sum(charge) AS charge, sum(released) AS released FROM (
        SELECT key_id, charged AS charge, 0::bigint AS released FROM capped WHERE key_counted
        UNION ALL SELECT key_id, 0::bigint, amount_nanoton FROM released WHERE key_counted
    ) AS k GROUP BY key_id
),
keys_moved AS (  -- keys after their accounts (the one-time count below), as reservations lock them
    UPDATE api_keys SET
        limit_spent_nanoton = key_moves.charge
            + CASE WHEN api_keys.limit_period_start < {_KEY_PERIOD} THEN 0 ELSE api_keys.limit_spent_nanoton END,
        limit_period_start = greatest(api_keys.limit_period_start, {_KEY_PERIOD}),
        limit_reserved_nanoton = api_keys.limit_reserved_nanoton - key_moves.released
      FROM key_moves
     WHERE api_keys.id = key_moves.key_id AND (key_moves.charge <> 0 OR key_moves.released <> 0)
       AND (SELECT count(*) FROM moved) >= 0
    RETURNING 1
),
posted AS (
    INSERT INTO ledger_entries ({LEDGER_COLUMNS})
    SELECT account_id, '{EntryKind.USAGE.value}', -charged, 'usage:' || request_id, NULL, $2::timestamptz
      FROM capped WHERE charged <> 0 ORDER BY n
    RETURNING 1
),
recorded AS (
    INSERT INTO usage_records ({USAGE_COLUMNS})
    SELECT request_id, account_id, key_id, model, endpoint, prompt_tokens, cached_tokens, completion_tokens,
           reasoning_tokens, charged, status, http_status, estimated, duration_ms, created_at,
           nullif(charge - charged, 0)
      FROM capped ORDER BY n
    RETURNING request_id, capped_nanoton
)
SELECT request_id, capped_nanoton FROM recorded WHERE capped_nanoton IS NOT NULL"""
POSTGRES_RECORDED_COST = "SELECT cost_nanoton FROM usage_records WHERE request_id = $1"
POSTGRES_FUNDS = f"""
SELECT {FUNDS_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id
 WHERE k.key_hash = $1 AND k.revoked_at IS NULL"""
RETRYABLE_SQLSTATES = ("40P01", "40001")  # deadlock, serialization failure
SERVER_GONE_SQLSTATES = ("57P01", "57P02", "57P03")  # admin or crash shutdown, not accepting yet


def _closed(connection: Any) -> bool:
    """Whether a held connection is unusable; asyncpg refuses even to answer once it has taken
    back a connection the server closed."""
    try:
        return bool(connection.is_closed())
    except Exception:
        return True


async def _keep_session(connection: Any) -> None:
    """Pool reset hook: nothing to reset (see PostgresBillingStore._get_pool)."""


class PostgresBillingStore(BillingStore):
    """Reservations and settlements each have their own committer and connection. A batch of
    reservations is one call, committed without waiting for the WAL flush: a reservation lost
    in a crash only drops a guard (its settlement then releases nothing and still charges).
    A batch of settlements is one statement, committed durably before any of its answers go out."""

    separate_lanes = True
    # A batch grows while the previous one makes its round trip: waiting for more only adds
    # latency here (measured at c16 in four interleaved pairs: 2,520 -> 2,677 requests/s).
    gather_turns = 0

    def __init__(self, dsn: str, max_batch: int) -> None:
        super().__init__(max_batch)
        self._dsn = dsn
        self._pool: Any = None
        self._settle_pool: Any = None
        self._opening: asyncio.Lock | None = None
        # Each committer keeps its connection between batches: taking one from the pool and
        # giving it back cost ~45 us and three event-loop turns per batch (asyncpg shields the
        # release in a task of its own), twice per request at c1.
        self._held: dict[str, Any] = {}

    async def _get_pool(self) -> Any:
        if self._pool is None:
            import asyncpg

            self._opening = self._opening or asyncio.Lock()
            async with self._opening:
                if self._pool is None:
                    # One connection per lane (and a second for explaining refusals). They only
                    # ever run this store's statements (no locks, cursors, LISTEN or SET), so
                    # releasing one needs no reset query: that would be another round trip.
                    self._settle_pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=1,
                        reset=_keep_session,
                    )
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=2,
                        reset=_keep_session,
                        server_settings={"synchronous_commit": "off"},
                    )
        return self._pool

    async def close(self) -> None:
        for lane in list(self._held):
            await self._let_go(lane)
        for pool in (self._pool, self._settle_pool):
            if pool is not None:
                await pool.close()
        self._pool = self._settle_pool = None

    async def _connection(self, lane: str, pool: Any) -> Any:
        """The connection a committer keeps (taken from its pool at first use, or after a failure)."""
        connection = self._held.get(lane)
        if connection is not None and _closed(connection):
            await self._let_go(lane)
            raise Busy(RECONNECT_PAUSE_SECONDS)  # the batch is retried on a new connection
        if connection is None:
            connection = self._held[lane] = await pool.acquire()
        return connection

    async def _let_go(self, lane: str) -> None:
        """Give a committer's connection back (the pool replaces it if it is broken)."""
        connection = self._held.pop(lane, None)
        if connection is not None:
            pool = self._settle_pool if lane == "settle" else self._pool
            try:
                await pool.release(connection)
            except Exception:  # already back in the pool (asyncpg returns a lost one itself), or broken
                logger.debug("committer connection not released", exc_info=True)

    async def funds(self, key_hash: bytes) -> AccountFunds | None:
        row = await (await self._get_pool()).fetchrow(POSTGRES_FUNDS, key_hash, *period_starts(time.time()))
        return AccountFunds(*row) if row else None

    def _is_duplicate(self, exc: BaseException) -> bool:
        import asyncpg

        return isinstance(exc, asyncpg.UniqueViolationError)

    async def _recorded_cost(self, request_id: str) -> int | None:
        # On the reservation pool, as funds: the settlement lane's one connection is the caller's.
        cost = await (await self._get_pool()).fetchval(POSTGRES_RECORDED_COST, request_id)
        return None if cost is None else int(cost)

    async def _commit(
        self, reserves: Sequence[tuple[Any, ...]], settles: Sequence[Settlement]
    ) -> tuple[list[Reservation | None], list[int]]:
        import asyncpg

        # Each lane brings one kind: a retried batch must never apply reservations twice.
        assert not (reserves and settles), "reservations and settlements commit in separate lanes"
        lane = "reserve" if reserves else "settle"
        pool = await self._get_pool()
        try:
            if reserves:
                columns = list(zip(*reserves, strict=True))
                conn = await self._connection(lane, pool)
                now = time.time()
                rows = await conn.fetch(POSTGRES_RESERVE_BATCH, *columns, int(now), *period_starts(now))
                granted = {row[0]: (row[1], row[2]) for row in rows}
                results: list[Reservation | None] = []
                for position, (_, amount, _, overdraft, hold_id, _, _, min_credits) in enumerate(reserves, start=1):
                    grant = granted.get(position)
                    results.append(
                        Reservation(hold_id, grant[0], grant[1], amount, overdraft, min_credits) if grant else None
                    )
                return results, []
            now = time.time()
            created_ms = int(now * 1000)
            # As billed, without capped_nanoton: the statement caps the cost and fills it in.
            usage = list(zip(*(s.usage_row(created_ms, s.charge)[:-1] for s in settles), strict=True))
            # The settlement pool commits synchronously: a charge is durable before its answer.
            conn = await self._connection(lane, self._settle_pool)
            capped = dict(
                await conn.fetch(
                    POSTGRES_SETTLE,
                    [s.reservation.hold_id for s in settles],
                    datetime.now(UTC),
                    *usage,
                    [s.reservation.overdraft_min_credits for s in settles],
                    [s.reservation.overdraft for s in settles],
                    *period_starts(now),
                )
            )
            return [], [s.charge - capped.get(s.request_id, 0) for s in settles]
        except asyncpg.PostgresError as exc:
            sqlstate = getattr(exc, "sqlstate", None) or ""
            if sqlstate in RETRYABLE_SQLSTATES:
                raise Busy() from exc
            if sqlstate.startswith("08") or sqlstate in SERVER_GONE_SQLSTATES:
                await self._let_go(lane)  # the server ended this connection: retry on a new one
                raise Busy(RECONNECT_PAUSE_SECONDS) from exc
            raise
        except (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError, TimeoutError) as exc:
            await self._let_go(lane)  # the next batch takes a new connection
            # The connection went away. If the batch did commit, its retry says so: reservations find
            # their holds (migration 0004), settlements their usage references.
            raise Busy(RECONNECT_PAUSE_SECONDS) from exc
        except asyncio.CancelledError:
            # Cut off mid-statement (at shutdown): asyncpg asks the server to cancel it, and the
            # pool takes the connection back once that is done, as its context manager did.
            await self._let_go(lane)
            raise
