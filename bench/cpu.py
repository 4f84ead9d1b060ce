"""The platform's CPU time per request, before and after a change: the gate every change is judged by.

    python bench/cpu.py --base REV [--head REV] [--rounds 5] [--requests 4000] [--scenario chat ...]
                        [--interleave-scenarios] [--rate N]
    python bench/cpu.py --compare stream,responses_stream [--head REV] [--bursts 40] [--seconds 1.5]

On a shared host requests/s moves 15-30% between runs of the same code, so throughput cannot tell
a 5% change. The server process's own user+system CPU (from /proc) over a fixed load, divided by
the answers it sent, moves far less. Each round starts a fresh platform from one revision's source
(a temporary git worktree, imported ahead of the installed package), on a fresh SQLite database,
warms it up, drives c16 load with bench/driver.py until the wanted number of answers, and reads
the CPU the server spent. Revisions alternate (A B A B ...) so that the machine's slow minutes fall
on both; the report gives each revision's median and the ratio B/A. Throughput is printed beside it,
ungated.

The platform runs on core 0; the simulator (zero latency) and the load generator on core 1.

Closed-loop c16 runs each scenario as fast as the slowest process allows, and that need not be
the platform: on this host the load generator and simulator core limits streams (the platform's
core is about 60% busy), and bigger answers (a Responses stream writes twice a chat stream's
bytes) cost the load generator more, so such scenarios run at a lower rate. A server's CPU per
request depends on its load (commits batched, fewer wake-ups when busy), so comparing two
scenarios run at different rates mixes the load's effect with their own cost. `--rate N` paces
every run at N requests a second (bench/driver.py), below what any compared scenario reaches, so
that they are compared at one load.

`--compare` asks what one scenario costs against another (a dialect's stream against chat's).
Runs on fresh platforms a minute apart meet the host at different speeds; here one platform
serves all the scenarios in short bursts, a round of one each at a time (in an order rotated
from round to round), and each burst's CPU per request is set against the first scenario's burst
of its round, seconds apart, so that a slow stretch of the host falls on both sides of a pair.
The median of the pairs' ratios is the answer, with its 95% interval (the sign test's: no
assumption about how the ratios spread) and the pairs' quartiles beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from driver import drive, http_request  # noqa: E402
from support import base_env, free_port, wait_http  # noqa: E402

PLATFORM_CORE, LOAD_CORE = "0", "1"
ACCOUNTS = 16
CONNECTIONS = 16
SETTLE_SECONDS = 0.2  # before a run: the run before it ends on the server
SYSTEM = '{"role":"system","content":"You are a helpful assistant."}'
USER = '{"role":"user","content":"[[sim:tokens=20]] Write a haiku about the sea."}'


def _tools(count: int) -> str:
    tool = (
        '{"type":"function","function":{"name":"tool_%d","description":"Look up a fact about the sea.",'
        '"parameters":{"type":"object","properties":{"query":{"type":"string"},"limit":{"type":"integer"}},'
        '"required":["query"]}}}'
    )
    return "[" + ",".join(tool % i for i in range(count)) + "]"


# Each scenario: the path and the body of one request. Scenarios a revision does not serve fail
# loudly (its answers are not 200), rather than measuring an error path.
SCENARIOS: dict[str, tuple[str, bytes]] = {
    "chat": (
        "/v1/chat/completions",
        f'{{"model":"Qwen/Qwen3-32B","max_tokens":64,"messages":[{SYSTEM},{USER}]}}'.encode(),
    ),
    "stream": (
        "/v1/chat/completions",
        f'{{"model":"Qwen/Qwen3-32B","max_tokens":64,"stream":true,"messages":[{SYSTEM},{USER}]}}'.encode(),
    ),
    # The chat request answered with as many tokens (38) as `tools5`'s call answer: the reference
    # that generates the same amount, so the ratio measures what the tools themselves cost.
    "chat38": (
        "/v1/chat/completions",
        f'{{"model":"Qwen/Qwen3-32B","max_tokens":64,"messages":[{SYSTEM},'
        f"{USER.replace('[[sim:tokens=20]]', '[[sim:tokens=38]]')}]}}".encode(),
    ),
    # The chat request answered with 200 tokens, as real answers run: what each token costs.
    "chat200": (
        "/v1/chat/completions",
        f'{{"model":"Qwen/Qwen3-32B","max_tokens":256,"messages":[{SYSTEM},'
        f"{USER.replace('[[sim:tokens=20]]', '[[sim:tokens=200]]')}]}}".encode(),
    ),
    # The chat request with five tools, answered with a call (read, checked and returned as tool_calls).
    "tools5": (
        "/v1/chat/completions",
        f'{{"model":"Qwen/Qwen3-32B","max_tokens":64,"tools":{_tools(5)},"messages":[{SYSTEM},'
        f"{USER.replace('[[sim:tokens=20]]', '[[sim:tokens=20]] [[sim:calls=1]]')}]}}".encode(),
    ),
    "responses": (
        "/v1/responses",
        b'{"model":"Qwen/Qwen3-32B","max_output_tokens":64,"instructions":"You are a helpful assistant.",'
        b'"input":"[[sim:tokens=20]] Write a haiku about the sea."}',
    ),
    "messages": (
        "/v1/messages",
        b'{"model":"Qwen/Qwen3-32B","max_tokens":64,"system":"You are a helpful assistant.",'
        b'"messages":[{"role":"user","content":"[[sim:tokens=20]] Write a haiku about the sea."}]}',
    ),
    # The same answers streamed, each dialect's events translated from the chat chunks.
    "responses_stream": (
        "/v1/responses",
        b'{"model":"Qwen/Qwen3-32B","max_output_tokens":64,"stream":true,'
        b'"instructions":"You are a helpful assistant.",'
        b'"input":"[[sim:tokens=20]] Write a haiku about the sea."}',
    ),
    "messages_stream": (
        "/v1/messages",
        b'{"model":"Qwen/Qwen3-32B","max_tokens":64,"stream":true,'
        b'"system":"You are a helpful assistant.","thinking":{"type":"enabled","budget_tokens":32},'
        b'"messages":[{"role":"user","content":"[[sim:tokens=20]] Write a haiku about the sea."}]}',
    ),
}


@dataclass
class Round:
    revision: str
    scenario: str
    answers: int
    failures: int
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / max(self.answers - self.failures, 1) * 1e6

    @property
    def rate(self) -> float:
        return (self.answers - self.failures) / self.wall_seconds


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads, from /proc (fields 14 and 15, in ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checkout(revision: str, workdir: Path) -> Path:
    """A detached worktree of `revision` (the working tree itself for "WORKTREE")."""
    if revision == "WORKTREE":
        return ROOT
    path = workdir / f"rev-{revision.replace('/', '_')}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(path), revision],
        check=True,
        capture_output=True,
    )
    return path


def remove_checkout(source: Path) -> None:
    """Remove a worktree `checkout` made (never the working tree itself)."""
    if source != ROOT:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(source)], capture_output=True)


def fund_all(database: Path, nanoton: int) -> None:
    """Enough balance that no request of the run is refused (the bench measures serving, not deposits)."""
    with sqlite3.connect(database) as db:
        db.execute("UPDATE accounts SET balance_nanoton = balance_nanoton + ?", (nanoton,))


@dataclass
class Platform:
    """A running platform: its process, port, funded accounts' keys and log file."""

    pid: int
    port: int
    keys: list[str]
    log: Path


