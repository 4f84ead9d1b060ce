"""RateSource against local fake tonapi / CoinGecko servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cocoon_platform.ton.rates import RateSource


@dataclass
class FakeProviders:
    """Canned answers: (status, JSON or raw bytes) per provider, plus request counts."""

    tonapi: tuple[int, Any] = (200, {"rates": {"TON": {"prices": {"USD": 1.37}}}})
    coingecko: tuple[int, Any] = (200, {"the-open-network": {"usd": 1.25}})
    calls: dict[str, int] = field(default_factory=lambda: {"tonapi": 0, "coingecko": 0})
    queries: dict[str, dict[str, str]] = field(default_factory=dict)

    def handler(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.calls[name] += 1
            self.queries[name] = dict(request.query)
            status, payload = getattr(self, name)
            if isinstance(payload, bytes):
                return web.Response(status=status, body=payload)
            return web.json_response(payload, status=status)

        return handle


@asynccontextmanager
async def providers(fake: FakeProviders, port: int) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/tonapi/v2/rates", fake.handler("tonapi"))
    app.router.add_get("/cg/api/v3/simple/price", fake.handler("coingecko"))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def run_rates(
    fake: FakeProviders,
    port: int,
    scenario: Callable[[RateSource], Awaitable[Any]],
    **options: Any,
) -> Any:
    async def main() -> Any:
        async with providers(fake, port) as url, aiohttp.ClientSession() as session:
            source = RateSource(session, url + "/tonapi", url + "/cg/", timeout=2, **options)
            return await scenario(source)

    return asyncio.run(main())


def test_tonapi_first(free_port: Callable[[], int]) -> None:
    fake = FakeProviders()

    async def scenario(source: RateSource) -> None:
        assert source.current() is None
        assert await source.refresh() == 1.37
        assert source.current() == 1.37

    run_rates(fake, free_port(), scenario)
    assert fake.calls == {"tonapi": 1, "coingecko": 0}
    assert fake.queries["tonapi"] == {"tokens": "ton", "currencies": "usd"}


@pytest.mark.parametrize(
    "tonapi",
    [
        (500, {"error": "down"}),
        (429, {"error": "slow down"}),
        (200, b"<html>"),
        (200, {"rates": {}}),
        (200, {"rates": {"TON": {"prices": {"USD": "1.37"}}}}),
        (200, {"rates": {"TON": {"prices": {"USD": -1}}}}),
        (200, {"rates": {"TON": {"prices": {"USD": True}}}}),
        (200, []),
    ],
)
def test_coingecko_fallback(free_port: Callable[[], int], tonapi: tuple[int, Any]) -> None:
    fake = FakeProviders(tonapi=tonapi)

    async def scenario(source: RateSource) -> float | None:
        return await source.refresh()

    assert run_rates(fake, free_port(), scenario) == 1.25
    assert fake.queries["coingecko"] == {"ids": "the-open-network", "vs_currencies": "usd"}


def test_both_down_keeps_last_good_value_until_max_age(free_port: Callable[[], int]) -> None:
    fake = FakeProviders()
    now = [100.0]

    async def scenario(source: RateSource) -> None:
        assert await source.refresh() == 1.37
        fake.tonapi = (503, b"")
        fake.coingecko = (200, {"the-open-network": {}})
        now[0] += 599
        assert await source.refresh() is None
        assert source.current() == 1.37
        now[0] += 2
        assert source.current() is None
        fake.coingecko = (200, {"the-open-network": {"usd": 2}})
        assert await source.refresh() == 2.0
        assert source.current() == 2.0

    run_rates(fake, free_port(), scenario, clock=lambda: now[0])


def test_unreachable_providers_do_not_raise(free_port: Callable[[], int]) -> None:
    async def main() -> float | None:
        dead = f"http://127.0.0.1:{free_port()}"
        async with aiohttp.ClientSession() as session:
            return await RateSource(session, dead, dead, timeout=1).refresh()

    assert asyncio.run(main()) is None


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for a condition, however slowly a loaded machine gets there (no timed assertions)."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


def test_run_fetches_at_start_not_after_the_first_interval(free_port: Callable[[], int]) -> None:
    fake = FakeProviders()

    async def scenario(source: RateSource) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        await until(lambda: source.current() == 1.37)  # the interval is an hour: fetched at start
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    run_rates(fake, free_port(), scenario, refresh_interval=3600)
    assert fake.calls["tonapi"] == 1


def test_run_refreshes_periodically_then_stops(free_port: Callable[[], int]) -> None:
    fake = FakeProviders()

    async def scenario(source: RateSource) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        await until(lambda: source.current() == 1.37)
        fake.tonapi = (200, {"rates": {"TON": {"prices": {"USD": 1.5}}}})
        await until(lambda: source.current() == 1.5)
        await until(lambda: fake.calls["tonapi"] >= 3)
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    run_rates(fake, free_port(), scenario, refresh_interval=0.05)


def test_run_survives_garbage_and_unexpected_errors(free_port: Callable[[], int]) -> None:
    fake = FakeProviders(tonapi=(200, b"\x00garbage"), coingecko=(500, b"oops"))

    async def scenario(source: RateSource) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        await until(lambda: fake.calls["tonapi"] >= 2 and fake.calls["coingecko"] >= 2)
        assert not task.done() and source.current() is None
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    run_rates(fake, free_port(), scenario, refresh_interval=0.05)


def test_run_logs_and_continues_after_a_crash(free_port: Callable[[], int], monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeProviders()
    crashes = [0]

    async def scenario(source: RateSource) -> None:
        original = source.refresh

        async def flaky() -> float | None:
            if crashes[0] == 0:
                crashes[0] += 1
                raise RuntimeError("unexpected")
            return await original()

        monkeypatch.setattr(source, "refresh", flaky)
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        await asyncio.sleep(0.2)
        assert source.current() == 1.37
        stop.set()
        await asyncio.wait_for(task, timeout=1)

    run_rates(fake, free_port(), scenario, refresh_interval=0.05)
    assert crashes == [1]
