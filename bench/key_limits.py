"""What per-key limits cost the billing store: reservations and settlements at c1 and c16.

    python bench/key_limits.py --base REV [--database sqlite|postgresql] [--rounds 3] [--requests 2000]

Runs the production store (`create_billing_store`, its committers included) of two revisions on a
fresh database each: the base revision (before key limits), and this working tree twice, with
unlimited keys and with every key under a credit limit (far above what the run spends), so each
reservation and settlement also moves the key's counters. Each request is one reservation and its
settlement, as the inference handler makes them, on 16 accounts; c1 runs them one after another,
c16 sixteen at a time. Rounds alternate (base, unlimited, limited, base, ...) so the machine's slow
minutes fall on all three; the report gives medians of microseconds per request (wall) and of this
process's CPU per request (on SQLite that is all of the store's work; on PostgreSQL the server's
share is not in it). Each variant runs in a subprocess with its revision's source first on the path.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 16
MODEL = "Qwen/Qwen3-32B"
BIN = Path(sys.executable).parent


def key_hash(i: int) -> bytes:
    return hashlib.sha256(f"bench-key-{i}".encode()).digest()


async def one_round(database_url: str, limited: bool, concurrency: int, requests: int) -> dict[str, float]:
    """Child side: drive `requests` reservations and settlements at `concurrency` through the store."""
    from cocoon_platform.billing.store import Settlement, create_billing_store
    from cocoon_platform.config import Settings
    from cocoon_platform.proxy.handler import new_request_id

    store = create_billing_store(Settings(database_url=database_url))
    stop = asyncio.Event()
    committer = asyncio.create_task(store.run(stop))
    takes_model = "model" in inspect.signature(store.reserve).parameters
    extra = {"model": MODEL, "overdraft_min_credits": 0} if takes_model else {}
    per_worker = requests // concurrency

    async def worker(n: int) -> None:
        key = key_hash(n % ACCOUNTS)
        for _ in range(per_worker):
            request_id = new_request_id()
            held = await store.reserve(key, 200_000_000, 0, 0, request_id, 600, **extra)
            assert held is not None, "refused: the bench accounts are funded far beyond the run"
            await store.settle(Settlement(held, 123_456, request_id, MODEL, "chat", 40, 0, 20, 5, "ok", 200, False, 3))

    await asyncio.gather(*(worker(n) for n in range(concurrency)))  # warm-up: connections, statements
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    await committer
    done = per_worker * concurrency
    return {"wall_us": wall / done * 1e6, "cpu_us": cpu / done * 1e6, "limited": float(limited)}


def prepare(source: Path, database_url: str, limited: bool) -> None:
    """Migrate with the revision's own code and add 16 funded accounts with a key each."""
    env = dict(os.environ, COCOON_DATABASE_URL=database_url, PYTHONPATH=str(source / "src"))
    subprocess.run(
        [sys.executable, "-c", "import sys; from cocoon_platform.cli import main; sys.exit(main())", "migrate"],
        env=env,
        check=True,
        capture_output=True,
    )
    asyncio.run(_add_accounts(database_url, limited))


async def _add_accounts(database_url: str, limited: bool) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    async with engine.begin() as db:
        for i in range(ACCOUNTS):
            account = (
                await db.execute(
                    text(
                        "INSERT INTO accounts (deposit_code, balance_nanoton, reserved_nanoton, "
                        "created_at) VALUES (:c, :b, 0, CURRENT_TIMESTAMP) RETURNING id"
                    ),
                    {"c": f"BENCH{i:03d}", "b": 10**16},
                )
            ).scalar_one()
            await db.execute(
                text(
                    "INSERT INTO api_keys (account_id, key_hash, prefix, created_at) "
                    "VALUES (:a, :h, 'ck_bench', CURRENT_TIMESTAMP)"
                ),
                {"a": account, "h": key_hash(i)},
            )
        if limited:
            await db.execute(text("UPDATE api_keys SET credit_limit_nanoton = :limit"), {"limit": 10**17})
    await engine.dispose()


def fresh_database(kind: str, directory: Path, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{directory / name}.db"
    sys.path.insert(0, str(ROOT / "tests"))
    from support import create_pg_database

    return create_pg_database()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the revision before key limits (git rev)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="per round and concurrency")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, limited, concurrency, requests = json.loads(args.child)
        print(json.dumps(asyncio.run(one_round(url, limited, concurrency, requests))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        base = workdir / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(base), args.base],
            check=True,
            capture_output=True,
        )
        try:
            variants = {"base": (base, False), "unlimited": (ROOT, False), "limited": (ROOT, True)}
            urls = {}
            for name, (source, limited) in variants.items():
                urls[name] = fresh_database(args.database, workdir, name)
                prepare(source, urls[name], limited)
            results: dict[tuple[str, int], list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                for concurrency in (1, 16):
                    for name, (source, limited) in variants.items():
                        env = dict(os.environ, PYTHONPATH=str(source / "src"))
                        out = subprocess.run(
                            [
                                sys.executable,
                                __file__,
                                "--base",
                                args.base,
                                "--child",
                                json.dumps([urls[name], limited, concurrency, args.requests]),
                            ],
                            env=env,
                            check=True,
                            capture_output=True,
                            text=True,
                        ).stdout
                        results.setdefault((name, concurrency), []).append(json.loads(out.splitlines()[-1]))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True)
    print(f"{args.database}, {args.requests} requests a round, medians of {args.rounds} alternated rounds")
    for concurrency in (1, 16):
        base_wall = statistics.median(r["wall_us"] for r in results[("base", concurrency)])
        base_cpu = statistics.median(r["cpu_us"] for r in results[("base", concurrency)])
        for name in variants:
            wall = statistics.median(r["wall_us"] for r in results[(name, concurrency)])
            cpu = statistics.median(r["cpu_us"] for r in results[(name, concurrency)])
            print(
                f"  c{concurrency:<2} {name:<9} {wall:8.1f} us/request wall ({wall / base_wall:5.2f}x)  "
                f"{cpu:8.1f} us/request CPU ({cpu / base_cpu:5.2f}x)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