@contextmanager
def platform(revision: str, source: Path, simulator: str, workdir: Path) -> Iterator[Platform]:
    """A fresh platform from `source` on the platform's core, on a fresh SQLite database, with
    funded accounts."""
    port = free_port()
    database = workdir / f"cpu-{revision.replace('/', '_')}-{time.monotonic_ns()}.db"
    env = base_env(
        {
            "COCOON_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "COCOON_UPSTREAM_URL": simulator,
            "COCOON_PORT": str(port),
            "COCOON_LOG_LEVEL": "warning",
            "COCOON_RATE_LIMIT_RPM": "1000000000",
            "COCOON_RATE_LIMIT_CONCURRENT": "100000",
            "PYTHONPATH": str(source / "src"),
        }
    )
    command = [
        "taskset",
        "-c",
        PLATFORM_CORE,
        sys.executable,
        "-c",
        "import sys; from cocoon_platform.cli import main; sys.exit(main())",
        "serve",
    ]
    log_path = workdir / f"platform-{port}.log"
    log = log_path.open("wb")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", proc=server)
        with httpx.Client(base_url=url, timeout=30) as client:
            keys = [client.post("/api/register").json()["api_key"] for _ in range(ACCOUNTS)]
        fund_all(database, 10_000 * 10**9)
        yield Platform(server.pid, port, keys, log_path)
    finally:
        stop(server)
        log.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL for a process still there 30 s later."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wire(scenario: str, keys: list[str]) -> list[bytes]:
    """The scenario's request as each account sends it."""
    path, body = SCENARIOS[scenario]
    return [http_request("127.0.0.1", path, body, {"Authorization": f"Bearer {k}"}) for k in keys]


