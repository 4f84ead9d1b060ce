"""A request owns its transaction (deps.get_session): what an endpoint wrote is committed when it
returns and rolled back when it raises, and the commit happens before the answer is sent, so a
commit that fails is an error answer, never a success whose writes were lost."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from cocoon_platform.config import Settings
from cocoon_platform.db.engine import create_engine, create_sessionmaker
from cocoon_platform.db.migrate import upgrade_head
from cocoon_platform.db.models import Account
from cocoon_platform.deps import SessionDep
from cocoon_platform.errors import InvalidRequest, install_handlers


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, SimpleNamespace]]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}", _env_file=None)  # type: ignore[call-arg]
    upgrade_head(settings)
    engine = create_engine(settings)
    api = FastAPI()
    install_handlers(api, lambda _: None)  # every error in OpenAI's shape
    api.state.platform = SimpleNamespace(sessionmaker=create_sessionmaker(engine))

    @api.post("/write/{code}")
    async def write(code: str, session: SessionDep) -> dict[str, str]:
        session.add(Account(deposit_code=code))
        return {"written": code}

    @api.post("/write-then-fail/{code}")
    async def write_then_fail(code: str, session: SessionDep) -> dict[str, str]:
        session.add(Account(deposit_code=code))
        await session.flush()
        raise InvalidRequest("refused after writing")

    @api.post("/write-twice/{code}")
    async def write_twice(code: str, session: SessionDep) -> dict[str, str]:
        session.add_all([Account(deposit_code=code), Account(deposit_code=code)])  # fails at commit
        return {"written": code}

    with TestClient(api, raise_server_exceptions=False) as client:
        yield client, SimpleNamespace(engine=engine, sessions=api.state.platform.sessionmaker)
    asyncio.run(engine.dispose())


def accounts_with(database: SimpleNamespace, code: str) -> int:
    async def count() -> int:
        async with database.sessions() as session:
            return int(await session.scalar(select(func.count()).where(Account.deposit_code == code)) or 0)

    return asyncio.run(count())


def test_a_request_that_returns_is_committed(app: tuple[TestClient, SimpleNamespace]) -> None:
    client, database = app
    code = secrets.token_hex(4).upper()
    assert client.post(f"/write/{code}").status_code == 200
    assert accounts_with(database, code) == 1


def test_a_request_that_raises_is_rolled_back(app: tuple[TestClient, SimpleNamespace]) -> None:
    client, database = app
    code = secrets.token_hex(4).upper()
    answer = client.post(f"/write-then-fail/{code}")
    assert answer.status_code == 400 and answer.json()["error"]["message"] == "refused after writing"
    assert accounts_with(database, code) == 0


def test_a_commit_that_fails_is_an_error_answer(app: tuple[TestClient, SimpleNamespace]) -> None:
    client, database = app
    code = secrets.token_hex(4).upper()
    answer = client.post(f"/write-twice/{code}")
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "internal_error"
    assert accounts_with(database, code) == 0
