"""The benchmark suite: the gateway's added latency and throughput, measured against the upstream
alone and a bare pass-through, on SQLite and (when reachable) PostgreSQL.

    python bench/run.py [--seconds 10] [--backends sqlite,postgresql] [--soak 600]

The platform runs alone on core 0; the simulator (zero latency), the load generator and
PostgreSQL share core 1. Load comes from wrk with a Lua script when installed, else from
bench/driver.py; for streams, the driver then times the first event in a short run of its own.
After each platform run the database must agree: answers served = charges written, reconcile clean.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host_platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from driver import Result, http_request  # noqa: E402
from support import (  # noqa: E402
    PG_ADMIN_URL,
    base_env,
    create_pg_database,
    db_rows,
    drop_pg_database,
    free_port,
    fund,
    wait_http,
)

PLATFORM_CORE, LOAD_CORE = "0", "1"
BIN = Path(sys.executable).parent
CHAT = "/v1/chat/completions"
BODY = (
    b'{"model":"Qwen/Qwen3-32B","max_tokens":64,"messages":['
    b'{"role":"system","content":"You are a helpful assistant."},'
    b'{"role":"user","content":"[[sim:tokens=20]] Write a haiku about the sea."}]}'
)
STREAM_BODY = BODY[:-1] + b',"stream":true}'
ACCOUNTS = 64


@dataclass
class Point:
    target: str
    scenario: str
    concurrency: int
    rate: float
    p50_ms: float
    p99_ms: float
    first_byte_p50_ms: float | None
    answers: int
    failures: int
    generator: str


def pinned(core: str, args: list[str]) -> list[str]:
    return ["taskset", "-c", core, *args]


def start(
    args: list[str], env: dict[str, str], log: Path, ready_url: str, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(ready_url, proc=proc, timeout=timeout)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def wrk_script(keys: list[str], body: bytes, workdir: Path) -> Path:
    """A wrk script sending `body`, cycling through the keys."""
    script = workdir / f"load-{uuid.uuid4().hex[:6]}.lua"
    quoted = ",".join(json.dumps(f"Bearer {k}") for k in keys) if keys else ""
    script.write_text(f"""
local auth = {{{quoted}}}
local body = {json.dumps(body.decode())}
local prepared = {{}}
init = function(args)
  if #auth == 0 then
    prepared[1] = wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, body)
  else
    for i, a in ipairs(auth) do
      prepared[i] = wrk.format("POST", nil, {{["Content-Type"] = "application/json", ["Authorization"] = a}}, body)
    end
  end
