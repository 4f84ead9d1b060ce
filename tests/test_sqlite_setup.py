"""One SQLite connection setup (db/engine.py: sqlite_setup) for the SQLAlchemy engine and the
billing store: both check foreign keys, write ahead and sync the same way; only the wait for a
lock differs (the store never waits: its batches are retried)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from cocoon_platform.billing.store import create_billing_store
from cocoon_platform.billing.store.sqlite import SqliteBillingStore
from cocoon_platform.config import Settings
from cocoon_platform.db.engine import database
from cocoon_platform.db.migrate import upgrade_head

PRAGMAS = ("foreign_keys", "journal_mode", "synchronous", "page_size", "busy_timeout")


def test_the_engine_and_the_billing_store_set_up_their_connections_alike(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'setup.db'}", _env_file=None)  # type: ignore[call-arg]
    upgrade_head(settings)

    async def engine_pragmas() -> dict[str, object]:
        async with database(settings) as db, db.engine.connect() as conn:
            return {name: (await conn.execute(text(f"PRAGMA {name}"))).scalar() for name in PRAGMAS}

    store = create_billing_store(settings)
    assert isinstance(store, SqliteBillingStore)
    connection = store._connection()
    try:
        ours = {name: connection.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS}
        theirs = asyncio.run(engine_pragmas())
        assert ours == {**theirs, "busy_timeout": 0}
        assert (ours["foreign_keys"], ours["journal_mode"], theirs["busy_timeout"]) == (1, "wal", 30_000)
        # So the store's own statements are checked too: a hold for no account is refused.
        with pytest.raises(sqlite3.IntegrityError):
            connection.execute("INSERT INTO holds (id, account_id, amount_nanoton, expires_at) VALUES ('h', 999, 1, 0)")
    finally:
        asyncio.run(store.close())
