"""ToncenterClient against the fake (a subprocess) and against misbehaving local servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web

from cocoon_platform.ton.address import TonAddress
from cocoon_platform.ton.comment import BodyKind
from cocoon_platform.ton.toncenter import (
    ChainTransaction,
    Classification,
    ProviderError,
    ProviderRateLimited,
    ToncenterClient,
    classify,
)

WALLET = TonAddress.parse("EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp")
T = TypeVar("T")


def run_with_client(
    base_url: str,
    scenario: Callable[[ToncenterClient], Awaitable[T]],
    api_key: str | None = None,
    timeout: float = 5.0,
) -> T:
    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            client = ToncenterClient(session, base_url, api_key=api_key, timeout=timeout)
            return await scenario(client)

    return asyncio.run(main())


def fetch(base_url: str, **kwargs: Any) -> list[ChainTransaction]:
    params: dict[str, Any] = {"start_lt": None, "limit": 100}
    params.update(kwargs)
    return run_with_client(base_url, lambda c: c.fetch_page(WALLET.to_friendly(), **params))


# --- against the fake ------------------------------------------------------------------------


def test_fetch_and_classify_every_kind(fake: Any) -> None:
    fake.deposit(comment="ABCD1234", amount_nanoton=2_000_000_000)
    fake.deposit(comment="ABCD1234", decoded=False)
    fake.deposit(kind="binary", comment="ABCD1234")
    fake.deposit(kind="encrypted", comment="ABCD1234")
    fake.deposit(kind="none")
    fake.deposit(kind="jetton", comment="ABCD1234")
    fake.deposit(comment="ABCD1234", bounced=True)
    fake.deposit(comment="ABCD1234", aborted=True)
    fake.deposit(comment="ABCD1234", out_msgs=1)
    fake.deposit(comment="ABCD1234", amount_nanoton=0)
    fake.deposit(comment="ABCD1234", finalised=False)
    page = fetch(fake.url, sort="asc")
    assert [classify(tx).value for tx in page] == [
        "credit",
        "credit",
        "unmatched",
        "unmatched",
        "unmatched",
        "ignore",
        "ignore",
        "ignore",
        "ignore",
        "ignore",
        "pending",
    ]
    first = page[0]
    assert first.body.kind is BodyKind.TEXT and first.body.text == "ABCD1234"
    assert first.value_nanoton == 2_000_000_000 and first.incoming and first.finalised
    assert TonAddress.parse(first.account) == WALLET
    assert first.source is not None and len(first.hash) == 32
    assert page[1].body.text == "ABCD1234"  # decoded absent: read from the BoC

    fake.post("/_ton/finalise", {})
    [last] = fetch(fake.url, sort="desc", limit=1)
    assert classify(last) is Classification.CREDIT


def test_inclusive_cursor_polling_sees_everything_once(fake: Any) -> None:
    """The watcher pattern: sort=asc, start_lt=<last lt>, skip what was already seen."""
    expected = {tx["hash"] for tx in fake.deposit(comment="A", count=25)}

    async def drain(client: ToncenterClient) -> list[str]:
        seen: list[str] = []
        cursor: int | None = None
        while True:
            page = await client.fetch_page(WALLET.to_raw(), cursor, limit=10, sort="asc")
            fresh = [tx for tx in page if tx.hash_b64 not in seen]
            if not fresh:
                return seen
            seen += [tx.hash_b64 for tx in fresh]
            cursor = page[-1].lt
            if len(seen) == 25:
                fake.deposit(comment="late", count=3)  # arrivals while polling

    seen = run_with_client(fake.url, drain)
    assert len(seen) == len(set(seen)) == 28
    assert expected <= set(seen)


def test_end_lt_and_offset_are_sent(fake: Any) -> None:
    created = [int(tx["lt"]) for tx in fake.deposit(comment="A", count=5)]
    page = fetch(fake.url, start_lt=created[1], end_lt=created[3], sort="desc", offset=1)
    assert [tx.lt for tx in page] == [created[2], created[1]]


def test_server_errors_and_rate_limits(fake: Any) -> None:
    fake.post("/_ton/faults", {"errors": 1, "rate_limit": 1, "retry_after": 2.5})
    with pytest.raises(ProviderError) as error:
        fetch(fake.url)
    assert error.value.status == 500 and not isinstance(error.value, ProviderRateLimited)
    with pytest.raises(ProviderRateLimited) as limited:
        fetch(fake.url)
    assert limited.value.retry_after == 2.5
    assert fetch(fake.url) == []


def test_api_key_lifts_the_per_second_limit(free_port: Callable[[], int]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cocoon_simulator.toncenter",
            "--port",
            str(port),
            "--rate-limit-per-second",
            "1",
            "--keyed-rate-limit-per-second",
            "100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(url)

        async def burst(client: ToncenterClient) -> int:
            served = 0
            for _ in range(5):
                try:
                    await client.fetch_page(WALLET.to_raw(), None, limit=1)
                    served += 1
                except ProviderRateLimited as exc:
                    assert exc.retry_after == 1.0
            return served

        assert run_with_client(url, burst) == 1
        assert run_with_client(url, burst, api_key="secret") == 5
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/_ton/stats", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_argument_validation() -> None:
    async def scenario(client: ToncenterClient) -> None:
        for kwargs in ({"limit": 0}, {"limit": 1001}, {"sort": "up"}, {"offset": -1}):
            params: dict[str, Any] = {"start_lt": None, "limit": 10}
            params.update(kwargs)
            with pytest.raises(ValueError):
                await client.fetch_page("x", **params)

    run_with_client("http://127.0.0.1:1", scenario)


# --- against misbehaving servers -----------------------------------------------------------


@asynccontextmanager
async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], port: int) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/api/v3/transactions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def fetch_from(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], port: int, timeout: float = 5.0
) -> list[ChainTransaction]:
    async def main() -> list[ChainTransaction]:
        async with serve(handler, port) as url, aiohttp.ClientSession() as session:
            client = ToncenterClient(session, url + "/", api_key="k1", timeout=timeout)
            return await client.fetch_page("acct", 5, 10, end_lt=9)

    return asyncio.run(main())


def respond(
    status: int, body: bytes, headers: dict[str, str] | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return handler


def test_request_format(free_port: Callable[[], int]) -> None:
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        return web.json_response({"transactions": [], "address_book": {}})

    assert fetch_from(handler, free_port()) == []
    [request] = seen
    assert request.headers["X-API-Key"] == "k1"
    assert dict(request.query) == {
        "account": "acct",
        "start_lt": "5",
        "end_lt": "9",
        "limit": "10",
        "offset": "0",
        "sort": "asc",
    }


@pytest.mark.parametrize(
    ("status", "body", "headers", "retry_after"),
    [
        (429, b"{}", None, 1.0),
        (429, b"{}", {"Retry-After": "7"}, 7.0),
        (429, b"{}", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1.0),
        (429, b"{}", {"Retry-After": "-3"}, 0.0),
        (429, b"{}", {"Retry-After": "inf"}, 1.0),
        (429, b"{}", {"Retry-After": "100000"}, 300.0),
    ],
)
def test_rate_limited_retry_after(
    free_port: Callable[[], int],
    status: int,
    body: bytes,
    headers: dict[str, str] | None,
    retry_after: float,
) -> None:
    with pytest.raises(ProviderRateLimited) as info:
        fetch_from(respond(status, body, headers), free_port())
    assert info.value.retry_after == retry_after


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, b'{"error": "boom"}'),
        (502, b"<html>bad gateway</html>"),
        (503, b""),
        (400, b'{"error": "bad account"}'),
        (200, b"not json"),
        (200, b""),
        (200, b"[]"),
        (200, b'{"transactions": null}'),
        (200, b'{"transactions": [{"hash": 1}]}'),
        (200, b'{"transactions": [{"lt": "1", "now": 1, "account": "a", "hash": "AAAA"}]}'),
        (200, b'{"transactions": [17]}'),
        (200, b"\xff\xfe"),
    ],
)
def test_bad_responses_are_provider_errors(free_port: Callable[[], int], status: int, body: bytes) -> None:
    with pytest.raises(ProviderError) as info:
        fetch_from(respond(status, body), free_port())
    assert not isinstance(info.value, ProviderRateLimited)


def test_timeout_is_a_provider_error(free_port: Callable[[], int]) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(2)
        return web.json_response({"transactions": []})

    with pytest.raises(ProviderError, match="request failed"):
        fetch_from(slow, free_port(), timeout=0.2)


def test_connection_refused_is_a_provider_error(free_port: Callable[[], int]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProviderError, match="request failed"):
        run_with_client(url, lambda c: c.fetch_page("acct", None, 10))
