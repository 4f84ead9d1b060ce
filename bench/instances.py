"""One instance against two, on PostgreSQL and Redis, as docs/deploy.md's scaling guide cites.

    python bench/instances.py [--seconds 10] [--concurrency 16]

The same load (c16 by default, 64 accounts) goes to one instance, then is split over two (half
the connections each, as nginx's round robin would), alternated over `--rounds`. Each instance is
pinned to a core of its own when it has one; the simulator, PostgreSQL and Redis share the
machine with them, as they would on a small host. The figure that matters is the ratio of the
two totals measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from run import (  # noqa: E402
    ACCOUNTS,
    BIN,
    BODY,
    CHAT,
    answers_sent,
    machine_stalls,
    pinned,
    platform_env,
    register_accounts,
    start,
    stop,
    verify,
    wrk_point,
    wrk_script,
)
from support import REDIS_URL, base_env, create_pg_database, drop_pg_database, free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-instances-"))
    sim_port = free_port()
    sim = start(
        [sys.executable, "-m", "cocoon_simulator", "--port", str(sim_port)],
        base_env(),
        workdir / "simulator.log",
        f"http://127.0.0.1:{sim_port}/v1/models",
    )
    database_url = create_pg_database()
    ports = [free_port(), free_port()]
    instances = []
    try:
        for core, port in enumerate(ports):
            env = {**platform_env(database_url, f"http://127.0.0.1:{sim_port}", port), "COCOON_REDIS_URL": REDIS_URL}
            instances.append(
                start(
                    pinned(str(core), [str(BIN / "cocoon-platform"), "serve"]),
                    env,
                    workdir / f"platform-{port}.log",
                    f"http://127.0.0.1:{port}/health",
                )
            )
        keys = register_accounts(f"http://127.0.0.1:{ports[0]}", database_url, ACCOUNTS)
        script = wrk_script(keys, BODY, workdir)
        stalls = machine_stalls()
        print("stalls:", stalls, flush=True)
        totals: dict[str, list[float]] = {"one instance": [], "two instances": []}
        p99: dict[str, list[float]] = {"one instance": [], "two instances": []}
        half = args.concurrency // 2
        for _ in range(args.rounds):
            one = wrk_point(f"http://127.0.0.1:{ports[0]}{CHAT}", script, args.concurrency, args.seconds)
            totals["one instance"].append(one.rate)
            p99["one instance"].append(one.p99_ms)
            with ThreadPoolExecutor(2) as pool:
                halves = list(
                    pool.map(
                        lambda port: wrk_point(f"http://127.0.0.1:{port}{CHAT}", script, half, args.seconds), ports
                    )
                )
            rates = [result.rate for result in halves]
            totals["two instances"].append(sum(rates))
            p99["two instances"].append(max(result.p99_ms for result in halves))
            print(
                f"  one instance {one.rate:8.0f}/s (p99 {one.p99_ms:.1f} ms);  two instances "
                f"{sum(rates):8.0f}/s (p99 {p99['two instances'][-1]:.1f} ms)",
                flush=True,
            )
        time.sleep(1)
        served = sum(answers_sent(f"http://127.0.0.1:{port}") for port in ports)
        checks = verify(database_url, served)
    finally:
        for proc in instances:
            stop(proc)
        stop(sim)
        drop_pg_database(database_url)
    medians = {name: statistics.median(values) for name, values in totals.items()}
    ratio = medians["two instances"] / medians["one instance"]
    print(
        f"medians: one {medians['one instance']:.0f}/s, two {medians['two instances']:.0f}/s "
        f"({ratio:.2f}x); books: {'ok' if checks['ok'] else checks}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"instances-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {"totals": totals, "p99_ms": p99, "ratio": ratio, "stalls": stalls, "checks": checks, "args": vars(args)},
            indent=1,
        )
    )
    print("written", path)
    return 0 if checks["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
