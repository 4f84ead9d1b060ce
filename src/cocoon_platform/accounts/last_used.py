"""`last_used_at` for keys, kept in memory and written in batches, not on every request."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import Table, bindparam, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cocoon_platform.db.models import ApiKey

logger = logging.getLogger(__name__)

api_keys = cast(Table, ApiKey.__table__)


class LastUsedTracker:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], interval: float = 15.0) -> None:
        self._sessionmaker = sessionmaker
        self._interval = interval
        self._pending: dict[int, float] = {}

    def touch(self, key_id: int, at: float) -> None:
        self._pending[key_id] = at

    async def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        rows = [{"key": key_id, "at": datetime.fromtimestamp(at, UTC)} for key_id, at in pending.items()]
        async with self._sessionmaker.begin() as session:
            await session.connection()  # the bulk UPDATE below needs no ORM identity map
            await session.execute(
                update(api_keys).where(api_keys.c.id == bindparam("key")).values(last_used_at=bindparam("at")),
                rows,
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self._interval)
            except TimeoutError:
                pass
            try:
                await self.flush()
            except Exception:  # a failed flush only delays last_used_at; never stop the loop
                logger.exception("could not record key last-use times")
