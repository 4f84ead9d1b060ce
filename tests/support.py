"""Real processes for tests: the platform server, the simulators, throwaway databases."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("COCOON_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = "redis://127.0.0.1:6379/7"  # a database of its own: tests flush it
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
            # Tests register many accounts from one address; rate-limit tests turn these back on.
            "COCOON_RATE_LIMIT_RPM": "0",
            "COCOON_RATE_LIMIT_CONCURRENT": "0",
            "COCOON_RATE_LIMIT_SIGNUP_PER_MINUTE": "0",
            # Tests fail authentication on purpose; the throttle's own tests turn it back on.
            "COCOON_AUTH_FAILURES_PER_MINUTE": "0",
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


def run_cli(
    args: list[str], database_url: str, settings: Mapping[str, str] | None = None, timeout: float = 60, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = base_env({"COCOON_DATABASE_URL": database_url, **(settings or {})})
    return subprocess.run(
        [str(BIN / "cocoon-platform"), *args], env=env, capture_output=True, text=True, timeout=timeout, input=stdin
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


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    """A new, empty database of the backend ("sqlite" in `directory`, or "postgresql"), dropped after use."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{directory}/cocoon.db"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


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


@dataclass
class Simulator(Process):
    """A running COCOON-client simulator (`python -m cocoon_simulator`)."""

    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, **changes: object) -> None:
        httpx.post(self.url + "/_sim/config", json=changes, timeout=5).raise_for_status()

    def stats(self) -> dict[str, object]:
        return httpx.get(self.url + "/_sim/stats", timeout=5).json()  # type: ignore[no-any-return]

    def reset(self) -> None:
        httpx.post(self.url + "/_sim/reset", timeout=5).raise_for_status()


def start_simulator(tmp: Path, *extra: str) -> Simulator:
    port = free_port()
    sim = Simulator(
        args=[sys.executable, "-m", "cocoon_simulator", "--port", str(port), *extra],
        env=base_env(),
        log_path=tmp / f"simulator-{port}.log",
        port=port,
    )
    sim.start()
    wait_http(sim.url + "/v1/models", proc=sim.proc)
    return sim


def db_rows(database_url: str, sql: str, params: Mapping[str, object] | None = None) -> list[tuple[object, ...]]:
    """Run one statement against the test database; the rows it returns, if any."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    async def read() -> list[tuple[object, ...]]:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(sql), dict(params or {}))
                return [tuple(r) for r in result.all()] if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(read())


def fund(database_url: str, api_key: str, nanoton: int) -> None:
    """Credit an account through the ledger, as `admin credit` does, without a process start."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from cocoon_platform.accounts.service import account_by_key
    from cocoon_platform.billing.ledger import EntryKind, post_entry
    from cocoon_platform.db.engine import create_sessionmaker

    async def credit() -> None:
        engine = create_async_engine(database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                account = await account_by_key(session, api_key)
                assert account is not None
                await post_entry(session, account.id, nanoton, EntryKind.ADMIN_CREDIT, f"test:{uuid.uuid4()}")
                await session.commit()
        finally:
            await engine.dispose()

    asyncio.run(credit())


def new_account(server: Server, database_url: str, nanoton: int = 0) -> str:
    """Register through the API and fund through the ledger; returns the key."""
    key = str(httpx.post(server.url + "/api/register", timeout=10).json()["api_key"])
    if nanoton:
        fund(database_url, key, nanoton)
    return key


def ledger_consistent(database_url: str) -> list[tuple[object, ...]]:
    """Accounts whose balance differs from the sum of their ledger entries (empty when sound)."""
    return db_rows(
        database_url,
        """
        SELECT a.id, a.balance_nanoton, COALESCE(SUM(l.amount_nanoton), 0)
          FROM accounts a LEFT JOIN ledger_entries l ON l.account_id = a.id
         GROUP BY a.id, a.balance_nanoton
        HAVING a.balance_nanoton != COALESCE(SUM(l.amount_nanoton), 0)""",
    )
