"""Shared fixtures: every database-facing test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import Server, Simulator, fresh_database, start_server, start_simulator

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One fresh database per backend for the whole run; tests isolate by their own accounts."""
    with fresh_database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        yield url


@pytest.fixture(scope="session")
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


ServerFactory = Callable[..., Server]


@pytest.fixture(scope="module")
def server_factory(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """Start platform servers on the session's database; a module's are stopped when it ends
    (each holds database connections, and PostgreSQL allows only so many)."""
    started: list[Server] = []
    tmp: Path = tmp_path_factory.mktemp("servers")

    def start(**settings: str) -> Server:
        server = start_server(tmp, database_url, {f"COCOON_{k.upper()}": v for k, v in settings.items()})
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """One COCOON-client simulator for the run; tests pick faults per request with markers."""
    sim = start_simulator(tmp_path_factory.mktemp("simulator"))
    yield sim
    sim.stop()


@pytest.fixture(scope="session")
def platform(database_url: str, simulator: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The platform wired to the shared simulator, for the whole run."""
    server = start_server(
        tmp_path_factory.mktemp("platform"),
        database_url,
        {
            "COCOON_UPSTREAM_URL": simulator.url,
            "COCOON_UPSTREAM_READ_TIMEOUT": "3",
            "COCOON_STATS_REFRESH_SECONDS": "1",
        },
    )
    yield server
    server.stop()