def timed(
    revision: str, scenario: str, server: Platform, load: list[bytes], seconds: float, rate: float | None
) -> Round:
    """One run of `seconds` at c16. It has no warm-up of its own, so the CPU read spans only the
    answers counted; a pause first lets the server finish the run before (the requests cut at
    its end), whose work is no one's answer."""
    time.sleep(SETTLE_SECONDS)
    before = process_cpu_seconds(server.pid)
    began = time.perf_counter()
    result = asyncio.run(drive("127.0.0.1", server.port, load, CONNECTIONS, seconds, warmup=0.0, rate=rate))
    wall = time.perf_counter() - began
    cpu = process_cpu_seconds(server.pid) - before
    if result.failures or not result.answers or cpu <= 0:
        raise SystemExit(
            f"{revision} {scenario}: {result.answers} answers, {result.failures} failed, {cpu:.2f} s of CPU; "
            f"see {server.log}"
        )
    return Round(revision, scenario, result.answers, result.failures, cpu, wall)


def measure(
    revision: str,
    source: Path,
    scenario: str,
    simulator: str,
    requests: int,
    workdir: Path,
    rate: float | None = None,
) -> Round:
    """One run on a fresh platform: warmed up, then about `requests` answers."""
    with platform(revision, source, simulator, workdir) as server:
        load = wire(scenario, server.keys)
        asyncio.run(
            drive("127.0.0.1", server.port, load, CONNECTIONS, 1.0, rate=rate)
        )  # warm-up: imports, caches, pools
        # The driver runs for a time, not a count: size the time from a short probe of the rate.
        probe = asyncio.run(drive("127.0.0.1", server.port, load, CONNECTIONS, 1.0, rate=rate))
        if probe.failures or not probe.answers:
            raise SystemExit(
                f"{revision} {scenario}: {probe.failures} of {probe.answers} answers failed; see {server.log}"
            )
        return timed(revision, scenario, server, load, max(2.0, requests / probe.rate), rate)


