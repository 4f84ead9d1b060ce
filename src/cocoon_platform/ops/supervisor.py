"""Background loops that cannot die silently.

Every in-process loop (the billing committers, the hold sweeper, `last_used_at`, the network
status, the deposit watcher, the TON/USD rate) runs under one Supervisor. A loop that raises, is
cancelled from outside, or returns before shutdown is logged with its cause and started again
after a backoff: it doubles from `first_backoff` up to `max_backoff` while runs keep failing, and
starts over once a run lasted `healthy_after` seconds, so a loop failing at every start neither
spins nor waits long after a rare failure. While a loop is down, `down()` says which and why, and
`GET /ready` answers 503 with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from cocoon_platform.ops import metrics

logger = logging.getLogger(__name__)

# A loop runs until the event is set, then returns.
BackgroundLoop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class _Supervised:
    name: str
    loop: BackgroundLoop
    run: asyncio.Task[None] | None = None  # the current run of the loop
    failure: str | None = None  # why the loop is down; None while it runs


class Supervisor:
    def __init__(
        self, stop: asyncio.Event, first_backoff: float = 1.0, max_backoff: float = 60.0, healthy_after: float = 60.0
    ) -> None:
        self.stop = stop
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.healthy_after = healthy_after
        self._loops: dict[str, _Supervised] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, loop: BackgroundLoop) -> None:
        """Run `loop` until shutdown, restarting it whenever it ends early."""
        if name in self._loops:
            raise ValueError(f"background loop {name!r} is already running")
        entry = self._loops[name] = _Supervised(name, loop)
        self._tasks.append(asyncio.create_task(self._supervise(entry), name=f"supervise-{name}"))

    def running(self, name: str) -> asyncio.Task[None] | None:
        """The task of the loop's current run (None while it waits to restart)."""
        entry = self._loops[name]
        return entry.run if entry.failure is None else None

    def down(self) -> list[str]:
        """What is wrong, one line per loop that is not running."""
        return [f"background loop {e.name} is down: {e.failure}" for e in self._loops.values() if e.failure]

    async def _supervise(self, entry: _Supervised) -> None:
        failures = 0  # in a row, each run shorter than healthy_after
        while True:
            started = time.monotonic()
            run = entry.run = asyncio.create_task(entry.loop(self.stop), name=entry.name)
            entry.failure = None
            try:
                await asyncio.wait((run,))
            except asyncio.CancelledError:  # the supervisor itself is cancelled: so is the run
                run.cancel()
                raise
            error = None if run.cancelled() else run.exception()
            if self.stop.is_set():
                if error is not None:
                    logger.error("background loop %s failed while stopping", entry.name, exc_info=error)
                return
            if run.cancelled():
                entry.failure = "cancelled"
            elif error is not None:
                entry.failure = f"{type(error).__name__}: {error}"
            else:
                entry.failure = "returned before shutdown"
            failures = 1 if time.monotonic() - started >= self.healthy_after else failures + 1
            # The exponent is capped so that a loop failing for days can't overflow the float.
            backoff = min(self.first_backoff * 2 ** min(failures - 1, 32), self.max_backoff)
            logger.error(
                "background loop %s is down (%s); restarting in %.3g s",
                entry.name,
                entry.failure,
                backoff,
                exc_info=error,
            )
            metrics.LOOP_RESTARTS.labels(entry.name).inc()
            try:
                await asyncio.wait_for(self.stop.wait(), backoff)
                return
            except TimeoutError:
                pass

    async def close(self, timeout: float = 10.0) -> None:
        """Once `stop` is set: wait for each loop to finish (cancelled past `timeout`)."""
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout)
            except (TimeoutError, asyncio.CancelledError):
                pass
