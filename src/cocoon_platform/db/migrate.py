"""Apply Alembic migrations programmatically (`cocoon-platform migrate`, and on `serve`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from cocoon_platform.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    return config


def upgrade_head(settings: Settings) -> None:
    """Bring the database to the newest schema; safe to run from several processes at once."""
    command.upgrade(alembic_config(settings), "head")
