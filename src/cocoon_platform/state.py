"""The long-lived objects of a running platform, made once at start-up."""

from __future__ import annotations

import asyncio
import hmac
import logging

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cocoon_platform.accounts.key_accounts import KeyAccounts
from cocoon_platform.accounts.last_used import LastUsedTracker
from cocoon_platform.billing.prices import NetworkPrices, Pricer
from cocoon_platform.billing.store import create_billing_store
from cocoon_platform.billing.sweeper import sweep_expired
from cocoon_platform.config import Settings
from cocoon_platform.db.engine import create_engine, create_sessionmaker
from cocoon_platform.ops.client_address import ClientAddresses
from cocoon_platform.ops.metrics import DATABASE_GAUGE_SECONDS, Every
from cocoon_platform.ops.ratelimit import SLOT_TTL, Counters, LocalCounters, RateLimiter, RedisCounters
from cocoon_platform.ops.supervisor import BackgroundLoop, Supervisor
from cocoon_platform.ton.rates import RateSource
from cocoon_platform.upstream.catalog import ModelCatalog
from cocoon_platform.upstream.pool import UpstreamPool
from cocoon_platform.upstream.status import NetworkStatus

logger = logging.getLogger(__name__)


def default_prices(settings: Settings) -> NetworkPrices:
    return NetworkPrices(
        price_per_token=settings.price_per_token,
        prompt_multiplier=settings.prompt_multiplier,
        cached_multiplier=settings.cached_multiplier,
        completion_multiplier=settings.completion_multiplier,
        reasoning_multiplier=settings.reasoning_multiplier,
        source="default",
    )


class AppState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = create_engine(settings)
        self.sessionmaker: async_sessionmaker[AsyncSession] = create_sessionmaker(self.engine)
        self.pricer = Pricer(settings.markup_multiplier, settings.max_coefficient)
        self.prices: NetworkPrices = default_prices(settings)
        self.last_used = LastUsedTracker(self.sessionmaker)
        # A slot outlives any request: a request never outlives its reservation.
        slot_ttl = max(SLOT_TTL, int(settings.reservation_ttl_seconds) + 60)
        counters: Counters = RedisCounters(settings.redis_url, slot_ttl) if settings.redis_url else LocalCounters()
        self.limiter = RateLimiter(
            counters,
            settings.rate_limit_rpm,
            settings.rate_limit_concurrent,
            settings.rate_limit_signup_per_minute,
            settings.auth_failures_per_minute,
        )
        self.key_accounts = KeyAccounts(self.sessionmaker)
        self.client_addresses = ClientAddresses(settings.trusted_proxy_networks)
        self.database_gauges = Every(DATABASE_GAUGE_SECONDS)
        self.billing = create_billing_store(settings)
        self.catalog = ModelCatalog.load(settings.model_catalog_file)
        self.pool = UpstreamPool(settings)
        self.network = NetworkStatus(
            self.pool,
            settings.stats_refresh_seconds,
            settings.stats_stale_seconds,
            default_prices(settings),
            self._set_prices,
        )
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.rates = (
            RateSource(self.http, tonapi_url=settings.tonapi_url, coingecko_url=settings.coingecko_url)
            if settings.rates_enabled
            else None
        )
        self.stop = asyncio.Event()
        self.loops = Supervisor(self.stop)

    def check_admin_token(self, token: str | None) -> bool:
        return self.check_token(token, self.settings.admin_token)

    @staticmethod
    def check_token(token: str | None, expected: str | None) -> bool:
        """Constant-time comparison, so response timing can't reveal the token."""
        return token is not None and expected is not None and hmac.compare_digest(token.encode(), expected.encode())

    async def sweep_holds(self, stop: asyncio.Event) -> None:
        """Release holds whose request died with its process, every sweep interval."""
        while not stop.is_set():
            try:
                released = await sweep_expired(self.engine)
                if released:
                    logger.warning("released %d expired hold(s)", released)
            except Exception:
                logger.exception("hold sweep failed")
            try:
                await asyncio.wait_for(stop.wait(), self.settings.sweep_interval_seconds)
            except TimeoutError:
                pass

    def _set_prices(self, prices: NetworkPrices) -> None:
        self.prices = prices

    def ton_usd_rate(self) -> float | None:
        return self.rates.current() if self.rates is not None else None

    def spawn(self, name: str, loop: BackgroundLoop) -> None:
        """Run a background loop until shutdown, restarted whenever it dies (ops/supervisor.py)."""
        self.loops.spawn(name, loop)

    async def close(self) -> None:
        self.stop.set()
        await self.loops.close()
        await self.billing.close()  # closed by its own loop, unless that was down at shutdown
        await self.last_used.flush()
        await self.pool.close()
        await self.http.close()
        await self.limiter.counters.close()
        await self.engine.dispose()
