"""The hot account on PostgreSQL: 64 concurrent requests on one account (an agent swarm on one
key) against the same load spread over 64 accounts, alternated so drift hits both alike.

    python bench/hot_account.py [--rounds 3] [--seconds 10] [--concurrency 64]

#21's target: the one-account p99 at most 3x the many-account p99 at the same concurrency.
Platform alone on core 0 (as in bench/run.py); PostgreSQL, simulator and load on core 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from run import (  # noqa: E402
    ACCOUNTS,
    BIN,
    LOAD_CORE,
    PLATFORM_CORE,
    Bench,
    answers_sent,
    machine_stalls,
    pin_postgres,
    pinned,
    platform_env,
    register_accounts,
    start,
    stop,
    verify,
)
from support import base_env, create_pg_database, drop_pg_database, free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-hot-"))
    bench = Bench(args.seconds, workdir)
    pin_postgres(LOAD_CORE)
    sim_port, port = free_port(), free_port()
    sim = start(
        pinned(LOAD_CORE, [sys.executable, "-m", "cocoon_simulator", "--port", str(sim_port)]),
        base_env(),
        workdir / "simulator.log",
        f"http://127.0.0.1:{sim_port}/v1/models",
    )
    database_url = create_pg_database()
    try:
        platform = start(
            pinned(PLATFORM_CORE, [str(BIN / "cocoon-platform"), "serve"]),
            platform_env(database_url, f"http://127.0.0.1:{sim_port}", port),
            workdir / "platform.log",
            f"http://127.0.0.1:{port}/health",
        )
        try:
            keys = register_accounts(f"http://127.0.0.1:{port}", database_url, ACCOUNTS)
            print("stalls:", machine_stalls(), flush=True)
            p99 = {"many accounts": [], "one account": []}
            for _ in range(args.rounds):
                for scenario, scenario_keys in (("many accounts", keys), ("one account", keys[:1])):
                    result = bench.measure("platform (postgresql)", scenario, port, scenario_keys, args.concurrency)
                    p99[scenario].append(result.p99_ms)
            time.sleep(1)
            checks = verify(database_url, answers_sent(f"http://127.0.0.1:{port}"))
        finally:
            stop(platform)
    finally:
        stop(sim)
        drop_pg_database(database_url)
    ratio = statistics.median(p99["one account"]) / statistics.median(p99["many accounts"])
    print(
        f"p99 one account / many accounts (medians of {args.rounds} alternated rounds): {ratio:.2f}x "
        f"({'met' if ratio <= 3 else 'NOT met'}: target <= 3x); books: {'ok' if checks['ok'] else checks}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"hot-account-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "p99_ms": p99,
                "ratio": ratio,
                "checks": checks,
                "args": vars(args),
                "points": [p.__dict__ for p in bench.points],
            },
            indent=1,
        )
    )
    print("written", path)
    return 0 if checks["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
