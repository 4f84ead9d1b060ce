"""Online backups of the SQLite database.

Rules:
- The copy is made with SQLite's online backup API while the platform keeps serving: it is a
  consistent snapshot of one moment (the WAL included), never a torn file copy.
- The copy is written beside its destination under a temporary name and renamed into place only
  after it passed `PRAGMA integrity_check`, so a failed or interrupted backup never leaves a
  half-written file under the name an operator will restore from.
- The copy holds every account's balance and key hashes: it is created readable by its owner only.
- PostgreSQL is backed up with its own tool (`pg_dump`, see docs/deploy.md): this module refuses it
  with that advice rather than pretending.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

# Pages copied per step: the source is locked only for one step at a time, so requests keep
# writing between steps (SQLite restarts the copy if a step sees a change, from another connection).
PAGES_PER_STEP = 4096


class BackupError(Exception):
    """A backup that cannot be made, with the reason for the operator."""


def sqlite_path(database_url: str) -> Path:
    """The database file of a SQLite URL; a clear error for anything else."""
    url = make_url(database_url)
    if not url.drivername.startswith("sqlite"):
        raise BackupError(
            "admin backup copies SQLite databases; back up PostgreSQL with pg_dump "
            "(pg_dump --format=custom --file=cocoon.dump <database>; see docs/deploy.md)"
        )
    if not url.database or url.database == ":memory:":
        raise BackupError("the database is in memory: there is nothing on disk to back up")
    return Path(url.database)


def backup_sqlite(source: Path, destination: Path, *, overwrite: bool = False) -> int:
    """Copy a live SQLite database to `destination`; returns the copy's size in bytes."""
    if not source.exists():
        raise BackupError(f"no database at {source}")
    if destination.exists() and not overwrite:
        raise BackupError(f"{destination} exists; pass --force to replace it")
    if destination.resolve() == source.resolve():
        raise BackupError("the backup would overwrite the database itself")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    partial.unlink(missing_ok=True)
    os.close(os.open(partial, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    try:
        with sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30) as src, sqlite3.connect(partial) as dst:
            src.backup(dst, pages=PAGES_PER_STEP)
            # The copy needs no WAL of its own: a single self-contained file restores anywhere.
            dst.execute("PRAGMA journal_mode=DELETE")
            (verdict,) = dst.execute("PRAGMA integrity_check").fetchone()
            if verdict != "ok":
                raise BackupError(f"the copy failed its integrity check: {verdict}")
        with open(partial, "rb") as copied:
            os.fsync(copied.fileno())
        os.replace(partial, destination)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return destination.stat().st_size
