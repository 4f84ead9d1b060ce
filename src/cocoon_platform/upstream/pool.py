"""Connections to the COCOON client processes.

Per upstream: a lean keep-alive pool (`upstream/http.py`) for the metered requests, and an
aiohttp session for the occasional status polls. Requests go to a healthy upstream, round
robin; an upstream that refuses a connection is marked down for a short while and the request
moves to the next one. Only connection failures fail over: once a request was sent, retrying
it elsewhere could run (and bill) it twice.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import aiohttp

from cocoon_platform.config import Settings
from cocoon_platform.ops.metrics import UPSTREAM_POOL_WAIT_SECONDS
from cocoon_platform.upstream.http import ConnectFailed, HttpPool, UpstreamResponse

DOWN_SECONDS = 5.0
# Below the usual server idle timeouts (uvicorn: 5 s), so a pooled connection is never reused
# just as the server closes it.
KEEPALIVE_SECONDS = 3.0


@dataclass
class Upstream:
    url: str
    session: aiohttp.ClientSession  # status polls
    http: HttpPool  # metered requests
    down_until: float = 0.0
    last_error: str | None = field(default=None)

    @property
    def healthy(self) -> bool:
        return self.down_until <= time.monotonic()

    def mark_down(self, reason: str) -> None:
        self.down_until = time.monotonic() + DOWN_SECONDS
        self.last_error = reason

    def mark_up(self) -> None:
        self.down_until = 0.0
        self.last_error = None


class NoUpstream(Exception):
    """No upstream accepted a connection."""


class UpstreamPool:
    def __init__(self, settings: Settings) -> None:
        self.access_hash = settings.upstream_access_hash
        timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.upstream_connect_timeout, sock_read=settings.upstream_read_timeout
        )
        self.upstreams = [
            Upstream(
                url=url,
                session=aiohttp.ClientSession(
                    base_url=url,
                    timeout=timeout,
                    connector=aiohttp.TCPConnector(limit=8, ttl_dns_cache=300, keepalive_timeout=KEEPALIVE_SECONDS),
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent",),
                ),
                http=HttpPool(
                    url,
                    max_connections=settings.upstream_max_connections,
                    connect_timeout=settings.upstream_connect_timeout,
                    read_timeout=settings.upstream_read_timeout,
                    keepalive=KEEPALIVE_SECONDS,
                    wait_timeout=settings.upstream_pool_wait_seconds,
                    on_wait=UPSTREAM_POOL_WAIT_SECONDS.observe,
                ),
            )
            for url in settings.upstream_urls
        ]
        self._turn = itertools.cycle(range(len(self.upstreams)))

    def order(self) -> list[Upstream]:
        """Upstreams to try for one request: healthy ones first, starting at the next in turn."""
        start = next(self._turn)
        rotated = self.upstreams[start:] + self.upstreams[:start]
        return [u for u in rotated if u.healthy] + [u for u in rotated if not u.healthy]

    def control_params(self) -> dict[str, str]:
        """Query parameters for the client's status endpoints (its `http_access_hash`)."""
        return {"access_hash": self.access_hash} if self.access_hash else {}

    @property
    def connections_in_use(self) -> int:
        return sum(upstream.http.in_use for upstream in self.upstreams)

    @property
    def callers_waiting(self) -> int:
        return sum(upstream.http.waiting for upstream in self.upstreams)

    async def post(self, path: str, body: bytes) -> UpstreamResponse:
        """POST a JSON body to the first upstream that accepts the connection; returns once the
        answer's head has arrived. PoolBusy (from the upstream tried) when its connections all
        stayed in use for the whole wait: not moved on, as the others are likely as busy."""
        last: Exception | None = None
        for upstream in self.order():
            try:
                response = await upstream.http.post(path, body)
            except ConnectFailed as exc:
                # Refused: nothing ran there, so try another upstream. (A connection dropped after
                # sending is not retried: the request may have run, and would run, and cost, twice.)
                upstream.mark_down(type(exc).__name__)
                last = exc
                continue
            upstream.mark_up()
            return response
        raise NoUpstream(str(last) if last else "no upstream configured")

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.http.close()
            await upstream.session.close()
