"""One active holder of a job across processes and hosts (the deposit watcher).

PostgreSQL: a session advisory lock on a dedicated connection; the server frees it when its
holder's connection dies, so another instance takes over. SQLite: an exclusive file lock
next to the database, which the kernel frees when the holder's process dies.
The job must stay harmless if two ever run at once; the lease only avoids the waste.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import make_url

from cocoon_platform.config import Settings
from cocoon_platform.ops.supervisor import BackgroundLoop

logger = logging.getLogger(__name__)

CHECK_SECONDS = 5.0


class Lease(ABC):
    @abstractmethod
    async def try_acquire(self) -> bool: ...

    @abstractmethod
    async def held(self) -> bool: ...

    @abstractmethod
    async def release(self) -> None: ...


class PostgresLease(Lease):
    def __init__(self, dsn: str, key: int) -> None:
        self._dsn = dsn
        self._key = key
        self._conn: Any = None

    async def try_acquire(self) -> bool:
        import asyncpg

        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, timeout=5)
            return bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key))
        except (OSError, asyncpg.PostgresError, TimeoutError):
            await self.release()
            return False

    async def held(self) -> bool:
        import asyncpg

        try:
            return self._conn is not None and await self._conn.fetchval("SELECT 1", timeout=5) == 1
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False

    async def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=5)
            self._conn = None


class FileLease(Lease):
    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def held(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def lease_for(settings: Settings, name: str) -> Lease:
    url = make_url(settings.database_url)
    if url.drivername.startswith("sqlite"):
        return FileLease(f"{url.database or 'cocoon.db'}.{name}.lock")
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    key = int.from_bytes(hashlib.sha256(f"cocoon-platform:{name}".encode()).digest()[:8], "big", signed=True)
    return PostgresLease(dsn, key)


async def run_exclusively(
    lease: Lease,
    job: BackgroundLoop,
    stop: asyncio.Event,
    on_change: Callable[[bool], None] = lambda active: None,
    retry_seconds: float = CHECK_SECONDS,
) -> None:
    """Run `job` while holding the lease; wait for it otherwise; take over when it frees.

    A job that fails ends this too, with its exception, once the lease is released: its
    supervisor logs it and restarts after a backoff, rather than retaking the lease at once."""
    while not stop.is_set():
        if await lease.try_acquire():
            logger.info("lease acquired: this process runs the job")
            on_change(True)
            job_stop = asyncio.Event()
            task = asyncio.create_task(job(job_stop))
            try:
                while not stop.is_set() and not task.done():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), retry_seconds)
                    if not await lease.held():
                        logger.warning("lease lost: stopping the job")
                        break
            finally:
                job_stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 30)
                on_change(False)
                await lease.release()
            failure = task.exception() if task.done() and not task.cancelled() else None
            if failure is not None:
                raise failure
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_seconds)
