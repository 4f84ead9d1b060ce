"""Prometheus metrics. With several worker processes, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `serve --workers N`) aggregates them across processes."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "cocoon_requests_total", "Inference requests by endpoint, model and HTTP status", ["endpoint", "model", "status"]
)
REQUEST_SECONDS = Histogram(
    "cocoon_request_duration_seconds", "Total time of inference requests", ["endpoint"], buckets=LATENCY_BUCKETS
)
UPSTREAM_SECONDS = Histogram(
    "cocoon_upstream_duration_seconds", "Time spent waiting on the COCOON client", ["endpoint"], buckets=LATENCY_BUCKETS
)
FIRST_TOKEN_SECONDS = Histogram(
    "cocoon_time_to_first_token_seconds", "Time to the first streamed chunk", ["endpoint"], buckets=LATENCY_BUCKETS
)
TOKENS = Counter("cocoon_tokens_total", "Tokens billed by model and type", ["model", "type"])
BILLED = Counter("cocoon_billed_nanoton_total", "nanoTON charged to accounts by model", ["model"])
UPSTREAM_ERRORS = Counter("cocoon_upstream_errors_total", "Failures of the COCOON network by kind", ["kind"])
RATE_LIMITED = Counter("cocoon_rate_limited_total", "Requests refused by a rate limit", ["scope"])
OPEN_RESERVATIONS = Gauge("cocoon_open_reservations", "Open holds in the database", multiprocess_mode="max")
DEPOSITS = Gauge("cocoon_deposits", "Deposits seen by the watcher, by status", ["status"], multiprocess_mode="max")
WATCHER_ACTIVE = Gauge(
    "cocoon_deposit_watcher_active", "1 where this process holds the watcher lock", multiprocess_mode="livesum"
)
WATCHER_LAG = Gauge(
    "cocoon_deposit_watcher_lag_seconds",
    "Seconds between the last credited transaction and its credit",
    multiprocess_mode="max",
)
WATCHER_POLL_AGE = Gauge(
    "cocoon_deposit_watcher_last_poll_age_seconds",
    "Seconds since the watcher last read the wallet successfully",
    multiprocess_mode="min",
)
UPSTREAM_IN_USE = Gauge(
    "cocoon_upstream_connections_in_use",
    "Connections to the COCOON client(s) carrying a request, as of the last scrape",
    multiprocess_mode="livesum",
)
UPSTREAM_WAITING = Gauge(
    "cocoon_upstream_callers_waiting",
    "Requests waiting for a connection to the COCOON client(s), as of the last scrape",
    multiprocess_mode="livesum",
)
UPSTREAM_POOL_WAIT_SECONDS = Histogram(
    "cocoon_upstream_pool_wait_seconds",
    "Time a request that found every upstream connection in use waited for one",
    buckets=LATENCY_BUCKETS,
)
ORPHANED_HOLDS = Counter(
    "cocoon_orphaned_holds_total", "Holds left open by a platform process that died, released at 0 by the sweeper"
)
ORPHANED_NANOTON = Counter(
    "cocoon_orphaned_nanoton_total", "nanoTON those holds reserved: the most the crashes may have cost, unbilled"
)
CAPPED_CHARGES = Counter(
    "cocoon_capped_charges_total",
    "Settlements charged less than the request cost: the network reported more than its hold's worst case, "
    "and charging it all would have taken an account without the overdraft under 0 or a key past its limit",
)
CAPPED_NANOTON = Counter("cocoon_capped_nanoton_total", "nanoTON those settlements left uncharged: the operator's loss")
LOOP_RESTARTS = Counter(
    "cocoon_background_loop_restarts_total", "Background loops restarted after dying, by loop", ["loop"]
)


# The database-wide gauges (open holds, deposits) are read at most this often, per process.
DATABASE_GAUGE_SECONDS = 5.0


class Every:
    """Whether something periodic is due: at most once per `seconds`."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._next = -math.inf

    def due(self) -> bool:
        now = self._clock()
        if now < self._next:
            return False
        self._next = now + self._seconds
        return True


class Labelled:
    """A metric's children by label values, looked up without prometheus_client's lock and
    checks on every request. Callers bound the label values (e.g. unknown models -> "other")."""

    __slots__ = ("_metric", "_children")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


requests_by = Labelled(REQUESTS)
request_seconds_by = Labelled(REQUEST_SECONDS)
upstream_seconds_by = Labelled(UPSTREAM_SECONDS)
first_token_seconds_by = Labelled(FIRST_TOKEN_SECONDS)
tokens_by = Labelled(TOKENS)
billed_by = Labelled(BILLED)
upstream_errors_by = Labelled(UPSTREAM_ERRORS)


def exposition() -> tuple[bytes, str]:
    """The metrics page of this process, or of all worker processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
