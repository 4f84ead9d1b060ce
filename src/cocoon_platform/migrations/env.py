"""Alembic environment: runs migrations over the platform's async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from cocoon_platform.config import Settings
from cocoon_platform.db.engine import database
from cocoon_platform.db.models import Base

# Any constant: serialises concurrent `serve` start-ups on one PostgreSQL database.
MIGRATION_LOCK_ID = 0x636F636F6F6E


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def _run_async(settings: Settings) -> None:
    async with database(settings) as db, db.engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()


settings = context.config.attributes.get("settings") or Settings()
asyncio.run(_run_async(settings))
