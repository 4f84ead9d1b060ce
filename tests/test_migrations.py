"""Alembic migrations: they build exactly the schema the models describe, and each step up and
down keeps the rows that are there, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import CreateIndex
from support import db_rows, fresh_database

from cocoon_platform.config import Settings
from cocoon_platform.db.engine import SQLITE_PAGE_SIZE
from cocoon_platform.db.migrate import alembic_config
from cocoon_platform.db.models import Base, LedgerEntry


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


def _migrate(database_url: str, direction: str, revision: str) -> None:
    config = alembic_config(Settings(database_url=database_url))
    (command.upgrade if direction == "up" else command.downgrade)(config, revision)


def _schema_differences(database_url: str) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))

    async def run() -> list[Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _holds_layout(database_url: str) -> tuple[bool, bool]:
    """(has the expiry index, is a rowid table: SQLite only, else True)."""
    if database_url.startswith("sqlite"):
        ddl = str(db_rows(database_url, "SELECT sql FROM sqlite_master WHERE name = 'holds'")[0][0])
        indexed = bool(db_rows(database_url, "SELECT 1 FROM sqlite_master WHERE name = 'ix_holds_expires_at'"))
        return indexed, "WITHOUT ROWID" not in ddl
    indexed = bool(db_rows(database_url, "SELECT 1 FROM pg_indexes WHERE indexname = 'ix_holds_expires_at'"))
    return indexed, True


def test_migrations_build_the_schema_the_models_describe(empty_database: str) -> None:
    _migrate(empty_database, "up", "head")
    assert _schema_differences(empty_database) == []
    if empty_database.startswith("sqlite"):
        assert db_rows(empty_database, "PRAGMA page_size") == [(SQLITE_PAGE_SIZE,)]


def test_lean_holds_migration_keeps_open_holds_both_ways(empty_database: str) -> None:
    _migrate(empty_database, "up", "0001")
    db_rows(
        empty_database,
        "INSERT INTO accounts (id, deposit_code, balance_nanoton, reserved_nanoton, created_at) "
        "VALUES (1, 'ABCD1234', 100, 40, CURRENT_TIMESTAMP)",
    )
    db_rows(
        empty_database,
        "INSERT INTO holds (id, account_id, amount_nanoton, expires_at) VALUES ('req_open', 1, 40, 1900000000)",
    )
    assert _holds_layout(empty_database) == (True, True)

    _migrate(empty_database, "up", "0002")
    indexed, rowid = _holds_layout(empty_database)
    assert not indexed
    assert rowid == (not empty_database.startswith("sqlite"))
    assert db_rows(empty_database, "SELECT id, account_id, amount_nanoton, expires_at FROM holds") == [
        ("req_open", 1, 40, 1900000000)
    ]

    _migrate(empty_database, "down", "0001")
    assert _holds_layout(empty_database) == (True, True)
    assert db_rows(empty_database, "SELECT id, amount_nanoton FROM holds") == [("req_open", 40)]
    _migrate(empty_database, "up", "head")
    assert _schema_differences(empty_database) == []


def _ledger_account_index(database_url: str) -> tuple[str, str] | None:
    """(name, definition) of the ledger's per-account index."""
    if database_url.startswith("sqlite"):
        rows = db_rows(
            database_url,
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'ledger_entries' AND name LIKE 'ix_ledger_entries_account%'",
        )
    else:
        rows = db_rows(
            database_url,
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger_entries' "
            "AND indexname LIKE 'ix_ledger_entries_account%'",
        )
    assert len(rows) <= 1
    return (str(rows[0][0]), str(rows[0][1])) if rows else None


def test_ledger_account_index_leaves_out_usage_entries_both_ways(empty_database: str) -> None:
    _migrate(empty_database, "up", "0004")
    db_rows(
        empty_database,
        "INSERT INTO accounts (id, deposit_code, balance_nanoton, reserved_nanoton, created_at) "
        "VALUES (1, 'ABCD1234', 90, 0, CURRENT_TIMESTAMP)",
    )
    db_rows(
        empty_database,
        "INSERT INTO ledger_entries (account_id, kind, amount_nanoton, reference, created_at) "
        "VALUES (1, 'deposit', 100, 'deposit:a', CURRENT_TIMESTAMP), "
        "(1, 'usage', -10, 'usage:req_a', CURRENT_TIMESTAMP)",
    )
    name, definition = _ledger_account_index(empty_database) or ("", "")
    assert name == "ix_ledger_entries_account_id_id" and "usage" not in definition

    _migrate(empty_database, "up", "0005")
    name, definition = _ledger_account_index(empty_database) or ("", "")
    assert name == "ix_ledger_entries_account_id_id_not_usage"
    assert "WHERE" in definition.upper() and "<> 'usage'" in definition.replace("::text", "")
    assert db_rows(empty_database, "SELECT kind, amount_nanoton FROM ledger_entries ORDER BY id") == [
        ("deposit", 100),
        ("usage", -10),
    ]

    _migrate(empty_database, "down", "0004")
    name, definition = _ledger_account_index(empty_database) or ("", "")
    assert name == "ix_ledger_entries_account_id_id" and "usage" not in definition
    _migrate(empty_database, "up", "head")
    assert _schema_differences(empty_database) == []


def test_the_models_ledger_index_has_the_migrations_predicate() -> None:
    """Alembic's comparison ignores an index's WHERE: this keeps the model and 0005 in step."""
    (index,) = [i for i in LedgerEntry.__table__.indexes if i.name == "ix_ledger_entries_account_id_id_not_usage"]
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        assert (
            str(CreateIndex(index).compile(dialect=dialect))
            .rstrip()
            .endswith("ledger_entries (account_id, id) WHERE kind <> 'usage'")
        )


def test_counted_holds_migration_keeps_open_holds_both_ways(empty_database: str) -> None:
    """0008: a hold that named a key counted against its limit; one that named none did not."""
    _migrate(empty_database, "up", "0007")
    db_rows(
        empty_database,
        "INSERT INTO accounts (id, deposit_code, balance_nanoton, reserved_nanoton, created_at) "
        "VALUES (1, 'ABCD1234', 100, 100, CURRENT_TIMESTAMP)",
    )
    db_rows(
        empty_database,
        "INSERT INTO holds (id, account_id, amount_nanoton, expires_at, key_id) "
        "VALUES ('req_counted', 1, 40, 1900000000, 7), ('req_free', 1, 60, 1900000000, NULL)",
    )
    _migrate(empty_database, "up", "0008")
    assert db_rows(empty_database, "SELECT id, key_id, key_counted FROM holds ORDER BY id") == [
        ("req_counted", 7, True),
        ("req_free", None, False),
    ]
    _migrate(empty_database, "down", "0007")
    assert db_rows(empty_database, "SELECT id, key_id, amount_nanoton FROM holds ORDER BY id") == [
        ("req_counted", 7, 40),
        ("req_free", None, 60),
    ]
    _migrate(empty_database, "up", "head")
    assert _schema_differences(empty_database) == []
