"""Rate limits: requests per minute and concurrent requests per account (all its keys together,
so minting keys multiplies nothing), sign-ups per client address, and failed authentications
per client address.

Failed authentications: each one takes from the address's bucket (shared, like the others);
once one is refused, this process refuses every authenticated request from that address with
429 until the bucket would admit again, before any database work (an in-memory check, so
rotating made-up keys costs the database nothing past the limit, and a request with no
blocked address costs one test of an empty dict).

Counters live in Redis when COCOON_REDIS_URL is set (shared by every instance, on Redis's
clock), else in this process. A limit of 0 turns that limit off. When the counters can't be
reached, requests are served without limits (and a warning logged) rather than all refused:
limits guard capacity and fairness, not money.

A per-minute limit L is a token bucket (GCRA: one timestamp per name): up to L requests at
once after a quiet minute, then one every 60/L seconds, whatever the clock's minute. A client
sending steadily at the limit is never refused; one sending faster gets L a minute. No minute's
boundary lets a burst through twice (fixed windows let 2L through in two seconds there); a full
bucket and its refill can still add up to 2L - 1 in the 60 s after a quiet minute. A refused
request takes nothing, and its Retry-After is the first whole second it would be admitted.

A concurrency slot is a token of its own: one that is never given back (a killed process)
holds its place for at most the slot TTL, and its age is its own (slots taken later don't
keep it alive).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from cocoon_platform.errors import RateLimited
from cocoon_platform.ops.metrics import RATE_LIMITED

logger = logging.getLogger(__name__)

PERIOD = 60.0  # seconds: limits are per minute
# A concurrency slot whose release never came expires after this (at least; see slot_ttl).
SLOT_TTL = 3600
# Between warnings that the counters can't be reached.
UNREACHABLE_WARNING_SECONDS = 10.0
# Names the in-process counters keep before they drop the ones whose bucket is full again.
LOCAL_NAMES = 100_000


class Taken(NamedTuple):
    wait: float  # 0.0: admitted; else refused, and the seconds until it would be admitted
    full_in: float  # seconds until the bucket is full again (after this request, when admitted)


class Counters(Protocol):
    async def take(self, name: str, per_period: int) -> Taken:
        """Admit one request of `name`, or refuse it."""
        ...

    async def enter(self, name: str, limit: int) -> str | None:
        """A slot of `name`'s `limit`, or None when all are taken."""
        ...

    async def leave(self, name: str, slot: str) -> None:
        """Give a slot back; never raises (a slot that can't be given back expires)."""
        ...

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise when the counters cannot be reached (for readiness)."""


class LocalCounters:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._arrivals: dict[str, float] = {}  # name: when its bucket is full again (GCRA's TAT)
        self._prune_at = LOCAL_NAMES
        self._slots: dict[str, int] = {}

    async def take(self, name: str, per_period: int) -> Taken:
        now = self._clock()
        interval = PERIOD / per_period
        full_at = max(self._arrivals.get(name, now), now)
        admit_at = full_at + interval - PERIOD
        if now < admit_at:
            return Taken(admit_at - now, full_at - now)
        if len(self._arrivals) >= self._prune_at:
            # A name whose bucket is full again is as good as absent. Pruning is amortised: when
            # most names are still active, the next pass waits until there are twice as many.
            self._arrivals = {k: v for k, v in self._arrivals.items() if v > now}
            self._prune_at = max(LOCAL_NAMES, 2 * len(self._arrivals))
        self._arrivals[name] = full_at + interval
        return Taken(0.0, full_at + interval - now)

    async def enter(self, name: str, limit: int) -> str | None:
        count = self._slots.get(name, 0)
        if count >= limit:
            return None
        self._slots[name] = count + 1
        return "local"

    async def leave(self, name: str, slot: str) -> None:
        count = self._slots.get(name, 0) - 1
        if count > 0:
            self._slots[name] = count
        else:
            self._slots.pop(name, None)

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        return None  # in this process: always there


# GCRA on Redis's clock, in microseconds (exact in Lua's doubles): the key holds when the bucket
# is full again and expires then. Returns {0, or the microseconds until the request would fit;
# the microseconds until the bucket is full again}.
_TAKE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = tonumber(ARGV[1])
local full_at = tonumber(redis.call('GET', KEYS[1]) or now)
if full_at < now then full_at = now end
local admit_at = full_at + interval - tonumber(ARGV[2])
if now < admit_at then return {admit_at - now, full_at - now} end
redis.call('SET', KEYS[1], string.format('%d', full_at + interval), 'PX',
           math.floor((full_at + interval - now) / 1000) + 1000)
return {0, full_at + interval - now}
"""
# A slot is a member scored by when it was taken: one never given back drops out after the TTL.
_ENTER = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisCounters:
    """Keys: `cocoon:gcra:<name>` (a timestamp) and `cocoon:slot:<name>` (a sorted set; earlier
    versions kept a counter under `cocoon:slots:<name>`, which this never touches)."""

    def __init__(self, url: str, slot_ttl: int = SLOT_TTL) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._take = self._redis.register_script(_TAKE)
        self._enter = self._redis.register_script(_ENTER)
        self._slot_ttl = slot_ttl

    async def take(self, name: str, per_period: int) -> Taken:
        interval = max(1, round(PERIOD * 1_000_000 / per_period))
        wait, full_in = await self._take(keys=[f"cocoon:gcra:{name}"], args=[interval, round(PERIOD * 1_000_000)])
        return Taken(int(wait) / 1_000_000, int(full_in) / 1_000_000)

    async def enter(self, name: str, limit: int) -> str | None:
        slot = secrets.token_hex(8)
        try:
            taken = await self._enter(keys=[f"cocoon:slot:{name}"], args=[limit, slot, self._slot_ttl])
        except BaseException:
            await self.leave(name, slot)  # the script may have run and only its reply been lost
            raise
        return slot if int(taken) else None

    async def leave(self, name: str, slot: str) -> None:
        try:
            await asyncio.shield(self._redis.zrem(f"cocoon:slot:{name}", slot))
        except Exception:
            logger.warning("a concurrency slot could not be given back; it expires in %d s", self._slot_ttl)

    async def close(self) -> None:
        await self._redis.aclose()

    async def check(self) -> None:
        await self._redis.ping()


