"""Readiness: whether this instance should be given traffic, and if not, what is wrong.

`/health` is liveness (200 while the process runs, as the spec says); `/ready` is readiness
(ruling 2 of #23): 503 with one line per problem when a background loop is down, the database or
Redis (when configured) cannot be reached, or the deposit wallet is still the placeholder, where
users' deposits would be lost. Each reachability check is bounded by CHECK_SECONDS, so a
stalled dependency makes the answer a 503, never a hung probe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from sqlalchemy import text

from cocoon_platform.state import AppState

logger = logging.getLogger(__name__)

CHECK_SECONDS = 2.0


async def problems(state: AppState) -> list[str]:
    """What stands between this instance and serving; empty when it is ready."""
    found = state.loops.down()
    checks = [("database", _database(state))]
    if state.settings.redis_url:
        checks.append(("redis", state.limiter.counters.check()))
    outcomes = await asyncio.gather(*(_bounded(check) for _, check in checks))
    for (name, _), failure in zip(checks, outcomes, strict=True):
        if failure is not None:
            found.append(f"{name} unreachable: {failure}")
    if state.settings.deposit_wallet_is_placeholder:
        found.append("deposit wallet is the placeholder default (set COCOON_DEPOSIT_WALLET): deposits would be lost")
    return found


async def _database(state: AppState) -> None:
    async with state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _bounded(check: Awaitable[None]) -> str | None:
    """None when the check passed in time, else why not (in one line, with no credentials)."""
    try:
        await asyncio.wait_for(check, CHECK_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_SECONDS:g} s"
    except Exception as exc:
        logger.warning("readiness check failed: %s", type(exc).__name__)
        return type(exc).__name__
    return None
