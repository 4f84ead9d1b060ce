"""/metrics (#14 item 9, ruling 4 of #23): without COCOON_METRICS_TOKEN only a loopback client
may read it, judged by the resolved client address; the database gauges are read at most once
every few seconds, whatever the scrape rate."""

from __future__ import annotations

import threading
import time

import httpx
from conftest import ServerFactory
from support import Simulator, db_rows, new_account

from cocoon_platform.ops.metrics import DATABASE_GAUGE_SECONDS, Every

TON = 1_000_000_000


def open_reservations(text: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith("cocoon_open_reservations "))
    return float(line.split()[1])


def test_without_a_token_only_loopback_clients_read_metrics(server_factory: ServerFactory) -> None:
    """Seen: /metrics was open to everyone by default."""
    server = server_factory(trusted_proxies="127.0.0.1/32")
    assert httpx.get(server.url + "/metrics").status_code == 200, "a client on this host"
    relayed = httpx.get(server.url + "/metrics", headers={"X-Forwarded-For": "198.51.100.4"})
    assert relayed.status_code == 403 and "COCOON_METRICS_TOKEN" in relayed.json()["error"]["message"]
    assert httpx.get(server.url + "/metrics", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    guarded = server_factory(trusted_proxies="127.0.0.1/32", metrics_token="m3trics")
    assert httpx.get(guarded.url + "/metrics").status_code == 403, "with a token set, everyone needs it"
    assert (
        httpx.get(
            guarded.url + "/metrics", headers={"X-Forwarded-For": "198.51.100.4", "Authorization": "Bearer m3trics"}
        ).status_code
        == 200
    )


def test_the_database_gauges_are_read_at_most_every_few_seconds(
    server_factory: ServerFactory, simulator: Simulator, database_url: str
) -> None:
    """Seen: every scrape ran two queries."""
    server = server_factory(upstream_url=simulator.url, upstream_read_timeout="8")
    key = new_account(server, database_url, TON)
    first_scrape = time.monotonic()
    before = open_reservations(httpx.get(server.url + "/metrics").text)
    hanging = threading.Thread(
        target=lambda: httpx.post(
            server.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            json={
                "model": "Qwen/Qwen3-32B",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "[[sim:fault=hang]]"}],
            },
        )
    )
    hanging.start()
    try:
        while db_rows(database_url, "SELECT count(*) FROM holds")[0][0] <= before:
            time.sleep(0.05)
        assert time.monotonic() - first_scrape < DATABASE_GAUGE_SECONDS, "the machine was too slow to tell"
        assert open_reservations(httpx.get(server.url + "/metrics").text) == before, "read again within the interval"
        time.sleep(max(0.0, first_scrape + DATABASE_GAUGE_SECONDS + 0.2 - time.monotonic()))
        assert open_reservations(httpx.get(server.url + "/metrics").text) == before + 1
    finally:
        hanging.join()


def test_every_is_due_once_per_interval() -> None:
    now = [100.0]
    every = Every(5.0, clock=lambda: now[0])
    assert every.due() and not every.due()
    now[0] = 104.9
    assert not every.due()
    now[0] = 105.0
    assert every.due() and not every.due()