def compare(
    revision: str,
    source: Path,
    scenarios: list[str],
    simulator: str,
    workdir: Path,
    bursts: int,
    seconds: float,
    rate: float | None,
) -> dict[str, list[Round]]:
    """`bursts` runs of each scenario on one platform. Each round runs every scenario once, in an
    order rotated from round to round (A B C, B C A, C A B, ...), so that each takes each place
    and follows each other as often."""
    runs: dict[str, list[Round]] = {scenario: [] for scenario in scenarios}
    with platform(revision, source, simulator, workdir) as server:
        loads = {scenario: wire(scenario, server.keys) for scenario in scenarios}
        for scenario in scenarios:  # warm-up: imports, caches, pools
            asyncio.run(drive("127.0.0.1", server.port, loads[scenario], CONNECTIONS, 1.0, rate=rate))
        for index in range(bursts):
            turn = index % len(scenarios)
            for scenario in scenarios[turn:] + scenarios[:turn]:
                done = timed(revision, scenario, server, loads[scenario], seconds, rate)
                runs[scenario].append(done)
                print(
                    f"  {scenario:<18} {done.cpu_us_per_request:8.1f} us CPU/request  {done.rate:8.0f} req/s",
                    flush=True,
                )
    return runs


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of what `values` sample (the sign test's):
    the k-th smallest and k-th largest, k the most that leaves both tails within 1 - confidence."""
    ordered = sorted(values)
    count, tail, k = len(ordered), 0.0, 0
    while k < count // 2 and tail + math.comb(count, k) / 2**count <= (1 - confidence) / 2:
        tail += math.comb(count, k) / 2**count
        k += 1
    return (ordered[k - 1], ordered[count - k]) if k else (ordered[0], ordered[-1])


def report_comparison(revision: str, runs: dict[str, list[Round]]) -> dict[str, object]:
    """Each scenario's medians, and the median of its bursts' ratios to the first scenario's, with
    that median's 95% interval and the pairs' quartiles."""
    scenarios = list(runs)
    first = runs[scenarios[0]]
    report: dict[str, object] = {}
    print(
        f"\n| scenario at {revision} | us/req | req/s | ratio to {scenarios[0]}: median of pairs "
        "| its 95% interval | the pairs' quartiles |"
    )
    print("|---|---|---|---|---|---|")
    for scenario in scenarios:
        cpu = statistics.median(r.cpu_us_per_request for r in runs[scenario])
        rate = statistics.median(r.rate for r in runs[scenario])
        pairs = [r.cpu_us_per_request / f.cpu_us_per_request for r, f in zip(runs[scenario], first, strict=True)]
        middle = statistics.median(pairs)
        interval = median_interval(pairs)
        low, _, high = statistics.quantiles(pairs, n=4, method="inclusive")
        report[scenario] = {
            "us": cpu,
            "rate": rate,
            "ratio": middle,
            "interval": list(interval),
            "quartiles": [low, high],
            "pairs": pairs,
        }
        if scenario == scenarios[0]:
            print(f"| {scenario} | {cpu:.1f} | {rate:,.0f} | - | - | - |")
        else:
            print(
                f"| {scenario} | {cpu:.1f} | {rate:,.0f} | **{middle:.3f}** | {interval[0]:.3f}-{interval[1]:.3f} "
                f"| {low:.3f}-{high:.3f} |"
            )
    return report


@contextmanager
def simulator(workdir: Path) -> Iterator[str]:
    """The COCOON-client simulator on the load generator's core; its URL."""
    port = free_port()
    log = (workdir / "simulator.log").open("wb")
    process = subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "cocoon_simulator", "--port", str(port)],
        env=base_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", proc=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)
        log.close()


