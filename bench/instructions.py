"""The platform's instructions per request, counted by valgrind: a yardstick the host's noise cannot move.

    python bench/instructions.py [--base REV] [--head REV] [--scenario chat ...] [--requests 300]

CPU time per request (bench/cpu.py, ruling 6's gate) is read off a shared host whose speed moves:
on some days the same pure-Python loop takes 1.8x as long from one second to the next, and the
median of five runs cannot tell 5%. The instructions a process executes for the same work do not
move (callgrind counts them, the same total to within 0.5% from run to run, whatever else the
host does). They are not CPU time (cache misses, branch mispredictions and system calls are not
weighed), so this is reported beside bench/cpu.py, not instead of it: where both agree, the
change is what they say; where the host is too noisy for the first, the second still tells.

Each count runs one platform, in process as bench/in_process.py drives it (the ASGI application
called directly, on SQLite, the simulator in a process of its own), under `valgrind
--tool=callgrind` with counting off; after a warm-up it turns counting on (`callgrind_control`)
for a fixed number of requests of one scenario (bench/cpu.py's), then off. Two runs, of N and
2N requests, give (I(2N) - I(N)) / N: start-up, warm-up and the toggles cancel out. Scenarios are
compared with the first (`--scenario` order), revisions head against base.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from cpu import SCENARIOS, checkout, remove_checkout  # noqa: E402
from run import platform_env  # noqa: E402
from support import base_env, free_port, wait_http  # noqa: E402

WARM_UP = 200
_COLLECTED = re.compile(rb"Collected : (\d+)")


async def _child(database_url: str, scenario: str, requests: int) -> None:
    """Inside valgrind: start the platform, warm it up, count `requests` requests of `scenario`."""
    from in_process import drive, start_platform

    client, keys, stop = await start_platform(database_url)
    path, body = SCENARIOS[scenario]
    await drive(client, keys, body, WARM_UP, 16, path)
    _toggle("on")
    await drive(client, keys, body, requests, 16, path)
    _toggle("off")
    await stop()


def _toggle(state: str) -> None:
    """Switch counting on or off with `callgrind_control`, waiting for it by polling. Callgrind
    reads such commands while this process runs code: blocked in a wait for the command, with no
    other thread running, it never read it (seen here: a run hung for ten minutes)."""
    control = subprocess.Popen(
        ["callgrind_control", "--instr", state, str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while control.poll() is None:
        pass
    if control.returncode:
        raise SystemExit(f"callgrind_control --instr {state} failed")


def count(source: Path, scenario: str, requests: int, simulator: str, workdir: Path) -> int:
    """Instructions callgrind counted over `requests` requests, in a platform run from `source`."""
    database = workdir / f"instructions-{os.getpid()}-{len(list(workdir.iterdir()))}.db"
    database_url = f"sqlite+aiosqlite:///{database}"
    env = platform_env(database_url, simulator, 8000)
    env["PYTHONPATH"] = str(source / "src")  # the revision's code, ahead of the installed package
    subprocess.run(
        [sys.executable, "-c", "import sys; from cocoon_platform.cli import main; sys.exit(main())", "migrate"],
        env=env,
        check=True,
        capture_output=True,
    )
    command = [
        "taskset",
        "-c",
        "0",
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={workdir}/callgrind.%p",
        sys.executable,
        __file__,
        "--child",
        scenario,
        "--requests",
        str(requests),
        "--database-url",
        database_url,
    ]
    result = subprocess.run(command, env=env, capture_output=True, check=False)
    found = _COLLECTED.search(result.stderr)
    if result.returncode or found is None:
        raise SystemExit(f"{scenario} under valgrind failed:\n{result.stderr.decode(errors='replace')[-3000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="a revision to compare with (git rev, or WORKTREE)")
    parser.add_argument("--head", default="WORKTREE", help="the revision measured (default: this working tree)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default chat")
    parser.add_argument("--requests", type=int, default=300, help="N: runs of N and 2N requests are counted")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        uvloop.run(_child(args.database_url, args.child, args.requests))
        return 0
    scenarios = args.scenario or ["chat"]
    revisions = [args.head] if args.base is None else [args.base, args.head]
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-instructions-"))
    sources = {rev: checkout(rev, workdir) for rev in revisions}
    port = free_port()
    simulator = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "cocoon_simulator", "--port", str(port)],
        env=base_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    per_request: dict[tuple[str, str], float] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/v1/models", proc=simulator)
        for scenario in scenarios:
            for rev in revisions:
                once = count(sources[rev], scenario, args.requests, url, workdir)
                twice = count(sources[rev], scenario, 2 * args.requests, url, workdir)
                per_request[rev, scenario] = (twice - once) / args.requests
                print(
                    f"  {scenario:<16} {rev:<12} {per_request[rev, scenario]:>12,.0f} instructions/request", flush=True
                )
    finally:
        simulator.terminate()
        simulator.wait(30)
        for source in sources.values():
            remove_checkout(source)
    print("\n| scenario | " + " | ".join(f"{rev} instructions/request" for rev in revisions) + " | ratios |")
    print("|---|" + "---|" * len(revisions) + "---|")
    first = scenarios[0]
    for scenario in scenarios:
        ratios = []
        if args.base is not None:
            ratios.append(
                f"{args.head}/{args.base} {per_request[args.head, scenario] / per_request[args.base, scenario]:.3f}"
            )
        if scenario != first:
            ratios.extend(
                f"{scenario}/{first} at {rev} {per_request[rev, scenario] / per_request[rev, first]:.3f}"
                for rev in revisions
            )
        cells = " | ".join(f"{per_request[rev, scenario]:,.0f}" for rev in revisions)
        print(f"| {scenario} | {cells} | {', '.join(ratios) or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
