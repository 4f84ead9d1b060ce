"""Fixtures: the fake toncenter as a real subprocess on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FAKE_WALLET = "EQAv6GynfX6rrRlbNjYHpa5Mz1UDE61s5VPg-TN8sBFeR9Sp"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fake toncenter exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/_ton/stats", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"fake toncenter did not start:\n{log.read_text()}")


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of ``python -m cocoon_simulator.toncenter`` (session-wide)."""
    port = _free_port()
    log = tmp_path_factory.mktemp("fake-toncenter") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cocoon_simulator.toncenter",
                "--port",
                str(port),
                "--wallet",
                FAKE_WALLET,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class FakeToncenter:
    """Blocking HTTP helpers bound to a running fake."""

    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, payload: Any) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        """(status, JSON body, headers) without raising on HTTP errors."""
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read()), response.headers
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read()), exc.headers

    def deposit(self, **fields: Any) -> list[dict[str, Any]]:
        transactions: list[dict[str, Any]] = self.post("/_ton/deposits", fields)["transactions"]
        return transactions


@pytest.fixture()
def fake(fake_server: str) -> FakeToncenter:
    """The fake with an empty chain, no faults and zeroed stats."""
    client = FakeToncenter(fake_server)
    client.post("/_ton/reset", {})
    return client


@pytest.fixture()
def free_port() -> Callable[[], int]:
    return _free_port
