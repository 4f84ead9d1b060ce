"""The queues and committer tasks shared by both databases: group commit.

Callers queue operations and wait for their futures; a committer applies whatever queued while
its previous batch ran in one transaction, and each caller resumes only after the transaction
holding its work has committed. A batch that fails is split so the others still commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cocoon_platform.accounts.limits import model_needle
from cocoon_platform.billing.store.records import AccountFunds, Reservation, Settlement
from cocoon_platform.ops import metrics

logger = logging.getLogger(__name__)

# At most this many event-loop turns are spent gathering a batch (see BillingStore._lane).
GATHER_TURNS = 12
# How long a batch keeps retrying while another writer holds the database.
BUSY_PATIENCE_SECONDS = 10.0


@dataclass(slots=True)
class _ReserveOp:
    # key_hash, amount, min_balance, overdraft, hold_id, expires_at, model needle, overdraft_min_credits
    params: tuple[Any, ...]
    future: asyncio.Future[Reservation | None]


@dataclass(slots=True)
class _SettleOp:
    settlement: Settlement
    future: asyncio.Future[int]


class Busy(Exception):
    """The database is locked by another writer, a transaction conflicted, or the connection was
    lost: retry the batch, no sooner than `pause` seconds from now."""

    def __init__(self, pause: float = 0.0) -> None:
        super().__init__()
        self.pause = pause


class BillingStore(ABC):
    """The queues and the committer tasks shared by both databases.

    Callers queue operations and wait for their futures; a committer task takes whatever
    queued while its previous batch ran and applies it in one transaction. A caller that is
    cancelled while waiting never loses its settlement: the committer applies it anyway.
    With `separate_lanes`, reservations and settlements have a committer each, so that a
    reservation never waits for a settlement's durable commit.
    """

    separate_lanes = False
    gather_turns = GATHER_TURNS

    def __init__(self, max_batch: int) -> None:
        self._max_batch = max_batch
        self._reserves: list[_ReserveOp] = []
        self._settles: list[_SettleOp] = []
        self._reserve_wakeup = asyncio.Event()
        self._settle_wakeup = asyncio.Event() if self.separate_lanes else self._reserve_wakeup

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
        """Hold `amount` on the key's account, or None when the key (revoked, expired, the model
        not allowed, its credit limit reached) or the funds don't allow it. The account may go
        `overdraft` below zero only when its lifetime credits reach `overdraft_min_credits`."""
        params = (
            key_hash,
            amount,
            min_balance,
            overdraft,
            hold_id,
            int(time.time() + ttl),
            model_needle(model),
            overdraft_min_credits,
        )
        future: asyncio.Future[Reservation | None] = asyncio.get_running_loop().create_future()
        self._reserves.append(_ReserveOp(params, future))
        self._reserve_wakeup.set()
        return await future

    async def settle(self, settlement: Settlement) -> int:
        """Charge, record usage and release the hold; returns, once committed, what was charged:
        the settlement's charge, or less where charging it all would break a promise (an account
        without the overdraft under 0, a key past its limit: records.py, cap_charges).

        Applying the same request twice is harmless: its usage reference is unique, so the
        second attempt rolls back, counts as done and returns what the first one charged (see
        _charged_before)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._settles.append(_SettleOp(settlement, future))
        self._settle_wakeup.set()
        return await future

    @abstractmethod
    async def funds(self, key_hash: bytes) -> AccountFunds | None:
        """The key's account funds and the key's restrictions, to explain a refused reservation;
        None for a key that is unknown or revoked."""

    @abstractmethod
    async def _commit(
        self, reserves: Sequence[tuple[Any, ...]], settles: Sequence[Settlement]
    ) -> tuple[list[Reservation | None], list[int]]:
        """Apply one batch in one transaction; the reservations' results and what each settlement
        charged, in order. Raises Busy for failures worth retrying."""

    @abstractmethod
    def _is_duplicate(self, exc: BaseException) -> bool:
        """Whether a failure is a unique-key violation (the operation was applied before)."""

    @abstractmethod
    async def _recorded_cost(self, request_id: str) -> int | None:
        """The cost on a request's usage record (what its settlement charged); None without one."""

    async def _charged_before(self, settlement: Settlement) -> int:
        """What a settlement applied before charged: its usage record's cost, which is less than
        the charge asked for where the store capped it. A retry after a lost reply (PostgreSQL)
        so reports the charge that was made, in the answer's cost and the capped metrics. Should
        even that read fail, the charge asked for: the settlement stands either way, and its
        caller must not fail on a report."""
        try:
            recorded = await self._recorded_cost(settlement.request_id)
        except Exception:
            logger.warning("could not read what settlement %s charged", settlement.request_id, exc_info=True)
            recorded = None
        return settlement.charge if recorded is None else recorded

    async def close(self) -> None:
        return None

    async def maintain(self, stop: asyncio.Event) -> None:
        """Background upkeep the database needs; returns when stopped."""
        await stop.wait()

    async def run(self, stop: asyncio.Event) -> None:
        """The committers: apply queued work until stopped, then drain what is left."""
        upkeep = asyncio.create_task(self.maintain(stop))
        stopping = asyncio.create_task(stop.wait())

        def wake_all(_: object) -> None:
            self._reserve_wakeup.set()
            self._settle_wakeup.set()

        stopping.add_done_callback(wake_all)
        lanes = (
            [(True, False, self._reserve_wakeup), (False, True, self._settle_wakeup)]
            if self.separate_lanes
            else [(True, True, self._reserve_wakeup)]
        )
        committers = [asyncio.create_task(self._lane(stop, *lane)) for lane in lanes]
        try:
            await asyncio.gather(*committers)
        finally:
            # A committer that failed must not leave the others running. The store stays open
            # for the supervisor's restart of this loop unless it is shutting down.
            for committer in committers:
                committer.cancel()
            await asyncio.gather(*committers, return_exceptions=True)
            stopping.cancel()
            upkeep.cancel()
            if stop.is_set():
                await self.close()

    async def _lane(
        self, stop: asyncio.Event, takes_reserves: bool, takes_settles: bool, wakeup: asyncio.Event
    ) -> None:
        def queued() -> int:
            return (len(self._reserves) if takes_reserves else 0) + (len(self._settles) if takes_settles else 0)

        idle_after_stop = 0
        while True:
            if not queued():
                if stop.is_set():
                    # Requests cancelled at shutdown queue their settlements a moment later.
                    idle_after_stop += 1
                    if idle_after_stop > 5:
                        return
                    await asyncio.sleep(0.01)
                    continue
                await wakeup.wait()
                wakeup.clear()
                continue
            idle_after_stop = 0
            # Let the other requests run a few turns first, while that grows the batch: one
            # transaction of many operations costs far less than many of few (fewer commits,
            # fewer pages written). Measured at c16: 3,650 -> 5,700 requests/s on SQLite.
            for _ in range(self.gather_turns):
                before = queued()
                await asyncio.sleep(0)
                if queued() == before:
                    break
            reserves: list[_ReserveOp] = []
            settles: list[_SettleOp] = []
            if takes_reserves:
                reserves, self._reserves = self._reserves[: self._max_batch], self._reserves[self._max_batch :]
            if takes_settles:
                settles, self._settles = self._settles[: self._max_batch], self._settles[self._max_batch :]
            # A reservation nobody waits for any more is not made; a settlement always is.
            # Measured: one transaction at a time per lane beats overlapping ones (they queue on
            # the same account rows); the batch grows instead.
            await self._commit_batch([op for op in reserves if not op.future.done()], settles)

    async def _commit_batch(self, reserves: list[_ReserveOp], settles: list[_SettleOp]) -> None:
        ops: list[_ReserveOp | _SettleOp] = [*reserves, *settles]
        if not ops:
            return
        deadline = time.monotonic() + BUSY_PATIENCE_SECONDS
        pause = 0.0005
        while True:
            try:
                results, charged = await self._commit([op.params for op in reserves], [op.settlement for op in settles])
                break
            except Busy as exc:
                if time.monotonic() > deadline:
                    logger.error("billing batch gave up after %.0f s: %s", BUSY_PATIENCE_SECONDS, exc.__cause__)
                    _fail(ops, RuntimeError("the database stayed unavailable; billing operation not applied"))
                    return
                await asyncio.sleep(max(pause, exc.pause))
                pause = min(pause * 2, 0.002)  # resume as soon as a checkpoint or lock is gone
            except Exception as exc:
                if len(ops) > 1:
                    # Isolate the failing operation so the others still commit.
                    for op in reserves:
                        await self._commit_batch([op], [])
                    for sop in settles:
                        await self._commit_batch([], [sop])
                    return
                if settles and self._is_duplicate(exc):
                    logger.info("settlement of %s was already applied", settles[0].settlement.request_id)
                    # Counted as capped below, if it was: in the platform, where each request
                    # settles once, a duplicate is a batch retried after its reply was lost
                    # (PostgreSQL), whose first application was never counted.
                    results, charged = [], [await self._charged_before(settles[0].settlement)]
                    break
                logger.exception("billing operation failed")
                _fail(ops, exc)
                return
        for op, result in zip(reserves, results, strict=True):
            if not op.future.done():
                op.future.set_result(result)
        for sop, charge in zip(settles, charged, strict=True):
            count_capped(sop.settlement, charge)
            if not sop.future.done():
                sop.future.set_result(charge)


def count_capped(settlement: Settlement, charged: int) -> None:
    """Count a charge the store capped (the operator's loss) in the `cocoon_capped_*` metrics."""
    if charged < settlement.charge:
        metrics.CAPPED_CHARGES.inc()
        metrics.CAPPED_NANOTON.inc(settlement.charge - charged)


def _fail(ops: Sequence[_ReserveOp | _SettleOp], exc: BaseException) -> None:
    """Hand a failure to every caller still waiting on one of these operations."""
    for op in ops:
        if not op.future.done():
            op.future.set_exception(exc)
