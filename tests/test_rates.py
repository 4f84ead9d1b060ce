"""TON/USD on /v1/balance: tonapi first, CoinGecko as fallback, null when neither answers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from conftest import ServerFactory
from support import free_port, new_account


class RatesHandler(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, object]] = {}

    def do_GET(self) -> None:
        body = self.answers.get(self.path.split("?")[0])
        if body is None:
            self.send_response(503)
            self.end_headers()
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture()
def rates_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), RatesHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def balance_after_rate(server_url: str, key: str) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        body = httpx.get(server_url + "/v1/balance", headers={"Authorization": f"Bearer {key}"}).json()
        if body["ton_usd_rate"] is not None or time.monotonic() > deadline:
            return body  # type: ignore[no-any-return]
        time.sleep(0.1)


def test_balance_in_usd_from_tonapi(server_factory: ServerFactory, rates_server: str, database_url: str) -> None:
    RatesHandler.answers = {"/v2/rates": {"rates": {"TON": {"prices": {"USD": 1.302}}}}}
    server = server_factory(rates_enabled="true", tonapi_url=rates_server, coingecko_url=rates_server)
    key = new_account(server, database_url, 1_500_000_000)
    body = balance_after_rate(server.url, key)
    assert body["ton_usd_rate"] == 1.302 and body["balance_usd"] == pytest.approx(1.953)


def test_balance_in_usd_falls_back_to_coingecko(
    server_factory: ServerFactory, rates_server: str, database_url: str
) -> None:
    RatesHandler.answers = {"/api/v3/simple/price": {"the-open-network": {"usd": 2.5}}}
    server = server_factory(rates_enabled="true", tonapi_url=rates_server, coingecko_url=rates_server)
    key = new_account(server, database_url, 2_000_000_000)
    body = balance_after_rate(server.url, key)
    assert body["ton_usd_rate"] == 2.5 and body["balance_usd"] == 5.0


def test_no_rate_source_means_null_not_error(server_factory: ServerFactory, database_url: str) -> None:
    server = server_factory(
        rates_enabled="true",
        tonapi_url=f"http://127.0.0.1:{free_port()}",
        coingecko_url=f"http://127.0.0.1:{free_port()}",
    )
    key = new_account(server, database_url, 1_000_000_000)
    response = httpx.get(server.url + "/v1/balance", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    assert response.json()["balance_usd"] is None and response.json()["ton_usd_rate"] is None
