"""Per-minute limits as a token bucket (GCRA): a whole minute's worth at once, then one every
60/L seconds; no burst across a minute's boundary, steady sending at the limit never refused,
and a Retry-After after which the request is admitted. Concurrency slots never leak."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
import redis
from support import REDIS_URL

from cocoon_platform.errors import RateLimited
from cocoon_platform.ops import ratelimit
from cocoon_platform.ops.ratelimit import SLOT_TTL, LocalCounters, RateLimiter, RedisCounters, Taken

ACCOUNT = 7
NAME = f"account:{ACCOUNT}"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(per_minute: int, clock: Clock, concurrent: int = 0) -> RateLimiter:
    return RateLimiter(LocalCounters(clock), per_minute, concurrent, 0)


def admitted(limits: RateLimiter) -> int | None:
    """None when admitted (the slot, if any, given back at once), else the Retry-After it gave."""

    async def once() -> None:
        slot, _ = await limits.admit_account(ACCOUNT)
        if slot is not None:
            await limits.release_account(ACCOUNT, slot)

    try:
        asyncio.run(once())
    except RateLimited as exc:
        return int(exc.headers["Retry-After"])
    return None


def test_a_burst_across_a_minutes_boundary_is_refused() -> None:
    clock = Clock(6000 + 59.0)  # one second before a clock minute ends
    limits = limiter(10, clock)
    assert [admitted(limits) for _ in range(10)] == [None] * 10
    clock.now = 6060.5  # half a second into the next minute: a fixed window would start again at 0
    retry = admitted(limits)
    assert retry == 5, "the bucket gives one back 6 s after the burst"
    clock.now += retry - 1
    assert admitted(limits) is not None
    clock.now += 1
    assert admitted(limits) is None


def test_steady_sending_at_the_limit_is_never_refused() -> None:
    clock = Clock(9000.0)
    limits = limiter(10, clock)
    for tick in range(600):  # one every 6 s for an hour
        clock.now = 9000.0 + 6 * tick
        assert admitted(limits) is None, tick


def test_sending_past_the_limit_gets_the_limits_rate() -> None:
    clock = Clock(9000.0)
    limits = limiter(60, clock)
    accepted = []
    for tick in range(6000):  # 10 requests a second for 10 minutes, refusals ignored
        clock.now = 9000.0 + tick / 10
        if admitted(limits) is None:
            accepted.append(clock.now)
    assert len(accepted) == 60 + 599, "a minute's worth at once, then one a second"
    for start in range(60, 540):
        inside = sum(1 for t in accepted if 9000 + start <= t < 9000 + start + 60)
        assert inside == 60, (start, inside)


@pytest.mark.parametrize("seed", range(40))
def test_retry_after_is_the_first_whole_second_it_is_admitted(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(1_700_000_000 + rng.uniform(0, 120))
    limits = limiter(rng.randint(1, 30), clock)
    while (retry := admitted(limits)) is None:
        clock.now += rng.expovariate(2.0)
    refused_at = clock.now
    clock.now = refused_at + retry - 1
    if retry > 1:
        assert admitted(limits) is not None, "a second earlier it would not have been admitted"
    clock.now = refused_at + retry
    assert admitted(limits) is None


def test_a_refused_request_holds_no_slot_and_takes_no_token() -> None:
    clock = Clock(120.0)
    limits = limiter(2, clock, concurrent=1)

    async def run() -> list[object]:
        first, _ = await limits.admit_account(ACCOUNT)
        seen: list[object] = [first]
        for _ in range(3):
            try:
                await limits.admit_account(ACCOUNT)
            except RateLimited as exc:
                seen.append(exc.message.split(":")[0])
        assert first is not None
        await limits.release_account(ACCOUNT, first)
        second, _ = await limits.admit_account(ACCOUNT)  # the second of 2: the refused ones took no token
        assert second is not None
        await limits.release_account(ACCOUNT, second)
        try:
            await limits.admit_account(ACCOUNT)
        except RateLimited as exc:
            seen.append(exc.message.split(":")[0])
        seen.append(await limits.counters.enter(NAME, 1))  # the one refused for its rate gave its slot back
        return seen

    assert asyncio.run(run()) == ["local", *["Too many concurrent requests"] * 3, "Rate limit reached", "local"]


class FailingTake(LocalCounters):
    async def take(self, name: str, per_period: int) -> Taken:
        raise ConnectionError("the counter store is gone")


def test_unreachable_counters_serve_without_limits_and_keep_no_slot(caplog: pytest.LogCaptureFixture) -> None:
    counters = FailingTake()
    limits = RateLimiter(counters, 10, 1, 10)
    assert asyncio.run(limits.admit_account(ACCOUNT)) == (None, []), "served, holding no slot"
    asyncio.run(limits.admit_address("198.51.100.7"))
    assert asyncio.run(counters.enter(NAME, 1)) == "local", "the slot taken before the failure was given back"
    assert "serving without limits" in caplog.text


class StuckTake(LocalCounters):
    async def take(self, name: str, per_period: int) -> Taken:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def test_a_slot_is_given_back_when_admission_is_cancelled() -> None:
    counters = StuckTake()
    limits = RateLimiter(counters, 10, 1, 0)

    async def run() -> str | None:
        admission = asyncio.create_task(limits.admit_account(ACCOUNT))
        await asyncio.sleep(0.01)
        admission.cancel()
        with pytest.raises(asyncio.CancelledError):
            await admission
        return await counters.enter(NAME, 1)

    assert asyncio.run(run()) == "local"


def test_local_counters_drop_full_buckets_and_prune_amortised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "LOCAL_NAMES", 4)
    clock = Clock(1000.0)
    counters = LocalCounters(clock)

    async def take(*names: str) -> None:
        for name in names:
            assert (await counters.take(name, 60)).wait == 0.0

    asyncio.run(take("a", "b", "c", "d"))  # each full again a second later
    clock.now = 1000.5
    asyncio.run(take("e"))  # a pass finds all 4 active: the next waits until there are 8
    assert len(counters._arrivals) == 5
    clock.now = 1002.0
    asyncio.run(take("f"))  # all others are full again now, but no pass yet
    assert len(counters._arrivals) == 6
    asyncio.run(take("g", "h", "i"))  # i finds 8 names: its pass drops the 5 full ones
    assert set(counters._arrivals) == {"f", "g", "h", "i"}


def test_redis_token_bucket_is_shared_and_on_redis_clock() -> None:
    name = f"test:{uuid.uuid4().hex}"

    async def run() -> list[float]:
        first, second = RedisCounters(REDIS_URL), RedisCounters(REDIS_URL)
        try:
            return [(await counters.take(name, 3)).wait for counters in (first, second, first, second)]
        finally:
            await first.close()
            await second.close()

    began = time.time()
    waits = asyncio.run(run())
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 20 - (time.time() - began) - 0.5 <= waits[3] <= 20, "one back 20 s after the first"
    plain = redis.Redis.from_url(REDIS_URL)
    ttl = plain.pttl(f"cocoon:gcra:{name}")
    plain.delete(f"cocoon:gcra:{name}")
    assert 59_000 <= ttl <= 61_000, "the key lives until the bucket is full again"


def test_redis_slots_are_tokens_and_a_lost_one_expires_alone() -> None:
    name = f"test:{uuid.uuid4().hex}"
    key = f"cocoon:slot:{name}"
    plain = redis.Redis.from_url(REDIS_URL)
    plain.zadd(key, {"lost-by-a-killed-process": int(time.time()) - SLOT_TTL - 5})

    async def run() -> list[object]:
        counters = RedisCounters(REDIS_URL)
        try:
            first = await counters.enter(name, 2)
            second = await counters.enter(name, 2)
            third = await counters.enter(name, 2)
            assert first and second
            await counters.leave(name, first)
            return [first != second, third, await counters.enter(name, 2) is not None]
        finally:
            await counters.close()

    try:
        assert asyncio.run(run()) == [True, None, True]
        assert plain.zscore(key, "lost-by-a-killed-process") is None
        assert 0 < plain.ttl(key) <= SLOT_TTL
    finally:
        plain.delete(key)


def test_redis_slots_survive_an_earlier_versions_counter_and_a_lost_reply() -> None:
    name = f"test:{uuid.uuid4().hex}"
    plain = redis.Redis.from_url(REDIS_URL)
    plain.set(f"cocoon:slots:{name}", 5, ex=60)  # what versions before the slot tokens kept

    async def run() -> tuple[str | None, int]:
        counters = RedisCounters(REDIS_URL)
        real = counters._enter

        async def reply_lost(**arguments: object) -> object:
            await real(**arguments)
            raise TimeoutError("the reply never came")

        try:
            slot = await counters.enter(name, 1)
            assert slot is not None
            await counters.leave(name, slot)
            counters._enter = reply_lost  # type: ignore[assignment]
            with pytest.raises(TimeoutError):
                await counters.enter(name, 1)
            return slot, int(plain.zcard(f"cocoon:slot:{name}"))
        finally:
            await counters.close()

    try:
        _slot, held = asyncio.run(run())
        assert held == 0, "the slot whose reply was lost was given back"
    finally:
        plain.delete(f"cocoon:slots:{name}", f"cocoon:slot:{name}")


def test_failed_authentications_past_the_limit_block_the_address_without_io() -> None:
    clock = Clock(500.0)
    limits = RateLimiter(LocalCounters(clock), 0, 0, 0, auth_failures_per_minute=3, clock=clock)

    async def fail(address: str, times: int) -> None:
        for _ in range(times):
            limits.refuse_if_blocked(address)
            await limits.failed_authentication(address)

    asyncio.run(fail("198.51.100.7", 3))
    limits.refuse_if_blocked("198.51.100.7")  # 3 failures are allowed
    fourth = asyncio.run(limits.failed_authentication("198.51.100.7"))  # the 4th is refused by the bucket
    assert fourth is not None and fourth.headers["Retry-After"] == "20"
    with pytest.raises(RateLimited) as refused:
        limits.refuse_if_blocked("198.51.100.7")
    assert refused.value.headers["Retry-After"] == "20" and "failed authentications" in refused.value.message
    limits.refuse_if_blocked("198.51.100.8")  # another address is untouched
    clock.now += 20
    limits.refuse_if_blocked("198.51.100.7")
    assert limits.blocked_until == {}, "an expired block is dropped"


def test_the_failed_authentication_throttle_can_be_turned_off() -> None:
    limits = RateLimiter(LocalCounters(), 0, 0, 0, auth_failures_per_minute=0)
    for _ in range(100):
        assert asyncio.run(limits.failed_authentication("198.51.100.7")) is None
    assert limits.blocked_until == {}


def test_answers_carry_the_request_limit_headers() -> None:
    """Limit, how many more fit at once now, and when the bucket is full again; a refusal's too."""
    clock = Clock(1000.0)
    limits = limiter(3, clock)

    def headers() -> dict[str, str]:
        try:
            _, pairs = asyncio.run(limits.admit_account(ACCOUNT))
        except RateLimited as exc:
            return {k.lower(): v for k, v in exc.headers.items() if k.lower().startswith("x-ratelimit")}
        return {k.decode(): v.decode() for k, v in pairs}

    assert headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "20s",
    }
    assert headers()["x-ratelimit-remaining-requests"] == "1"
    clock.now = 1010.0  # half a token back
    assert headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "50s",
    }
    assert headers() == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "50s",
    }, "refused: nothing taken"