class RateLimiter:
    def __init__(
        self,
        counters: Counters,
        per_minute: int,
        concurrent: int,
        signups_per_minute: int,
        auth_failures_per_minute: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counters = counters
        self.per_minute = per_minute
        self.concurrent = concurrent
        self.signups_per_minute = signups_per_minute
        self.auth_failures_per_minute = auth_failures_per_minute
        self._clock = clock
        self._warned_at = -UNREACHABLE_WARNING_SECONDS
        # Client address buckets refused for failed authentications: until when (clock time).
        self.blocked_until: dict[str, float] = {}

    @property
    def checks_accounts(self) -> bool:
        return bool(self.per_minute or self.concurrent)

    async def admit_account(self, account_id: int) -> Admission:
        """Admit a request of this account: the concurrency slot it holds (to give back with
        `release_account`; None when it holds none), and the rate-limit headers of its answer.
        A refused request holds none."""
        try:
            return await self._admit_account(account_id)
        except RateLimited:
            raise
        except Exception as exc:
            self._unreachable(exc)
            return Admission(None, [])

    async def _admit_account(self, account_id: int) -> Admission:
        name = f"account:{account_id}"
        slot = None
        if self.concurrent:
            slot = await self.counters.enter(name, self.concurrent)
            if slot is None:
                RATE_LIMITED.labels("account_concurrency").inc()
                raise RateLimited(
                    f"Too many concurrent requests: at most {self.concurrent} at a time for this account.",
                    headers={"Retry-After": "1"},
                )
        headers: list[tuple[bytes, bytes]] = []
        try:
            if self.per_minute:
                taken = await self.counters.take(name, self.per_minute)
                headers = rate_headers(self.per_minute, taken)
                if taken.wait:
                    RATE_LIMITED.labels("account_rpm").inc()
                    retry = retry_after(taken.wait)
                    raise RateLimited(
                        f"Rate limit reached: {self.per_minute} requests per minute for this account. "
                        f"Retry after {retry} s.",
                        headers={"Retry-After": str(retry), **{k.decode(): v.decode() for k, v in headers}},
                    )
        except BaseException:
            if slot is not None:
                await self.counters.leave(name, slot)
            raise
        return Admission(slot, headers)

    async def release_account(self, account_id: int, slot: str) -> None:
        await self.counters.leave(f"account:{account_id}", slot)

    def refuse_if_blocked(self, address: str) -> None:
        """RateLimited when this address failed authentication too often (no I/O)."""
        until = self.blocked_until.get(address)
        if until is None:
            return
        now = self._clock()
        if now >= until:
            del self.blocked_until[address]
            return
        raise self._too_many_failures(until - now)

    async def failed_authentication(self, address: str) -> RateLimited | None:
        """Count a failed authentication: the error to answer with instead of 401 once the
        address is past the limit, which also blocks it (see the module), else None."""
        if not self.auth_failures_per_minute:
            return None
        try:
            wait = (await self.counters.take(f"authfail:{address}", self.auth_failures_per_minute)).wait
        except Exception as exc:
            self._unreachable(exc)
            return None
        if not wait:
            return None
        now = self._clock()
        if len(self.blocked_until) >= LOCAL_NAMES:
            self.blocked_until = {k: v for k, v in self.blocked_until.items() if v > now}
        self.blocked_until[address] = now + wait
        return self._too_many_failures(wait)

    def _too_many_failures(self, wait: float) -> RateLimited:
        RATE_LIMITED.labels("auth_failures").inc()
        retry = retry_after(wait)
        return RateLimited(
            f"Too many failed authentications from your address: {self.auth_failures_per_minute} per minute. "
            f"Retry after {retry} s.",
            headers={"Retry-After": str(retry)},
        )

    def _unreachable(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= UNREACHABLE_WARNING_SECONDS:
            self._warned_at = now
            logger.warning("rate-limit counters unreachable (%s: %s): serving without limits", type(exc).__name__, exc)

    async def admit_address(self, address: str) -> None:
        if not self.signups_per_minute:
            return
        try:
            wait = (await self.counters.take(f"addr:{address}", self.signups_per_minute)).wait
        except Exception as exc:
            self._unreachable(exc)
            return
        if wait:
            RATE_LIMITED.labels("address").inc()
            retry = retry_after(wait)
            raise RateLimited(
                f"Too many requests from your address: {self.signups_per_minute} per minute. Retry after {retry} s.",
                headers={"Retry-After": str(retry)},
            )


class Admission(NamedTuple):
    slot: str | None  # the concurrency slot held, to give back
    headers: list[tuple[bytes, bytes]]  # the x-ratelimit-* headers of the answer


def rate_headers(per_minute: int, taken: Taken) -> list[tuple[bytes, bytes]]:
    """OpenAI's request-limit headers for an answer: the limit per minute, how many more would be
    admitted at once now, and when the bucket is full again (`0.5s`)."""
    remaining = 0 if taken.wait else int((PERIOD - taken.full_in) * per_minute / PERIOD)
    return [
        (b"x-ratelimit-limit-requests", str(per_minute).encode()),
        (b"x-ratelimit-remaining-requests", str(max(remaining, 0)).encode()),
        (b"x-ratelimit-reset-requests", f"{round(taken.full_in, 3):g}s".encode()),
    ]


def retry_after(wait: float) -> int:
    """Whole seconds to wait, at least 1: a client that waits that long is admitted."""
    return max(1, math.ceil(wait))
