"""The SQLite billing store's own cost: reservations and settlements applied in batches.

    python bench/sqlite_store.py [--batches 1,7,14] [--requests 20000] [--limited]

Runs the production `SqliteBillingStore._apply` on a migrated database with 64 funded accounts, as
the committer does in steady state: each batch reserves `n` new requests and settles the `n` of
the batch before. Prints microseconds per request (one reservation and one settlement) and the
pages each commit writes to the WAL, by table and index: a commit's cost is mostly its pages.
In-process and single-threaded, no network; the WAL starts over between rounds, as the running
store keeps it short. With --limited every key has a credit limit (far above what the run spends),
so each reservation and settlement also moves the key's counters.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import random
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cocoon_platform.accounts.limits import model_needle
from cocoon_platform.billing.store import Reservation, Settlement, SqliteBillingStore
from cocoon_platform.proxy.handler import new_request_id

ACCOUNTS = 64
MODEL = "Qwen/Qwen3-32B"


def migrated_database(directory: str, limited: bool) -> str:
    path = os.path.join(directory, "bench.db")
    env = dict(os.environ, COCOON_DATABASE_URL=f"sqlite+aiosqlite:///{path}")
    subprocess.run(
        [str(Path(sys.executable).parent / "cocoon-platform"), "migrate"], env=env, check=True, capture_output=True
    )
    db = sqlite3.connect(path, isolation_level=None)
    for i in range(ACCOUNTS):
        account = db.execute(
            "INSERT INTO accounts (deposit_code, balance_nanoton, reserved_nanoton, created_at) "
            "VALUES (?, ?, 0, '2026-01-01') RETURNING id",
            (f"bench{i}", 10**16),
        ).fetchone()[0]
        db.execute(
            "INSERT INTO api_keys (account_id, key_hash, prefix, created_at, credit_limit_nanoton) "
            "VALUES (?, ?, 'ck_', '2026-01-01', ?)",
            (account, hashlib.sha256(f"key{i}".encode()).digest(), 10**17 if limited else None),
        )
    db.close()
    return path


class Steady:
    """Each step reserves `size` requests and settles those of the step before, in one batch."""

    def __init__(self, store: SqliteBillingStore, size: int) -> None:
        self.store = store
        self.size = size
        self.keys = [hashlib.sha256(f"key{i}".encode()).digest() for i in range(ACCOUNTS)]
        self.pending: list[Reservation] = []

    def step(self) -> None:
        expires = int(time.time()) + 600
        reserves = [
            (random.choice(self.keys), 200_000_000, 0, 0, new_request_id(), expires, model_needle(MODEL), 0)
            for _ in range(self.size)
        ]
        settles = [
            Settlement(r, 123_456, r.hold_id, MODEL, "chat", 40, 0, 20, 5, "ok", 200, False, 3) for r in self.pending
        ]
        self.pending = [r for r in self.store._apply(reserves, settles)[0] if r is not None]


def frames_by_owner(store: SqliteBillingStore, path: str, steady: Steady, steps: int) -> dict[str, float]:
    """WAL frames per commit, by the table or index owning each page (needs SQLite's dbstat)."""
    db = store._connection()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for _ in range(steps):
        steady.step()
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    wal = Path(path + "-wal").read_bytes()
    pages = [
        struct.unpack(">I", wal[offset : offset + 4])[0]
        for offset in range(32, len(wal) - page_size - 23, page_size + 24)
    ]
    try:
        owner = dict((page, name) for name, page in db.execute("SELECT name, pageno FROM dbstat"))
    except sqlite3.OperationalError:
        owner = {}
    counts = collections.Counter(owner.get(page, "(all pages)" if not owner else "(free or header)") for page in pages)
    return {name: count / steps for name, count in counts.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,7,14", help="requests per batch, comma-separated")
    parser.add_argument("--requests", type=int, default=20000, help="per round; three rounds after a warm-up")
    parser.add_argument("--limited", action="store_true", help="every key has a credit limit")
    args = parser.parse_args()
    for size in (int(n) for n in args.batches.split(",")):
        with tempfile.TemporaryDirectory() as directory:
            path = migrated_database(directory, args.limited)
            store = SqliteBillingStore(path, "NORMAL", 256)
            steady = Steady(store, size)
            steps = max(1, args.requests // size)
            for _ in range(steps):
                steady.step()
            rounds = []
            for _ in range(3):
                store._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as the maintainer keeps it short
                started = time.perf_counter()
                for _ in range(steps):
                    steady.step()
                rounds.append((time.perf_counter() - started) / (steps * size) * 1e6)
            frames = frames_by_owner(store, path, steady, max(50, 1400 // size))
            total = sum(frames.values())
            print(
                f"batch of {size:>2}: best {min(rounds):.1f} us per request (rounds "
                f"{', '.join(f'{r:.1f}' for r in rounds)}); {total:.1f} WAL pages per commit, "
                f"{total / size:.2f} per request"
            )
            for name, count in frames.items():
                print(f"    {count:6.2f}  {name}")
            store._connection().close()


if __name__ == "__main__":
    main()
