"""`admin backup`: a consistent copy of a live SQLite database, and a clear refusal for PostgreSQL."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import httpx
from support import db_rows, new_account, run_cli, start_server, start_simulator


def test_backup_while_serving_is_consistent_and_private(tmp_path: Path) -> None:
    simulator = start_simulator(tmp_path)
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    server = start_server(tmp_path, database_url, {"COCOON_UPSTREAM_URL": simulator.url})
    try:
        key = new_account(server, database_url, 10**9)
        stop = threading.Event()
        answered: list[int] = []

        def traffic() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    answer = client.post(
                        "/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={
                            "model": "Qwen/Qwen3-32B",
                            "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 8,
                        },
                    )
                    answered.append(answer.status_code)

        workers = [threading.Thread(target=traffic) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            copy = tmp_path / "backups" / "copy.db"
            result = run_cli(["admin", "backup", str(copy)], database_url)
            assert result.returncode == 0, result.stderr
            assert "admin reconcile" in result.stdout
        finally:
            stop.set()
            for worker in workers:
                worker.join()
        assert answered and set(answered) == {200}
        assert stat.S_IMODE(copy.stat().st_mode) == 0o600
        assert not list(copy.parent.glob(".*partial"))

        # The copy is a database of one moment: its books balance, every hold in it accounted for.
        copy_url = f"sqlite+aiosqlite:///{copy}"
        reconcile = run_cli(["admin", "reconcile"], copy_url)
        assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
        (usage_rows,) = db_rows(copy_url, "SELECT COUNT(*) FROM usage_records")[0]
        assert 0 < int(str(usage_rows)) <= len(answered)

        # An existing file is never overwritten unless asked.
        again = run_cli(["admin", "backup", str(copy)], database_url)
        assert again.returncode != 0 and "--force" in again.stderr
        assert run_cli(["admin", "backup", "--force", str(copy)], database_url).returncode == 0
    finally:
        server.stop()
        simulator.stop()


def test_backup_of_postgresql_points_to_pg_dump(tmp_path: Path) -> None:
    result = run_cli(["admin", "backup", str(tmp_path / "x.db")], "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    assert result.returncode != 0 and "pg_dump" in result.stderr
    assert not (tmp_path / "x.db").exists()