def before_and_after(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """Each scenario on fresh platforms of both revisions, alternating; their medians."""
    scenarios = args.scenario or ["chat", "stream"]
    sources = {rev: checkout(rev, workdir) for rev in (args.base, args.head)}
    rounds: list[Round] = []
    try:
        with simulator(workdir) as url:
            if args.interleave_scenarios:
                order = [(s, i) for i in range(args.rounds) for s in (scenarios if i % 2 == 0 else scenarios[::-1])]
            else:
                order = [(s, i) for s in scenarios for i in range(args.rounds)]
            for scenario, index in order:
                for rev in (args.base, args.head) if index % 2 == 0 else (args.head, args.base):
                    done = measure(rev, sources[rev], scenario, url, args.requests, workdir, args.rate)
                    rounds.append(done)
                    print(
                        f"  {scenario:<10} {rev:<12} {done.cpu_us_per_request:8.1f} us CPU/request  "
                        f"{done.rate:8.0f} req/s  ({done.answers} answers)",
                        flush=True,
                    )
    finally:
        for source in sources.values():
            remove_checkout(source)
    report: dict[str, dict[str, float]] = {}
    print(f"\n| scenario | {args.base} us/req | {args.head} us/req | ratio | {args.base} req/s | {args.head} req/s |")
    print("|---|---|---|---|---|---|")
    for scenario in scenarios:

        def median(rev: str, attribute: str, scenario: str = scenario) -> float:
            return statistics.median(
                getattr(r, attribute) for r in rounds if r.revision == rev and r.scenario == scenario
            )

        base, head = median(args.base, "cpu_us_per_request"), median(args.head, "cpu_us_per_request")
        base_rate, head_rate = median(args.base, "rate"), median(args.head, "rate")
        report[scenario] = {
            "base_us": base,
            "head_us": head,
            "ratio": head / base,
            "base_rate": base_rate,
            "head_rate": head_rate,
        }
        print(f"| {scenario} | {base:.1f} | {head:.1f} | {head / base:.3f} | {base_rate:,.0f} | {head_rate:,.0f} |")
    if args.interleave_scenarios and len(scenarios) > 1:
        first = report[scenarios[0]]["head_us"]
        for scenario in scenarios[1:]:
            ratio = report[scenario]["head_us"] / first
            report[scenario]["head_vs_" + scenarios[0]] = ratio
            print(f"{args.head}: {scenario} / {scenarios[0]} CPU per request = {ratio:.3f}")
    return dict(report)


def one_platform(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    """The `--compare` scenarios in bursts on one platform of `--head`; each against the first."""
    scenarios = [name.strip() for name in args.compare.split(",") if name.strip()]
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"--compare: no scenario {', '.join(unknown)}; there are {', '.join(sorted(SCENARIOS))}")
    if len(set(scenarios)) != len(scenarios) or len(scenarios) < 2:
        raise SystemExit(
            "--compare takes two or more different scenarios: the first is what the others are set against"
        )
    source = checkout(args.head, workdir)
    try:
        with simulator(workdir) as url:
            runs = compare(args.head, source, scenarios, url, workdir, args.bursts, args.seconds, args.rate)
    finally:
        remove_checkout(source)
    return report_comparison(args.head, runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="the revision before (git rev, or WORKTREE)")
    parser.add_argument("--head", default="WORKTREE", help="the revision after (default: this working tree)")
    parser.add_argument(
        "--scenario", action="append", choices=sorted(SCENARIOS), help="repeatable; default chat and stream"
    )
    parser.add_argument("--rounds", type=int, default=5, help="runs per revision and scenario (median)")
    parser.add_argument("--requests", type=int, default=4000, help="about this many answers per run")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--interleave-scenarios",
        action="store_true",
        help="alternate scenarios within each round too (to compare scenarios, e.g. tools5/chat)",
    )
    parser.add_argument("--rate", type=float, help="pace every run at this many requests a second (one load for all)")
    parser.add_argument(
        "--compare", help="scenarios, comma-separated: each against the first, on one platform of --head"
    )
    parser.add_argument("--bursts", type=int, default=40, help="with --compare: runs of each scenario")
    parser.add_argument("--seconds", type=float, default=1.5, help="with --compare: the length of a run")
    args = parser.parse_args()
    if args.bursts < 2 or args.seconds <= 0:
        parser.error("--bursts takes 2 or more, --seconds more than 0")
    if (args.base is None) == (args.compare is None):
        parser.error("give --base REV (a change, before and after) or --compare A,B,... (scenarios, on one platform)")
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # the load generator (this process) stays off the platform's core
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-cpu-"))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    scenarios = before_and_after(args, workdir) if args.compare is None else one_platform(args, workdir)
    report = {
        "command": " ".join(["python", "bench/cpu.py", *sys.argv[1:]]),
        "started": started,
        "scenarios": scenarios,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"cpu-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
