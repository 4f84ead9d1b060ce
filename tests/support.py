"""Real processes for tests: the platform server, the simulators, throwaway databases."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("COCOON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@dataclass
class Process:
    """A child process with its log file; stopped with SIGTERM (or killed) at the end."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_path.parent
        )
        log.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Server(Process):
    """A running `cocoon-platform serve`."""

    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)  # type: ignore[arg-type]


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCOON_")}
    env.update(
        {
            "COCOON_DEPOSIT_WATCHER": "false",
            "COCOON_RATES_ENABLED": "false",
            "COCOON_TONCENTER_URL": "http://127.0.0.1:9",
            "COCOON_TONAPI_URL": "http://127.0.0.1:9",
            "COCOON_COINGECKO_URL": "http://127.0.0.1:9",
            "COCOON_LOG_LEVEL": "warning",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def start_server(tmp: Path, database_url: str, settings: Mapping[str, str] | None = None) -> Server:
    port = free_port()
    env = base_env({"COCOON_DATABASE_URL": database_url, "COCOON_PORT": str(port), **(settings or {})})
    server = Server(
        args=[str(BIN / "cocoon-platform"), "serve"],
        env=env,
        log_path=tmp / f"server-{port}.log",
        port=port,
        settings=dict(settings or {}),
    )
    server.start()
    wait_http(server.url + "/health", proc=server.proc)
    return server


def run_cli(args: list[str], database_url: str, settings: Mapping[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = base_env({"COCOON_DATABASE_URL": database_url, **(settings or {})})
    return subprocess.run(
        [str(BIN / "cocoon-platform"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def create_pg_database() -> str:
    """A fresh PostgreSQL database for one test run; returns its asyncpg URL."""
    import asyncio

    import asyncpg

    name = f"cocoon_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"


def drop_pg_database(url: str) -> None:
    import asyncio

    import asyncpg

    name = url.rsplit("/", 1)[1]

    async def drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())
