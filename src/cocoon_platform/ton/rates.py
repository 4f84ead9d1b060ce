"""TON/USD rate for display: tonapi first, CoinGecko as fallback.

`RateSource.run` refreshes in the background (at start, then every `refresh_interval`);
`current()` only reads memory and returns None once the last good value is older than
`max_age`, so a stale price is never shown as current. Nothing here is used for billing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

__all__ = ["RateSource"]

logger = logging.getLogger(__name__)

DEFAULT_TONAPI_URL = "https://tonapi.io"
DEFAULT_COINGECKO_URL = "https://api.coingecko.com"


class _RateUnavailable(Exception):
    pass


class RateSource:
    """Keeps the last good TON/USD price fetched through a caller-owned session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tonapi_url: str = DEFAULT_TONAPI_URL,
        coingecko_url: str = DEFAULT_COINGECKO_URL,
        refresh_interval: float = 60.0,
        max_age: float = 600.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._tonapi_url = tonapi_url.rstrip("/") + "/v2/rates"
        self._coingecko_url = coingecko_url.rstrip("/") + "/api/v3/simple/price"
        self._refresh_interval = refresh_interval
        self._max_age = max_age
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._clock = clock
        self._value: float | None = None
        self._fetched_at = 0.0

    def current(self) -> float | None:
        """USD per TON, or None if no good value is younger than `max_age`; no I/O."""
        if self._value is None or self._clock() - self._fetched_at > self._max_age:
            return None
        return self._value

    async def refresh(self) -> float | None:
        """Fetch once (tonapi, then CoinGecko); keep the old value if both fail."""
        for name, fetch in (("tonapi", self._from_tonapi), ("coingecko", self._from_coingecko)):
            try:
                price = await fetch()
            except (TimeoutError, _RateUnavailable, aiohttp.ClientError) as exc:
                logger.warning("TON/USD rate from %s failed: %r", name, exc)
                continue
            self._value = price
            self._fetched_at = self._clock()
            return price
        return None

    async def run(self, stop_event: asyncio.Event) -> None:
        """Refresh now and every `refresh_interval` until `stop_event` is set."""
        while not stop_event.is_set():
            try:
                await self.refresh()
            except Exception:  # the display rate must never take the service down
                logger.exception("TON/USD rate refresh crashed")
            try:
                await asyncio.wait_for(stop_event.wait(), timeout=self._refresh_interval)
            except TimeoutError:
                pass

    async def _from_tonapi(self) -> float:
        data = await self._get(self._tonapi_url, {"tokens": "ton", "currencies": "usd"})
        return _positive(_dig(data, "rates", "TON", "prices", "USD"))

    async def _from_coingecko(self) -> float:
        params = {"ids": "the-open-network", "vs_currencies": "usd"}
        data = await self._get(self._coingecko_url, params)
        return _positive(_dig(data, "the-open-network", "usd"))

    async def _get(self, url: str, params: dict[str, str]) -> Any:
        async with self._session.get(url, params=params, timeout=self._timeout) as response:
            if response.status != 200:
                raise _RateUnavailable(f"HTTP {response.status}")
            raw = await response.read()
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _RateUnavailable(f"bad JSON: {exc}") from None


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            raise _RateUnavailable(f"unexpected shape: no {key!r}")
        data = data[key]
    return data


def _positive(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _RateUnavailable(f"price is not a number: {value!r}")
    price = float(value)
    if not math.isfinite(price) or price <= 0:
        raise _RateUnavailable(f"price out of range: {price}")
    return price
