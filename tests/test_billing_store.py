"""The committer's promises, against an in-memory database: no lost or doubled settlement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from cocoon_platform.billing.store import BillingStore, Busy, Reservation, Settlement


class Duplicate(Exception):
    pass


class MemoryStore(BillingStore):
    """Applies settlements to a dict; can be told to be busy or slow."""

    def __init__(self) -> None:
        super().__init__(max_batch=64)
        self.applied: dict[str, int] = {}
        self.busy_times = 0
        self.delay = 0.0
        self.batches: list[int] = []

    async def funds(self, key_hash: bytes) -> Any:
        return None

    def _is_duplicate(self, exc: BaseException) -> bool:
        return isinstance(exc, Duplicate)

    async def _recorded_cost(self, request_id: str) -> int | None:
        return self.applied.get(request_id)

    async def _commit(
        self, reserves: Sequence[tuple[Any, ...]], settles: Sequence[Settlement]
    ) -> tuple[list[Reservation | None], list[int]]:
        if self.busy_times:
            self.busy_times -= 1
            raise Busy()
        if self.delay:
            await asyncio.sleep(self.delay)
        ids = [s.request_id for s in settles]
        if any(i in self.applied for i in ids) or len(set(ids)) != len(ids):
            raise Duplicate()
        self.batches.append(len(settles) + len(reserves))
        for s in settles:
            self.applied[s.request_id] = s.charge
        return [Reservation(p[4], 1, 1, p[1]) for p in reserves], [s.charge for s in settles]


def settlement(request_id: str, charge: int = 5) -> Settlement:
    return Settlement(
        Reservation(request_id, 1, 1, 10), charge, request_id, "m", "chat", 1, 0, 1, 0, "ok", 200, False, 1
    )


async def running(store: MemoryStore) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(store.run(stop))


def test_concurrent_settlements_are_batched_and_each_applied_once() -> None:
    async def scenario() -> MemoryStore:
        store = MemoryStore()
        stop, task = await running(store)
        await asyncio.gather(*(store.settle(settlement(f"r{i}")) for i in range(200)))
        stop.set()
        await task
        return store

    store = asyncio.run(scenario())
    assert len(store.applied) == 200 and max(store.batches) > 1


def test_a_cancelled_caller_still_gets_its_settlement_applied() -> None:
    async def scenario() -> MemoryStore:
        store = MemoryStore()
        store.delay = 0.05
        stop, task = await running(store)
        first = asyncio.create_task(store.settle(settlement("a")))
        await asyncio.sleep(0.01)  # "a" is being committed
        second = asyncio.create_task(store.settle(settlement("b")))
        third = asyncio.create_task(store.settle(settlement("c")))
        await asyncio.sleep(0)
        second.cancel()
        first.cancel()
        await third
        with pytest.raises(asyncio.CancelledError):
            await second
        stop.set()
        await task
        return store

    assert set(asyncio.run(scenario()).applied) == {"a", "b", "c"}


def test_a_repeated_settlement_counts_as_done_and_busy_is_retried() -> None:
    async def scenario() -> tuple[MemoryStore, list[int]]:
        store = MemoryStore()
        stop, task = await running(store)
        first = await store.settle(settlement("x", 7))
        store.busy_times = 3
        again, other = await asyncio.gather(store.settle(settlement("x", 9)), store.settle(settlement("y")))
        stop.set()
        await task
        return store, [first, again, other]

    store, charged = asyncio.run(scenario())
    assert store.applied == {"x": 7, "y": 5}
    assert charged == [7, 7, 5]  # the repeat reports what was charged, not what it asked


def test_work_queued_at_shutdown_is_drained() -> None:
    async def scenario() -> MemoryStore:
        store = MemoryStore()
        stop, task = await running(store)
        pending = [asyncio.create_task(store.settle(settlement(f"s{i}"))) for i in range(10)]
        stop.set()
        await asyncio.gather(*pending)
        await task
        return store

    assert len(asyncio.run(scenario()).applied) == 10
