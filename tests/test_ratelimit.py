"""Per-minute limits over a sliding minute: no burst across a minute's boundary, and a Retry-After
after which one more request does fit."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from cocoon_platform.errors import RateLimited
from cocoon_platform.ops import ratelimit
from cocoon_platform.ops.ratelimit import LocalCounters, RateLimiter, RedisCounters
from support import REDIS_URL

KEY = b"k" * 32


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(per_minute: int, clock: Clock) -> RateLimiter:
    return RateLimiter(LocalCounters(), per_minute, 0, 0, clock=clock)


def admitted(limits: RateLimiter) -> int | None:
    """None when admitted, else the Retry-After it gave."""
    try:
        asyncio.run(limits.admit_key(KEY))
    except RateLimited as exc:
        return int(exc.headers["Retry-After"])
    return None


def test_a_burst_across_a_minutes_boundary_is_refused() -> None:
    clock = Clock(6000 + 59.0)  # one second before a minute ends
    limits = limiter(10, clock)
    assert [admitted(limits) for _ in range(10)] == [None] * 10
    clock.now = 6060.5  # half a second into the next minute: fixed windows would start again at 0
    retry = admitted(limits)
    assert retry == 6, "the minute before weighs 10 x 59.5/60; one more fits once that is 9, 5.5 s on"
    clock.now += retry - 1
    assert admitted(limits) is not None
    clock.now += 1
    assert admitted(limits) is None


def test_the_limit_holds_over_any_sixty_seconds_of_steady_sending() -> None:
    clock = Clock(9000.0)
    limits = limiter(60, clock)
    accepted = []
    for tick in range(6000):  # 10 requests a second for 10 minutes
        clock.now = 9000.0 + tick / 10
        if admitted(limits) is None:
            accepted.append(clock.now)
    # The limit's rate gets through, refused requests notwithstanding (a whole minute's worth at
    # once at first, then one a second), and never more than the limit in any 60 s: fixed windows
    # let up to 120 through across a boundary.
    assert 585 <= len(accepted) <= 600
    most = max(sum(1 for t in accepted if 9000 + start <= t < 9000 + start + 60) for start in range(0, 540))
    assert most <= 61


@pytest.mark.parametrize("seed", range(40))
def test_retry_after_is_the_first_whole_second_it_fits(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(60 * 1000 + rng.uniform(0, 120))
    limits = limiter(rng.randint(1, 30), clock)
    while (retry := admitted(limits)) is None:
        clock.now += rng.expovariate(2.0)
    refused_at = clock.now
    if retry > 1:
        clock.now = refused_at + retry - 1
        assert admitted(limits) is not None, "a second earlier it would not have fitted"
    clock.now = refused_at + retry
    assert admitted(limits) is None


def test_local_counters_forget_minutes_that_no_longer_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "LOCAL_NAMES", 3)
    counters = LocalCounters()

    async def hits() -> list[tuple[int, int]]:
        seen = [await counters.hit(name, 10) for name in ("a", "b", "c", "d")]
        seen.append(await counters.hit("a", 11))
        seen += [await counters.hit(name, 12) for name in ("e", "f", "a")]
        return seen

    assert asyncio.run(hits()) == [(0, 1)] * 4 + [(1, 1)] + [(0, 1), (0, 1), (1, 1)]
    assert "b" not in counters._windows and "c" not in counters._windows, "minute 10 no longer counts at 12"


def test_redis_counters_give_this_minute_and_the_one_before() -> None:
    name = f"test:{uuid.uuid4().hex}"

    async def hits() -> list[tuple[int, int]]:
        counters = RedisCounters(REDIS_URL)
        try:
            return [await counters.hit(name, w) for w in (100, 100, 101, 101, 101, 103)]
        finally:
            await counters.close()

    assert asyncio.run(hits()) == [(0, 1), (0, 2), (2, 1), (2, 2), (2, 3), (0, 1)]


def test_a_refused_request_is_taken_back_and_holds_no_slot() -> None:
    clock = Clock(120.0)
    limits = RateLimiter(LocalCounters(), 2, 1, 0, clock=clock)

    async def run() -> list[object]:
        seen: list[object] = [await limits.admit_key(KEY)]  # holds the one slot
        for _ in range(3):
            try:
                await limits.admit_key(KEY)
            except RateLimited as exc:
                seen.append(exc.message.split(":")[0])
        await limits.release_key(KEY)
        seen.append(await limits.admit_key(KEY))  # the second of 2 a minute: the refused ones did not count
        await limits.release_key(KEY)
        try:
            await limits.admit_key(KEY)
        except RateLimited as exc:
            seen.append(exc.message.split(":")[0])
        seen.append(await limits.counters.enter(KEY[:16].hex()))  # the refused one gave its slot back
        return seen

    assert asyncio.run(run()) == [True, "Too many concurrent requests"] * 1 + ["Too many concurrent requests"] * 2 + [
        True, "Rate limit reached", 1]
