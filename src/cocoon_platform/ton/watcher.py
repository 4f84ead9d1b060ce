"""The deposit watcher: reads the deposit wallet's transactions from toncenter and records them.

Rules:
- Forward polling: `sort=asc&start_lt=<cursor lt>` pages (start_lt is inclusive, so the
  cursor transaction itself comes back first and is skipped by hash), followed to the end
  however many transactions arrived. With no cursor yet the watcher starts at `start_lt=0`,
  the wallet's first transaction: deposits sent before it first ran are credited too, and
  every older incoming transfer without a code lands in the unmatched list.
- The cursor `(lt, hash)` of the last transaction handled is stored in `watcher_cursors`
  (keyed by the wallet's raw form, so any spelling of the wallet shares it) in the same
  database transaction as that page's deposits, and only ever moves forward. A crash loses at
  most an uncommitted page, which the next run reads again; the deposits' unique hash makes
  re-reading harmless, so two watchers on one database are safe too.
- The cursor stops before the first pending (unfinalised) transaction. A transaction that
  stays pending longer than `pending_timeout` is passed over with a warning; if it is
  finalised later, the rescan picks it up.
- Rescan: every `deposit_rescan_seconds` (and once at start) the recent window below the
  cursor is read again, newest first: at least the last `RESCAN_MIN_TRANSACTIONS` and
  everything from the last `RESCAN_WINDOW_SECONDS`, at most `RESCAN_MAX_TRANSACTIONS`.
  It only records what is missing and never moves the cursor.
- Failures never end `run`: provider errors back off exponentially (capped at
  `MAX_BACKOFF_SECONDS`), a 429 waits its Retry-After, anything else is logged and backed
  off the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cocoon_platform.config import Settings
from cocoon_platform.ton.address import TonAddress
from cocoon_platform.ton.deposits import (
    Cursor,
    DepositOutcome,
    load_cursor,
    record_pending,
    record_transactions,
    save_cursor,
)
from cocoon_platform.ton.toncenter import (
    ChainTransaction,
    Classification,
    ProviderError,
    ProviderRateLimited,
    ToncenterClient,
    classify,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "DepositWatcher",
    "PollResult",
]

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 1000  # toncenter's maximum: catching up costs the fewest requests
PENDING_TIMEOUT_SECONDS = 600.0
MAX_BACKOFF_SECONDS = 30.0
# A Retry-After of 0 must not turn into a busy loop.
MIN_RETRY_SECONDS = 0.1
RESCAN_MIN_TRANSACTIONS = 1000
RESCAN_WINDOW_SECONDS = 3600
RESCAN_MAX_TRANSACTIONS = 10_000


@dataclass(slots=True)
class PollResult:
    """What one `poll_once` or `rescan_once` did (committed work only)."""

    pages: int = 0
    credited: int = 0
    unmatched: int = 0
    duplicates: int = 0
    ignored: int = 0
    waiting_on_pending: bool = False

    def count(self, outcome: DepositOutcome) -> None:
        if outcome is DepositOutcome.CREDITED:
            self.credited += 1
        elif outcome is DepositOutcome.UNMATCHED:
            self.unmatched += 1
        elif outcome is DepositOutcome.DUPLICATE:
            self.duplicates += 1
        else:
            self.ignored += 1


class DepositWatcher:
    """Polls one wallet and records its deposits; counters are plain attributes for metrics.

    `credited` / `unmatched` count deposits this instance recorded, `polls` completed
    polls, `errors` failed polls or rescans (`rate_limited` of them were 429s), and
    `last_lag_seconds` is wall time minus the chain time of the last credited transaction
    when its page was committed (None until the first credit).
    """

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        session: aiohttp.ClientSession,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        pending_timeout: float = PENDING_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Page size 1 would never progress: the inclusive start_lt returns the cursor itself.
        if not 2 <= page_size <= 1000:
            raise ValueError("page_size must be 2..1000")
        self.wallet = TonAddress.parse(settings.deposit_wallet)
        self._wallet_key = self.wallet.to_raw()
        self._client = ToncenterClient(session, settings.toncenter_url, settings.toncenter_api_key)
        self._sessionmaker = sessionmaker
        self._poll_seconds = settings.deposit_poll_seconds
        self._rescan_seconds = settings.deposit_rescan_seconds
        self._page_size = page_size
        self._pending_timeout = pending_timeout
        self._clock = clock
        # First sighting (monotonic) of each pending transaction on the current first page.
        self._pending_seen: dict[bytes, float] = {}
        self.credited = 0
        self.unmatched = 0
        self.polls = 0
        self.errors = 0
        self.rate_limited = 0
        self.last_lag_seconds: float | None = None
        self.last_poll_at: float | None = None  # wall-clock time of the last complete poll

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every `deposit_poll_seconds` until `stop` is set; never raises."""
        failures = 0
        next_rescan = self._clock()
        while not stop.is_set():
            try:
                await self.poll_once()
                if self._clock() >= next_rescan:
                    await self.rescan_once()
                    next_rescan = self._clock() + self._rescan_seconds
                failures, delay = 0, self._poll_seconds
            except ProviderRateLimited as exc:
                self.errors += 1
                self.rate_limited += 1
                delay = max(exc.retry_after, MIN_RETRY_SECONDS)
                logger.warning("toncenter rate limit: waiting %.1fs", delay)
            except ProviderError as exc:
                failures += 1
                self.errors += 1
                delay = self._backoff(failures)
                logger.warning("toncenter failed (%s); retrying in %.1fs", exc, delay)
            except Exception:
                failures += 1
                self.errors += 1
                delay = self._backoff(failures)
                logger.exception("deposit poll failed; retrying in %.1fs", delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    def _backoff(self, failures: int) -> float:
        # The exponent is capped so days of outage can't overflow the float.
        return min(self._poll_seconds * 2.0 ** min(failures, 16), MAX_BACKOFF_SECONDS)

    async def poll_once(self) -> PollResult:
        """Read every transaction after the cursor, page by page; raises ProviderError.

        Each page's deposits and the cursor are committed together, so pages committed before
        a failure stay done.
        """
        result = PollResult()
        cursor = await self._load_cursor()
        while True:
            page = await self._client.fetch_page(
                self._wallet_key, cursor.lt if cursor else 0, self._page_size, sort="asc"
            )
            unseen = _without(page, cursor)
            ready, result.waiting_on_pending = self._ready(unseen)
            if result.waiting_on_pending:
                await self._note_pending(unseen)
            if ready:
                await self._commit(ready, result, advance=True)
                cursor = Cursor.of(ready[-1])
            if result.waiting_on_pending or len(page) < self._page_size:
                break
            if not ready:
                raise ProviderError("toncenter returned a full page without new transactions")
        self.polls += 1
        self.last_poll_at = time.time()
        return result

    def _ready(self, txs: Sequence[ChainTransaction]) -> tuple[list[ChainTransaction], bool]:
        """The transactions the cursor may pass, and whether a pending one holds it back."""
        now = self._clock()
        pending = [tx.hash for tx in txs if classify(tx) is Classification.PENDING]
        self._pending_seen = {h: self._pending_seen.get(h, now) for h in pending}
        for index, tx in enumerate(txs):
            if tx.hash not in self._pending_seen:
                continue
            waited = now - self._pending_seen[tx.hash]
            if waited < self._pending_timeout:
                return list(txs[:index]), True
            logger.warning(
                "transaction %s pending for %.0fs: moving past it; the rescan will record it if it is finalised later",
                tx.hash.hex(),
                waited,
            )
        return list(txs), False

    async def rescan_once(self) -> PollResult:
        """Re-read the recent window below the cursor, newest first; see the module rules."""
        result = PollResult()
        cursor = await self._load_cursor()
        if cursor is None:
            return result
        cutoff = time.time() - RESCAN_WINDOW_SECONDS
        boundary: Cursor | None = None
        scanned = 0
        while True:
            page = await self._client.fetch_page(
                self._wallet_key,
                None,
                self._page_size,
                sort="desc",
                end_lt=boundary.lt if boundary else cursor.lt,
            )
            txs = _without(page, boundary)
            final = [tx for tx in txs if classify(tx) is not Classification.PENDING]
            if final:
                await self._commit(final, result, advance=False)
            scanned += len(txs)
            if len(page) < self._page_size or not txs or scanned >= RESCAN_MAX_TRANSACTIONS:
                break
            if scanned >= RESCAN_MIN_TRANSACTIONS and txs[-1].now < cutoff:
                break
            boundary = Cursor.of(txs[-1])
        if result.credited or result.unmatched:
            logger.warning(
                "rescan found %d credited and %d unmatched deposit(s) the poll had missed",
                result.credited,
                result.unmatched,
            )
        return result

    async def _commit(self, txs: Sequence[ChainTransaction], result: PollResult, advance: bool) -> None:
        """Record `txs` (pending ones are skipped) and, if `advance`, move the cursor past
        the last of them, all in one database transaction; counters move after the commit."""
        final = [tx for tx in txs if classify(tx) is not Classification.PENDING]
        async with self._sessionmaker() as session, session.begin():
            outcomes = await record_transactions(session, final, self.wallet)
            if advance:
                await save_cursor(session, self._wallet_key, Cursor.of(txs[-1]))
        result.pages += 1
        for tx, outcome in zip(final, outcomes, strict=True):
            result.count(outcome)
            if outcome is DepositOutcome.CREDITED:
                self.last_lag_seconds = time.time() - tx.now
        self.credited += outcomes.count(DepositOutcome.CREDITED)
        self.unmatched += outcomes.count(DepositOutcome.UNMATCHED)

    async def _note_pending(self, txs: Sequence[ChainTransaction]) -> None:
        """Let users see their transfers that are not final yet (see deposits.record_pending)."""
        async with self._sessionmaker() as session, session.begin():
            await record_pending(session, txs, self.wallet)

    async def _load_cursor(self) -> Cursor | None:
        async with self._sessionmaker() as session:
            return await load_cursor(session, self._wallet_key)


def _without(txs: Sequence[ChainTransaction], boundary: Cursor | None) -> list[ChainTransaction]:
    """Drop the boundary transaction that an inclusive start_lt/end_lt returns again."""
    if boundary is None:
        return list(txs)
    return [tx for tx in txs if not (tx.lt == boundary.lt and tx.hash.hex() == boundary.tx_hash)]


async def watch_exclusively(
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    session: aiohttp.ClientSession,
    stop: asyncio.Event,
) -> None:
    """Run the watcher while this process holds the deposit-watcher lease (one active at a
    time across instances; another takes over when the holder dies), reporting its metrics."""
    from cocoon_platform.ops import metrics
    from cocoon_platform.ops.lease import lease_for, run_exclusively

    watcher = DepositWatcher(settings, sessionmaker, session)

    async def report(job_stop: asyncio.Event) -> None:
        while not job_stop.is_set():
            if watcher.last_lag_seconds is not None:
                metrics.WATCHER_LAG.set(watcher.last_lag_seconds)
            if watcher.last_poll_at is not None:
                metrics.WATCHER_POLL_AGE.set(time.time() - watcher.last_poll_at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job_stop.wait(), 1.0)

    async def job(job_stop: asyncio.Event) -> None:
        reporter = asyncio.create_task(report(job_stop))
        try:
            await watcher.run(job_stop)
        finally:
            reporter.cancel()
            logger.info(
                "deposit watcher stopped: %d credited, %d unmatched, %d failed polls",
                watcher.credited,
                watcher.unmatched,
                watcher.errors,
            )

    await run_exclusively(
        lease_for(settings, "deposit-watcher"),
        job,
        stop,
        on_change=lambda active: metrics.WATCHER_ACTIVE.set(1 if active else 0),
    )
