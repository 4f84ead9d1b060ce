"""Rate limits: requests per minute and concurrent requests per key, sign-ups per address.

Counters live in Redis when COCOON_REDIS_URL is set (shared by every instance), else in
this process. A limit of 0 turns that limit off.
"""

from __future__ import annotations

import time
from typing import Protocol

from cocoon_platform.errors import RateLimited
from cocoon_platform.ops.metrics import RATE_LIMITED

WINDOW = 60  # seconds: limits are per minute, in fixed windows
# A concurrency slot whose release never came (a killed process) expires from Redis after this.
SLOT_TTL = 3600


class Counters(Protocol):
    async def hit(self, name: str, window: int) -> int: ...
    async def enter(self, name: str) -> int: ...
    async def leave(self, name: str) -> None: ...
    async def close(self) -> None: ...


class LocalCounters:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}
        self._slots: dict[str, int] = {}

    async def hit(self, name: str, window: int) -> int:
        current = self._windows.get(name)
        count = current[1] + 1 if current is not None and current[0] == window else 1
        if len(self._windows) > 100_000:  # forget old windows rather than grow without bound
            self._windows = {k: v for k, v in self._windows.items() if v[0] == window}
        self._windows[name] = (window, count)
        return count

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

    async def hit(self, name: str, window: int) -> int:
        key = f"cocoon:rl:{name}:{window}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, WINDOW + 5)
            count, _ = await pipe.execute()
        return int(count)

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


class RateLimiter:
    def __init__(self, counters: Counters, per_minute: int, concurrent: int, signups_per_minute: int) -> None:
        self.counters = counters
        self.per_minute = per_minute
        self.concurrent = concurrent
        self.signups_per_minute = signups_per_minute

    @property
    def checks_keys(self) -> bool:
        return bool(self.per_minute or self.concurrent)

    async def admit_key(self, key_hash: bytes) -> bool:
        """Count a request of this key; True when it took a concurrency slot to give back."""
        name = key_hash[:16].hex()
        if self.per_minute:
            now = time.time()
            window = int(now // WINDOW)
            if await self.counters.hit(f"key:{name}", window) > self.per_minute:
                RATE_LIMITED.labels("key_rpm").inc()
                retry = max(1, int((window + 1) * WINDOW - now) + 1)
                raise RateLimited(
                    f"Rate limit reached: {self.per_minute} requests per minute for this key. "
                    f"Retry after {retry} s.", headers={"Retry-After": str(retry)})
        if not self.concurrent:
            return False
        if await self.counters.enter(name) > self.concurrent:
            await self.counters.leave(name)
            RATE_LIMITED.labels("key_concurrency").inc()
            raise RateLimited(
                f"Too many concurrent requests: at most {self.concurrent} at a time for this key.",
                headers={"Retry-After": "1"})
        return True

    async def release_key(self, key_hash: bytes) -> None:
        await self.counters.leave(key_hash[:16].hex())

    async def admit_address(self, address: str) -> None:
        if not self.signups_per_minute:
            return
        now = time.time()
        window = int(now // WINDOW)
        if await self.counters.hit(f"addr:{address}", window) > self.signups_per_minute:
            RATE_LIMITED.labels("address").inc()
            retry = max(1, int((window + 1) * WINDOW - now) + 1)
            raise RateLimited(
                f"Too many requests from your address: {self.signups_per_minute} per minute. "
                f"Retry after {retry} s.", headers={"Retry-After": str(retry)})
