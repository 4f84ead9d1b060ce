"""Rate limits: requests per minute and concurrent requests per key, sign-ups per address.

Counters live in Redis when COCOON_REDIS_URL is set (shared by every instance), else in
this process. A limit of 0 turns that limit off.

Per-minute limits hold over any 60 seconds, not per clock minute: a request counts in its
minute, and the last minute's count weighs in by the share of it still inside the sliding
60 s (the sliding-window counter). Fixed windows let a client send twice the limit across
a minute's boundary. A refused request is taken back: a client that keeps sending past its
limit still gets the limit's rate through, no more.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from cocoon_platform.errors import RateLimited
from cocoon_platform.ops.metrics import RATE_LIMITED

WINDOW = 60  # seconds: limits are per minute
# A concurrency slot whose release never came (a killed process) expires from Redis after this.
SLOT_TTL = 3600
# Names kept in process before the ones older than the last minute are forgotten.
LOCAL_NAMES = 100_000


class Counters(Protocol):
    async def hit(self, name: str, window: int) -> tuple[int, int]:
        """Count a hit in minute `window`: (hits in the minute before, hits in this one with it)."""
        ...

    async def unhit(self, name: str, window: int) -> None:
        """Take back a hit that was refused."""
        ...

    async def enter(self, name: str) -> int: ...
    async def leave(self, name: str) -> None: ...
    async def close(self) -> None: ...


class LocalCounters:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int, int]] = {}  # name: (minute, its hits, the minute before's)
        self._slots: dict[str, int] = {}

    async def hit(self, name: str, window: int) -> tuple[int, int]:
        stored = self._windows.get(name)
        if stored is not None and stored[0] == window:
            counts = (window, stored[1] + 1, stored[2])
        elif stored is not None and stored[0] == window - 1:
            counts = (window, 1, stored[1])
        else:
            counts = (window, 1, 0)
        if len(self._windows) > LOCAL_NAMES:  # forget what no longer counts rather than grow without bound
            self._windows = {k: v for k, v in self._windows.items() if v[0] >= window - 1}
        self._windows[name] = counts
        return counts[2], counts[1]

    async def unhit(self, name: str, window: int) -> None:
        stored = self._windows.get(name)
        if stored is not None and stored[0] == window and stored[1] > 0:
            self._windows[name] = (window, stored[1] - 1, stored[2])

    async def enter(self, name: str) -> int:
        count = self._slots.get(name, 0) + 1
        self._slots[name] = count
        return count

    async def leave(self, name: str) -> None:
        count = self._slots.get(name, 0) - 1
        if count > 0:
            self._slots[name] = count
        else:
            self._slots.pop(name, None)

    async def close(self) -> None:
        return None


class RedisCounters:
    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    async def hit(self, name: str, window: int) -> tuple[int, int]:
        key = f"cocoon:rl:{name}:{window}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * WINDOW + 5)  # it is the minute before for the whole next minute
            pipe.get(f"cocoon:rl:{name}:{window - 1}")
            count, _, previous = await pipe.execute()
        return int(previous or 0), int(count)

    async def unhit(self, name: str, window: int) -> None:
        await self._redis.decr(f"cocoon:rl:{name}:{window}")

    async def enter(self, name: str) -> int:
        key = f"cocoon:slots:{name}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, SLOT_TTL)
            count, _ = await pipe.execute()
        return int(count)

    async def leave(self, name: str) -> None:
        await self._redis.decr(f"cocoon:slots:{name}")

    async def close(self) -> None:
        await self._redis.aclose()


def seconds_to_wait(limit: int, previous: int, current: int, elapsed: float) -> float | None:
    """None when `current` hits (this one included) in a minute `elapsed` seconds old, after
    `previous` in the minute before, keep the sliding minute within `limit`; else how long until
    this one would fit, if nothing else is sent meanwhile."""
    if previous * (WINDOW - elapsed) / WINDOW + current <= limit:
        return None
    if current <= limit:  # the minute before weighs too much: wait for its share to shrink
        return WINDOW * (1 - (limit - current) / previous) - elapsed
    # This minute is full: wait into the next, until this one's share leaves room for one more.
    return WINDOW - elapsed + WINDOW * (1 - (limit - 1) / (current - 1))


class RateLimiter:
    def __init__(self, counters: Counters, per_minute: int, concurrent: int, signups_per_minute: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.counters = counters
        self.per_minute = per_minute
        self.concurrent = concurrent
        self.signups_per_minute = signups_per_minute
        self._clock = clock

    @property
    def checks_keys(self) -> bool:
        return bool(self.per_minute or self.concurrent)

    async def _count(self, name: str, limit: int) -> int | None:
        """Count a hit; None when it fits the sliding minute, else the Retry-After in seconds."""
        now = self._clock()
        window = int(now // WINDOW)
        previous, current = await self.counters.hit(name, window)
        wait = seconds_to_wait(limit, previous, current, now - window * WINDOW)
        if wait is None:
            return None
        await self.counters.unhit(name, window)
        return max(1, math.ceil(wait))

    async def admit_key(self, key_hash: bytes) -> bool:
        """Count a request of this key; True when it took a concurrency slot to give back.
        A refused request holds no slot and is not counted."""
        name = key_hash[:16].hex()
        slot = False
        if self.concurrent:
            if await self.counters.enter(name) > self.concurrent:
                await self.counters.leave(name)
                RATE_LIMITED.labels("key_concurrency").inc()
                raise RateLimited(
                    f"Too many concurrent requests: at most {self.concurrent} at a time for this key.",
                    headers={"Retry-After": "1"})
            slot = True
        if self.per_minute and (retry := await self._count(f"key:{name}", self.per_minute)) is not None:
            if slot:
                await self.counters.leave(name)
            RATE_LIMITED.labels("key_rpm").inc()
            raise RateLimited(
                f"Rate limit reached: {self.per_minute} requests per minute for this key. "
                f"Retry after {retry} s.", headers={"Retry-After": str(retry)})
        return slot

    async def release_key(self, key_hash: bytes) -> None:
        await self.counters.leave(key_hash[:16].hex())

    async def admit_address(self, address: str) -> None:
        if self.signups_per_minute and (
                retry := await self._count(f"addr:{address}", self.signups_per_minute)) is not None:
            RATE_LIMITED.labels("address").inc()
            raise RateLimited(
                f"Too many requests from your address: {self.signups_per_minute} per minute. "
                f"Retry after {retry} s.", headers={"Retry-After": str(retry)})