end
local n = 0
request = function()
  n = n + 1
  return prepared[(n % #prepared) + 1]
end
""")
    return script


def wrk_point(url: str, script: Path, connections: int, seconds: float) -> Result:
    """Non-streaming load with wrk."""
    out = subprocess.run(
        pinned(LOAD_CORE, ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        return float(match.group(1)) if match else 0.0

    def millis(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        if not match:
            return float("nan")
        return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]

    total = int(number(r"(\d+) requests in"))
    failures = int(number(r"Non-2xx or 3xx responses: (\d+)"))
    return Result(
        rate=number(r"Requests/sec:\s+([\d.]+)"),
        answers=total,
        failures=failures,
        p50_ms=millis("50%"),
        p99_ms=millis("99%"),
        first_byte_p50_ms=None,
    )


def driver_point(port: int, keys: list[str], body: bytes, connections: int, seconds: float) -> Result:
    requests = (
        [http_request("127.0.0.1", CHAT, body, {"Authorization": f"Bearer {k}"}) for k in keys]
        if keys
        else [http_request("127.0.0.1", CHAT, body)]
    )
    code = (
        f"import asyncio, json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); from driver import drive; "
        f"import pickle; reqs = pickle.loads(sys.stdin.buffer.read()); "
        f"r = asyncio.run(drive('127.0.0.1', {port}, reqs, {connections}, {seconds})); "
        f"print(json.dumps(r.__dict__))"
    )
    import pickle

    # The driver runs in its own process on the load core, never inside the measured one.
    out = subprocess.run(
        pinned(LOAD_CORE, [sys.executable, "-c", code]), input=pickle.dumps(requests), capture_output=True, check=True
    ).stdout
    return Result(**json.loads(out))


class Bench:
    def __init__(self, seconds: float, workdir: Path) -> None:
        self.seconds = seconds
        self.workdir = workdir
        self.points: list[Point] = []
        self.use_wrk = shutil.which("wrk") is not None
        self.scripts: list[Path] = []  # wrk scripts of the platform's many-account load, for the soak

    def measure(
        self, target: str, scenario: str, port: int, keys: list[str], connections: int, stream: bool = False
    ) -> Result:
        body = STREAM_BODY if stream else BODY
        if self.use_wrk:
            script = wrk_script(keys, body, self.workdir)
            if len(keys) > 1 and not stream:
                self.scripts.append(script)
            result = wrk_point(f"http://127.0.0.1:{port}{CHAT}", script, connections, self.seconds)
            generator = "wrk"
            if stream:
                # wrk sees whole answers only: the driver times the first event in a run of its own.
                # Its rate is not the one reported: in Python, sharing the load core with the
                # simulator, it caps the direct streams well below what wrk reaches.
                timing = driver_point(port, keys, body, connections, min(self.seconds, 5.0))
                result = replace(
                    result,
                    answers=result.answers + timing.answers,
                    failures=result.failures + timing.failures,
                    first_byte_p50_ms=timing.first_byte_p50_ms,
                )
                generator = "wrk; first event: bench/driver.py"
        else:
            result = driver_point(port, keys, body, connections, self.seconds)
            generator = "bench/driver.py"
        self.points.append(
            Point(
                target,
                scenario,
                connections,
                result.rate,
                result.p50_ms,
                result.p99_ms,
                result.first_byte_p50_ms,
                result.answers,
                result.failures,
                generator,
            )
        )
        print(
            f"  {target:<22} {scenario:<18} c{connections:<3} {result.rate:9.0f}/s  p50 {result.p50_ms:7.2f} ms  "
            f"p99 {result.p99_ms:7.2f} ms"
            + (f"  first event {result.first_byte_p50_ms:.2f} ms" if result.first_byte_p50_ms else "")
            + (f"  failures {result.failures}" if result.failures else ""),
            flush=True,
        )
        return result


def platform_env(database_url: str, upstream: str, port: int) -> dict[str, str]:
    env = base_env(
        {
            "COCOON_DATABASE_URL": database_url,
            "COCOON_UPSTREAM_URL": upstream,
            "COCOON_PORT": str(port),
            "COCOON_LOG_LEVEL": "warning",
            # Limits on, as in production, but far above the load: their counting is part of each request.
            "COCOON_RATE_LIMIT_RPM": "1000000000",
            "COCOON_RATE_LIMIT_CONCURRENT": "100000",
        }
    )
    return env


def register_accounts(url: str, database_url: str, count: int) -> list[str]:
    keys = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(count):
            key = client.post("/api/register").json()["api_key"]
            fund(database_url, key, 10_000 * 1_000_000_000)
            keys.append(key)
    return keys


def answers_sent(url: str) -> int:
    """200 answers the platform sent, from its own metrics (the client misses warm-up and in-flight ones)."""
    page = httpx.get(url + "/metrics", timeout=10).text
    return int(
        sum(
            float(line.rpartition(" ")[2])
            for line in page.splitlines()
            if line.startswith("cocoon_requests_total{") and 'status="200"' in line
        )
    )


def verify(database_url: str, served: int) -> dict[str, Any]:
    """Every answer sent has exactly one charge; the books reconcile."""
    charges = int(db_rows(database_url, "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'usage'")[0][0])  # type: ignore[call-overload]
    usage_ok = int(db_rows(database_url, "SELECT COUNT(*) FROM usage_records WHERE status = 'ok'")[0][0])  # type: ignore[call-overload]
    unmatched = db_rows(
        database_url,
        """SELECT COUNT(*) FROM usage_records u WHERE u.status = 'ok' AND NOT EXISTS
        (SELECT 1 FROM ledger_entries l WHERE l.reference = 'usage:' || u.request_id)""",
    )[0][0]
    env = base_env({"COCOON_DATABASE_URL": database_url})
    reconcile = subprocess.run(
        [str(BIN / "cocoon-platform"), "admin", "reconcile"], env=env, capture_output=True, text=True
    )
    ok = charges == usage_ok == served and unmatched == 0 and reconcile.returncode == 0
    return {
        "answers_served": served,
        "charges_written": charges,
        "usage_records_ok": usage_ok,
        "records_without_charge": unmatched,
        "reconcile_clean": reconcile.returncode == 0,
        "ok": ok,
        "reconcile_output": (reconcile.stdout + reconcile.stderr).strip()[-400:],
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def soak(port: int, pid: int, script: Path, seconds: float, workdir: Path) -> dict[str, Any]:
    """Steady load for `seconds`; memory sampled every 10 s after a warm-up minute (or a tenth)."""
    samples: list[tuple[float, int]] = []
    output = workdir / "soak-load.txt"
    if shutil.which("wrk"):
        command = ["wrk", "-t1", "-c16", f"-d{seconds:g}s", "-s", str(script), f"http://127.0.0.1:{port}{CHAT}"]
    else:
        command = [sys.executable, "-c", "print('the soak needs wrk')"]
    with output.open("w") as out:
        load = subprocess.Popen(pinned(LOAD_CORE, command), stdout=out, stderr=subprocess.STDOUT)
        began = time.monotonic()
        warmup = min(60.0, seconds / 10)
        while load.poll() is None:
            time.sleep(10 if seconds >= 60 else 1)
            if time.monotonic() - began >= warmup:
                samples.append((round(time.monotonic() - began, 1), rss_kib(pid)))
    text = output.read_text()
    match = re.search(r"(\d+) requests in", text)
    requests = int(match.group(1)) if match else 0
    first, last = samples[0][1], samples[-1][1]
    return {
        "seconds": seconds,
        "requests": requests,
        "rss_kib_after_warmup": first,
        "rss_kib_at_end": last,
        "change_pct": round(100 * (last - first) / first, 1),
        "samples": samples,
        "flat": requests > 0 and abs(last - first) <= first * 0.10,
        "load_output": text[-300:],
    }


def run_platform(bench: Bench, backend: str, database_url: str, upstream: str, soak_seconds: float) -> dict[str, Any]:
    port = free_port()
    env = platform_env(database_url, upstream, port)
    proc = start(
        pinned(PLATFORM_CORE, [str(BIN / "cocoon-platform"), "serve"]),
        env,
        bench.workdir / f"platform-{backend}.log",
        f"http://127.0.0.1:{port}/health",
    )
    counted = 0
    try:
        keys = register_accounts(f"http://127.0.0.1:{port}", database_url, ACCOUNTS)
        target = f"platform ({backend})"
        for connections in (1, 16, 64):
            counted += bench.measure(target, "chat", port, keys, connections).answers
        counted += bench.measure(target, "chat, one account", port, keys[:1], 64).answers
        counted += bench.measure(target, "stream 20 chunks", port, keys, 16, stream=True).answers
        soaked = soak(port, proc.pid, bench.scripts[0], soak_seconds, bench.workdir) if soak_seconds else None
        if soaked:
            counted += soaked["requests"]
            print(
                f"  soak ({backend}): {soaked['requests']} requests in {soak_seconds:g} s; RSS "
                f"{soaked['rss_kib_after_warmup']} -> {soaked['rss_kib_at_end']} KiB ({soaked['change_pct']:+.1f}%)",
                flush=True,
            )
        time.sleep(1)
        checks = verify(database_url, answers_sent(f"http://127.0.0.1:{port}"))
        checks["answers_counted_by_load_generator"] = counted
        print(f"  database check ({backend}): {checks}", flush=True)
        return {"checks": checks, "soak": soaked}
    finally:
        stop(proc)


STALL_PROBE = """
import json, sys, time
end = time.perf_counter() + float(sys.argv[1])
last = start = time.perf_counter()
gaps = []
while last < end:
    now = time.perf_counter()
    if now - last > 0.0002:
        gaps.append(now - last)
    last = now
print(json.dumps(gaps))
"""


def machine_stalls(seconds: float = 3.0) -> dict[str, dict[str, float]]:
    """How often each core is taken from a spinning process (by the host, other tenants, the
    kernel): stalls over 0.2 ms per second, the longest, and the share of time lost. On a shared
    virtual machine this sets a floor under tail latencies and moves throughput between runs."""
    probes = {
        core: subprocess.Popen(
            pinned(core, [sys.executable, "-c", STALL_PROBE, str(seconds)]), stdout=subprocess.PIPE, text=True
        )
        for core in (PLATFORM_CORE, LOAD_CORE)
    }
    report = {}
    for core, probe in probes.items():
        gaps = json.loads(probe.communicate()[0])
        report[f"core {core}"] = {
            "stalls_per_s": round(len(gaps) / seconds, 1),
            "longest_ms": round(max(gaps, default=0.0) * 1000, 2),
            "lost_pct": round(100 * sum(gaps) / seconds, 2),
        }
    return report


def pin_postgres(core: str) -> None:
    """Keep PostgreSQL's processes off the platform's core (best effort)."""
    pids = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split()
    for pid in pids:
        subprocess.run(["taskset", "-a", "-cp", core, pid], capture_output=True)


def postgres_reachable() -> bool:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=2)
        await conn.close()

    try:
        asyncio.run(probe())
        return True
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


def table(points: list[Point]) -> str:
    direct = {(p.scenario, p.concurrency): p for p in points if p.target == "direct"}
    lines = [
        "| target | scenario | conc. | req/s | p50 ms | p99 ms | added p50 / p99 ms | first event p50 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        base = direct.get((p.scenario, p.concurrency)) or direct.get(("chat", p.concurrency))
        added = (
            f"{p.p50_ms - base.p50_ms:+.2f} / {p.p99_ms - base.p99_ms:+.2f}"
            if base is not None and p.target != "direct"
            else ""
        )
        first = f"{p.first_byte_p50_ms:.2f}" if p.first_byte_p50_ms else ""
        lines.append(
            f"| {p.target} | {p.scenario} | {p.concurrency} | {p.rate:,.0f} | {p.p50_ms:.2f} | "
            f"{p.p99_ms:.2f} | {added} | {first} |"
        )
    return "\n".join(lines)


LITELLM = ROOT / "bench" / ".peers" / "bin" / "litellm"


def run_litellm(bench: Bench, upstream: str) -> None:
    """LiteLLM's proxy (PyPI, no database), a peer gateway, on the platform's core: `make bench`
    installs it into bench/.peers; without it the row is skipped with a note."""
    if not LITELLM.exists():
        print("  LiteLLM: not installed (make bench-peers): skipped", flush=True)
        return
    port = free_port()
    config = bench.workdir / "litellm.yaml"
    config.write_text(f"""model_list:
  - model_name: Qwen/Qwen3-32B
    litellm_params:
      model: openai/Qwen/Qwen3-32B
      api_base: {upstream}/v1
      api_key: none
""")
    master_key = "sk-cocoon-bench-" + uuid.uuid4().hex  # it refuses to serve without one
    env = {**base_env(), "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "LITELLM_MASTER_KEY": master_key}
    proc = start(
        pinned(
            PLATFORM_CORE,
            [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        ),
        env,
        bench.workdir / "litellm.log",
        f"http://127.0.0.1:{port}/health/liveliness",
        timeout=180,
    )  # it imports for a long while
    try:
        for connections in (1, 16):
            bench.measure("LiteLLM proxy", "chat", port, [master_key], connections)
        bench.measure("LiteLLM proxy", "stream 20 chunks", port, [master_key], 16, stream=True)
    finally:
        stop(proc)


def targets(points: list[Point]) -> list[str]:
    """#21's ratio targets, each beside its figure from this run."""

    def find(target: str, scenario: str, concurrency: int) -> Point | None:
        return next(
            (p for p in points if p.target == target and p.scenario == scenario and p.concurrency == concurrency), None
        )

    lines = []
    bare = find("bare pass-through", "chat", 16)
    bare_c1 = find("bare pass-through", "chat", 1)
    bare_streams = find("bare pass-through", "stream 20 chunks", 16)
    direct_c1 = find("direct", "chat", 1)
    for backend, floor in (("sqlite", 0.8), ("postgresql", 0.5)):
        point = find(f"platform ({backend})", "chat", 16)
        if point and bare:
            ratio = point.rate / bare.rate
            lines.append(
                f"{backend} c16 >= {floor:.0%} of the pass-through: {ratio:.0%} "
                f"({'met' if ratio >= floor else 'not met'})"
            )
    point = find("platform (sqlite)", "chat", 1)
    if point and bare_c1 and direct_c1:
        added, bare_added = point.p50_ms - direct_c1.p50_ms, bare_c1.p50_ms - direct_c1.p50_ms
        lines.append(
            f"c1 added p50 within 0.3 ms of the pass-through's: +{added:.2f} vs +{bare_added:.2f} ms "
            f"({'met' if added - bare_added <= 0.3 else 'not met'})"
        )
    point = find("platform (sqlite)", "stream 20 chunks", 16)
    if point and bare_streams:
        ratio = point.rate / bare_streams.rate
        lines.append(f"streams/s >= 70% of the pass-through's: {ratio:.0%} ({'met' if ratio >= 0.7 else 'not met'})")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measured point")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of steady load to watch memory (SQLite)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    if os.cpu_count() is None or os.cpu_count() < 2 or not shutil.which("taskset"):  # type: ignore[operator]
        print("the suite needs two cores and taskset", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="cocoon-bench-"))
    bench = Bench(args.seconds, workdir)
    print(
        f"cores: platform on {PLATFORM_CORE}; simulator, load generator and PostgreSQL on {LOAD_CORE}. "
        f"Generator: {'wrk' if bench.use_wrk else 'bench/driver.py'}; {args.seconds:g} s per point.",
        flush=True,
    )
    sim_port, pass_port = free_port(), free_port()
    simulator = start(
        pinned(LOAD_CORE, [sys.executable, "-m", "cocoon_simulator", "--port", str(sim_port)]),
        base_env(),
        workdir / "simulator.log",
        f"http://127.0.0.1:{sim_port}/v1/models",
    )
    upstream = f"http://127.0.0.1:{sim_port}"
    passthrough = start(
        pinned(
            PLATFORM_CORE,
            [sys.executable, str(ROOT / "bench" / "passthrough.py"), "--port", str(pass_port), "--upstream", upstream],
        ),
        base_env(),
        workdir / "passthrough.log",
        f"http://127.0.0.1:{pass_port}/",
    )
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "processor": host_platform.processor() or host_platform.machine(),
        },
        "command": " ".join(["python", "bench/run.py", *sys.argv[1:]]),
        "backends": {},
    }
    results["machine_stalls_before"] = machine_stalls()
    print(f"stall probe (a spinning process per core, 3 s): {results['machine_stalls_before']}", flush=True)
    try:
        for connections in (1, 16, 64):
            bench.measure("direct", "chat", sim_port, [], connections)
        bench.measure("direct", "stream 20 chunks", sim_port, [], 16, stream=True)
        for connections in (1, 16):
            bench.measure("bare pass-through", "chat", pass_port, [], connections)
        bench.measure("bare pass-through", "stream 20 chunks", pass_port, [], 16, stream=True)
        stop(passthrough)
        run_litellm(bench, upstream)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite+aiosqlite:///{workdir}/bench.db"
                results["backends"][backend] = run_platform(bench, backend, url, upstream, args.soak)
            elif backend == "postgresql":
                if not postgres_reachable():
                    print("  PostgreSQL not reachable: skipped", flush=True)
                    continue
                pin_postgres(LOAD_CORE)
                url = create_pg_database()
                try:
                    results["backends"][backend] = run_platform(bench, backend, url, upstream, 0)
                finally:
                    drop_pg_database(url)
                    pin_postgres("0,1")
    finally:
        stop(simulator)
        stop(passthrough)
    results["machine_stalls_after"] = machine_stalls()
    print(f"stall probe after the run: {results['machine_stalls_after']}", flush=True)
    results["points"] = [asdict(p) for p in bench.points]
    results["targets"] = targets(bench.points)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"bench-{stamp}.json").write_text(json.dumps(results, indent=2))
    rendered = table(bench.points)
    (out / "latest.md").write_text(rendered + "\n")
    print("\n" + rendered)
    print("\n".join(["", "Targets (#21):", *results["targets"]]))
    print(f"\nJSON: {out / f'bench-{stamp}.json'}")
    return 0 if all(b["checks"]["ok"] for b in results["backends"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
