"""What the network looks like: models with worker load, and live prices, polled in the background.

Endpoints read the last snapshot and never wait on a slow upstream; the poller refreshes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from cocoon_platform.billing.prices import MULTIPLIER_ONE, NetworkPrices
from cocoon_platform.upstream.pool import Upstream, UpstreamPool

logger = logging.getLogger(__name__)

POLL_TIMEOUT = aiohttp.ClientTimeout(total=2.0, connect=1.0)


@dataclass(frozen=True, slots=True)
class Worker:
    coefficient: int
    running_requests: int
    max_running_requests: int


@dataclass(frozen=True, slots=True)
class NetworkModel:
    id: str
    workers: tuple[Worker, ...]


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def parse_models(document: Any) -> list[NetworkModel]:
    """Read a client's /v1/models leniently: skip what isn't shaped as expected."""
    data = document.get("data") if isinstance(document, dict) else None
    models = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            continue
        raw_workers = item.get("workers")
        workers = tuple(
            Worker(
                _int(w.get("coefficient"), 1000), _int(w.get("running_requests")), _int(w.get("max_running_requests"))
            )
            for w in (raw_workers if isinstance(raw_workers, list) else [])
            if isinstance(w, dict)
        )
        models.append(NetworkModel(item["id"], workers))
    return models


def parse_prices(document: Any) -> NetworkPrices | None:
    """The root contract's prices from /jsonstats, or None when they aren't there."""
    config = document.get("root_contract_config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        return None
    price = config.get("price_per_token")
    if not isinstance(price, int) or isinstance(price, bool) or price <= 0:
        return None  # absent or nonsense (a free network would make every request free)

    def multiplier(name: str) -> int:
        return _int(config.get(name), MULTIPLIER_ONE) if name in config else MULTIPLIER_ONE

    return NetworkPrices(
        price_per_token=price,
        prompt_multiplier=multiplier("prompt_tokens_price_multiplier"),
        cached_multiplier=multiplier("cached_tokens_price_multiplier"),
        completion_multiplier=multiplier("completion_tokens_price_multiplier"),
        reasoning_multiplier=multiplier("reasoning_tokens_price_multiplier"),
        source="live",
    )


def model_aliases(model_ids: Collection[str]) -> dict[str, str]:
    """Each `org/name` model also answers to `name` in lower case (`qwen3-32b`): some clients read
    `org/` as a provider prefix (the Agents SDK: "Unknown prefix: Qwen"). An alias two models
    would share, or that is some model's id, is left out."""
    candidates: dict[str, list[str]] = {}
    for model_id in model_ids:
        name = model_id.rsplit("/", 1)[1].lower() if "/" in model_id else ""
        if name and name not in model_ids:
            candidates.setdefault(name, []).append(model_id)
    return {alias: ids[0] for alias, ids in candidates.items() if len(ids) == 1}


class NetworkStatus:
    def __init__(
        self,
        pool: UpstreamPool,
        refresh_seconds: float,
        stale_seconds: float,
        default_prices: NetworkPrices,
        on_prices: Callable[[NetworkPrices], None],
    ) -> None:
        self._pool = pool
        self._refresh_seconds = refresh_seconds
        self._stale_seconds = stale_seconds
        self._default_prices = default_prices
        self._on_prices = on_prices
        self.models: list[NetworkModel] | None = None
        self._model_ids: frozenset[str] = frozenset()
        self.aliases: dict[str, str] = {}  # alias: the model's id on the network
        self.models_at: float | None = None  # wall-clock time of the last good model list
        self._prices_at: float | None = None
        self._refreshing: asyncio.Task[None] | None = None

    async def _get_json(self, upstream: Upstream, path: str, params: dict[str, str]) -> Any:
        async with upstream.session.get(path, params=params, timeout=POLL_TIMEOUT) as response:
            if response.status != 200:
                raise ValueError(f"{path} answered {response.status}")
            return orjson.loads(await response.read())

    async def _poll(self, upstream: Upstream) -> tuple[list[NetworkModel] | None, NetworkPrices | None]:
        models: list[NetworkModel] | None = None
        prices: NetworkPrices | None = None
        try:
            models = parse_models(await self._get_json(upstream, "/v1/models", {}))
            upstream.mark_up()
        except (aiohttp.ClientError, TimeoutError, ValueError, orjson.JSONDecodeError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError | TimeoutError):
                upstream.mark_down(type(exc).__name__)
            logger.debug("models from %s failed: %s", upstream.url, exc)
        try:
            prices = parse_prices(await self._get_json(upstream, "/jsonstats", self._pool.control_params()))
        except (aiohttp.ClientError, TimeoutError, ValueError, orjson.JSONDecodeError) as exc:
            logger.debug("jsonstats from %s failed: %s", upstream.url, exc)
        return models, prices

    async def refresh(self) -> None:
        """Poll every upstream at once; merge their model lists, take the first live prices."""
        results = await asyncio.gather(*(self._poll(u) for u in self._pool.upstreams))
        merged: dict[str, NetworkModel] = {}
        answered = False
        for models, _ in results:
            if models is not None:
                answered = True
                for model in models:
                    merged.setdefault(model.id, model)  # clients on one network list the same workers
        now = time.time()
        if answered:
            self.models = list(merged.values())
            self._model_ids = frozenset(merged)
            self.aliases = model_aliases(merged)
            self.models_at = now
        live = next((prices for _, prices in results if prices is not None), None)
        if live is not None:
            self._prices_at = now
            self._on_prices(live)
        elif self._prices_at is not None and now - self._prices_at > self._stale_seconds:
            self._prices_at = None
            self._on_prices(self._default_prices)

    async def refresh_once(self, bound: float) -> None:
        """Refresh, waiting at most `bound` seconds; one refresh at a time is shared by all callers."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self.refresh())
        try:
            await asyncio.wait_for(asyncio.shield(self._refreshing), bound)
        except TimeoutError:
            pass

    def canonical(self, model: str) -> str:
        """The network's id for `model`, which may be an alias; unknown names pass as they are."""
        return self.aliases.get(model, model)

    def knows(self, model_id: str) -> bool:
        """Whether the network has listed this model (bounds metric label values)."""
        return model_id in self._model_ids

    def state(self) -> str:
        if self.models_at is None:
            return "offline"
        return "online" if time.time() - self.models_at <= self._stale_seconds else "cached"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh_once(self._refresh_seconds)
            except Exception:  # the poller must outlive any single bad answer
                logger.exception("network status refresh failed")
            try:
                await asyncio.wait_for(stop.wait(), self._refresh_seconds)
            except TimeoutError:
                pass
