"""SQLite's database, WAL and shared-memory files are for the platform's user alone (#14 item 13)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
from support import start_server


def test_database_wal_and_shm_files_are_created_0600(tmp_path: Path) -> None:
    """Seen: all three were created world-readable (0644 under the usual umask)."""
    old_umask = os.umask(0o022)  # the usual default, whatever this test runner's is
    try:
        server = start_server(tmp_path, f"sqlite+aiosqlite:///{tmp_path}/data/cocoon.db")
    finally:
        os.umask(old_umask)
    try:
        assert httpx.post(server.url + "/api/register").status_code == 200  # a write: the WAL is in use
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "data").iterdir()}
        assert {"cocoon.db", "cocoon.db-wal", "cocoon.db-shm"} <= set(files), files
        assert all(mode == 0o600 for mode in files.values()), {k: oct(v) for k, v in files.items()}
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    finally:
        server.stop()


def test_an_existing_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    from cocoon_platform.db.engine import make_private

    database = tmp_path / "cocoon.db"
    for path in (database, tmp_path / "cocoon.db-wal", tmp_path / "cocoon.db-shm"):
        path.write_bytes(b"")
        path.chmod(0o644)
    make_private(database)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o600}
