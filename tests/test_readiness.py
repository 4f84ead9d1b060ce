"""Readiness (`/ready`) and supervised background loops: a loop that dies is reported and
restarted, `/health` stays 200 throughout, and an unreachable database or Redis and the
placeholder deposit wallet each make `/ready` answer 503 naming them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerFactory
from fastapi.testclient import TestClient
from support import free_port

from cocoon_platform.app import create_app
from cocoon_platform.config import DEFAULT_DEPOSIT_WALLET, PLACEHOLDER_WALLET_WARNING, Settings
from cocoon_platform.db.migrate import upgrade_head
from cocoon_platform.ops.lease import FileLease, run_exclusively
from cocoon_platform.ops.supervisor import Supervisor
from cocoon_platform.state import AppState
from cocoon_platform.ton.address import TonAddress

OWN_WALLET = TonAddress(0, bytes(range(32))).to_friendly(bounceable=False, testnet=False)


def settings_for(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "deposit_wallet": OWN_WALLET,
        "deposit_watcher": False,
        "rates_enabled": False,
        "upstream_url": "http://127.0.0.1:9",
        "log_level": "WARNING",
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ready.db'}"
    upgrade_head(settings_for(url))
    return url


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(sqlite_url))) as client:
        yield client


def platform_state(client: TestClient) -> AppState:
    state: AppState = client.app.api.state.platform  # type: ignore[attr-defined]
    return state


def kill(client: TestClient, name: str) -> asyncio.Task[None]:
    """Cancel the loop's current run from outside and return once its supervisor saw it die."""
    loops = platform_state(client).loops

    async def cancel_and_wait() -> asyncio.Task[None]:
        run = loops.running(name)
        assert run is not None, f"{name} is not running"
        run.cancel()
        while loops.running(name) is run:
            await asyncio.sleep(0.01)
        return run

    return client.portal.call(cancel_and_wait)  # type: ignore[union-attr]


def test_ready_when_all_is_well(client: TestClient) -> None:
    answer = client.get("/ready")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "ready", "problems": []}


def test_a_killed_loop_makes_ready_503_naming_it_while_health_stays_200(client: TestClient) -> None:
    loops = platform_state(client).loops
    loops.first_backoff = loops.max_backoff = 3600  # stays down for the test's length
    kill(client, "sweeper")
    answer = client.get("/ready")
    assert answer.status_code == 503
    assert answer.json() == {"status": "not_ready", "problems": ["background loop sweeper is down: cancelled"]}
    assert client.get("/health").status_code == 200
    assert platform_state(client).loops.running("billing") is not None, "the other loops run on"


def test_a_killed_loop_is_restarted(client: TestClient) -> None:
    loops = platform_state(client).loops
    loops.first_backoff = 0.01
    killed = kill(client, "billing")

    async def restarted() -> None:
        while loops.running("billing") in (None, killed):
            await asyncio.sleep(0.01)

    client.portal.call(asyncio.wait_for, restarted(), 30)  # type: ignore[union-attr]
    assert client.get("/ready").status_code == 200
    # The restarted store answers (a key nobody has gets no hold).
    billing = platform_state(client).billing
    reserve = billing.reserve(b"\0" * 32, 1, 0, 0, "hold-after-restart", 60, model="any", overdraft_min_credits=0)
    assert client.portal.call(asyncio.wait_for, reserve, 30) is None  # type: ignore[union-attr]


def test_unreachable_database_and_redis_and_the_placeholder_wallet_are_each_named() -> None:
    dead_pg = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    settings = settings_for(
        dead_pg, deposit_wallet=DEFAULT_DEPOSIT_WALLET, redis_url=f"redis://127.0.0.1:{free_port()}"
    )
    with TestClient(create_app(settings)) as client:
        answer = client.get("/ready")
        assert client.get("/health").status_code == 200
    assert answer.status_code == 503
    found = answer.json()["problems"]
    assert [line.split(":")[0] for line in found] == [
        "database unreachable",
        "redis unreachable",
        "deposit wallet is the placeholder default (set COCOON_DEPOSIT_WALLET)",
    ], found


def test_a_loop_that_raises_is_logged_and_restarted_with_a_growing_backoff(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> int:
        stop = asyncio.Event()
        supervisor = Supervisor(stop, first_backoff=0.001, max_backoff=0.004)
        starts = 0

        async def failing(_: asyncio.Event) -> None:
            nonlocal starts
            starts += 1
            if starts == 4:
                await stop.wait()
                return
            raise RuntimeError(f"boom {starts}")

        supervisor.spawn("failing", failing)
        while starts < 4:
            await asyncio.sleep(0.001)
        assert supervisor.down() == [], "the fourth run is running"
        stop.set()
        await supervisor.close()
        return starts

    assert asyncio.run(scenario()) == 4
    failures = [r for r in caplog.records if r.name == "cocoon_platform.ops.supervisor"]
    assert [r.getMessage() for r in failures] == [
        f"background loop failing is down (RuntimeError: boom {n}); restarting in {b} s"
        for n, b in ((1, 0.001), (2, 0.002), (3, 0.004))
    ]
    assert all(r.exc_info is not None for r in failures), "each failure is logged with its traceback"


def test_serve_warns_about_the_placeholder_wallet_and_ready_names_it(server_factory: ServerFactory) -> None:
    placeholder = server_factory()
    own = server_factory(deposit_wallet=OWN_WALLET)
    with placeholder.client() as client:
        answer = client.get("/ready")
        assert answer.status_code == 503 and "placeholder" in answer.json()["problems"][0], answer.text
        assert client.get("/health").status_code == 200
    with own.client() as client:
        answer = client.get("/ready")
        assert answer.status_code == 200, answer.text
    assert PLACEHOLDER_WALLET_WARNING in placeholder.log()
    assert PLACEHOLDER_WALLET_WARNING not in own.log()


def test_a_failing_exclusive_job_ends_its_runner_with_the_lease_released(tmp_path: Path) -> None:
    """The deposit watcher's runner passes a job's failure up (to its supervisor) instead of
    swallowing it and retaking the lease at once; the lease is free for another instance."""

    async def scenario() -> None:
        lease = FileLease(str(tmp_path / "job.lock"))
        changes: list[bool] = []
        stop = asyncio.Event()
        runs = 0

        async def job(_: asyncio.Event) -> None:
            nonlocal runs
            runs += 1
            if runs == 3:  # a runner that retried on its own would end here, without the error
                stop.set()
            raise RuntimeError("job broke")

        with pytest.raises(RuntimeError, match="job broke"):
            await run_exclusively(lease, job, stop, changes.append, retry_seconds=0.01)
        assert changes == [True, False]
        other = FileLease(str(tmp_path / "job.lock"))
        assert await other.try_acquire()
        await other.release()

    asyncio.run(scenario())
