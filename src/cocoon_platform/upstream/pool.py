"""Connections to the COCOON client processes: one pooled aiohttp session per upstream.

Requests go to a healthy upstream, round robin; an upstream that refuses a connection is
marked down for a short while and the request moves to the next one. Only connection
failures fail over: once a request was sent, retrying it elsewhere could run (and bill) it twice.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import aiohttp

from cocoon_platform.config import Settings

DOWN_SECONDS = 5.0


@dataclass
class Upstream:
    url: str
    session: aiohttp.ClientSession
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
                    connector=aiohttp.TCPConnector(
                        limit=settings.upstream_max_connections,
                        ttl_dns_cache=300,
                        enable_cleanup_closed=True,
                        # Below the usual server idle timeouts (uvicorn: 5 s), so a pooled connection
                        # is never reused just as the client closes it.
                        keepalive_timeout=3.0,
                    ),
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent",),
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

    async def post(
        self, path: str, body: bytes, headers: dict[str, str], timeout: aiohttp.ClientTimeout | None = None
    ) -> tuple[Upstream, aiohttp.ClientResponse]:
        """Send a POST to the first upstream that accepts the connection."""
        last: Exception | None = None
        for upstream in self.order():
            try:
                response = await upstream.session.post(path, data=body, headers=headers, timeout=timeout)
            except aiohttp.ClientConnectorError as exc:
                # Refused: nothing ran there, so try another upstream. (A connection dropped after
                # sending is not retried: the request may have run, and would run, and cost, twice.)
                upstream.mark_down(type(exc).__name__)
                last = exc
                continue
            upstream.mark_up()
            return upstream, response
        raise NoUpstream(str(last) if last else "no upstream configured")

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.session.close()
