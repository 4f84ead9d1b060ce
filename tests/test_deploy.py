"""The shipped deployment, run as deployed: nginx with TLS in front of two instances.

The instances share a fresh PostgreSQL database and Redis and run the `ExecStart` line of the
shipped systemd unit with the shipped environment file's settings (systemd is not PID 1 here:
the units are checked with `systemd-analyze verify`). nginx runs the shipped site and upstreams
files with only the addresses, ports and certificate changed. Everything is reached through
nginx over HTTPS, as a client would.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from support import (
    BIN,
    REDIS_URL,
    Simulator,
    base_env,
    create_pg_database,
    db_rows,
    drop_pg_database,
    free_port,
    fund,
    ledger_consistent,
    run_cli,
    start_simulator,
    wait_http,
)
from test_operations import metric

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MODEL = "Qwen/Qwen3-32B"
METRICS_TOKEN = "metrics-secret-for-tests"
SOURCES = itertools.count(1)
# The platform's own wallet: not the placeholder default, which /ready reports as a problem.
WALLET = "EQBcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFxcXFRo"

pytestmark = pytest.mark.skipif(
    not os.access(NGINX, os.X_OK), reason="nginx is not installed (apt-get install nginx-light; .ci/run does)"
)


def unit_lines(name: str, key: str) -> list[str]:
    text = (DEPLOY / "systemd" / name).read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def env_file_settings() -> dict[str, str]:
    """The shipped environment file's settings (secrets and addresses are the test's own)."""
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    return {name: value for name, value in pairs}


@dataclass
class Deployment:
    tmp: Path
    url: str
    cert: Path
    simulator: Simulator
    database_url: str
    ports: list[int]
    env: dict[str, str]
    nginx_conf: Path
    upstreams: Path

    def client(self, source: str = "127.0.0.1", **kwargs: object) -> httpx.Client:
        transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=self.cert), local_address=source)
        return httpx.Client(base_url=self.url, transport=transport, timeout=60, **kwargs)  # type: ignore[arg-type]

    def pid(self, port: int) -> int:
        return int((self.tmp / f"instance-{port}.pid").read_text())

    def instance_url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def start_instance(self, port: int) -> None:
        subprocess.run([str(self.tmp / "start-instance"), str(port)], check=True, timeout=10)
        wait_http(self.instance_url(port) + "/ready", timeout=60)
        deadline = time.monotonic() + 60
        while httpx.get(self.instance_url(port) + "/ready").status_code != 200:
            assert time.monotonic() < deadline, httpx.get(self.instance_url(port) + "/ready").text
            time.sleep(0.2)

    def watcher_active(self, port: int) -> float:
        page = httpx.get(self.instance_url(port) + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        return metric(page.text, "cocoon_deposit_watcher_active")

    def nginx(self, *args: str) -> None:
        subprocess.run([NGINX, "-c", str(self.nginx_conf), "-p", str(self.tmp), *args], check=True, timeout=10)


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def write_nginx_config(
    tmp: Path, https_port: int, http_port: int, ports: list[int], cert: Path, key: Path
) -> tuple[Path, Path]:
    site = (DEPLOY / "nginx" / "cocoon-platform.conf").read_text()
    site = re.sub(r"^\s*listen \[::\].*\n", "", site, flags=re.M)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    site = site.replace("/etc/ssl/cocoon-platform/fullchain.pem", str(cert))
    site = site.replace("/etc/ssl/cocoon-platform/privkey.pem", str(key))
    upstreams = (DEPLOY / "nginx" / "upstreams.conf").read_text()
    for shipped, port in zip((8001, 8002), ports, strict=True):
        upstreams = upstreams.replace(f"127.0.0.1:{shipped}", f"127.0.0.1:{port}")
    (tmp / "site.conf").write_text(site)
    (tmp / "upstreams.conf").write_text(upstreams)
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = tmp / "nginx.conf"
    main.write_text(f"""{user}worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/nginx-access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/upstreams.conf;
    include {tmp}/site.conf;
}}
""")
    return main, tmp / "upstreams.conf"


def write_instance_scripts(tmp: Path, env: dict[str, str]) -> None:
    """start-instance/stop-instance PORT: the unit's ExecStart with its Environment lines, as systemd runs it."""
    (exec_start,) = unit_lines("cocoon-platform@.service", "ExecStart")
    command = exec_start.replace("/opt/cocoon-platform/.venv/bin/", f"{BIN}/")
    unit_env = [line.replace("%i", "$1") for line in unit_lines("cocoon-platform@.service", "Environment")]
    exports = "\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items())
    start = tmp / "start-instance"
    start.write_text(f"""#!/usr/bin/env bash
set -e
{exports}
export {" ".join(unit_env)}
cd {tmp}
setsid {command} >> {tmp}/instance-$1.log 2>&1 < /dev/null &
echo $! > {tmp}/instance-$1.pid
""")
    stop = tmp / "stop-instance"
    stop.write_text(f"""#!/usr/bin/env bash
[ -f {tmp}/instance-$1.pid ] || exit 0
pid=$(cat {tmp}/instance-$1.pid)
kill -TERM "$pid" 2>/dev/null || exit 0
for _ in $(seq 450); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
kill -KILL "$pid"
""")
    for script in (start, stop):
        script.chmod(0o755)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    import redis

    tmp = tmp_path_factory.mktemp("deploy")
    redis.Redis.from_url(REDIS_URL).flushdb()
    simulator = start_simulator(tmp, "--wallet", WALLET)
    database_url = create_pg_database()
    ports = [free_port(), free_port()]
    env = base_env(
        {
            **env_file_settings(),
            "COCOON_DATABASE_URL": database_url,
            "COCOON_REDIS_URL": REDIS_URL,
            "COCOON_UPSTREAM_URL": simulator.url,
            "COCOON_TONCENTER_URL": simulator.url,
            "COCOON_DEPOSIT_WALLET": WALLET,
            "COCOON_DEPOSIT_WATCHER": "true",
            "COCOON_DEPOSIT_POLL_SECONDS": "0.3",
            "COCOON_LOG_JSON": "false",
            "COCOON_ADMIN_TOKEN": "admin-secret-for-tests",
            "COCOON_METRICS_TOKEN": METRICS_TOKEN,
            "COCOON_TONCENTER_API_KEY": "",
            "COCOON_RATE_LIMIT_CONCURRENT": "2",
            "COCOON_RATE_LIMIT_SIGNUP_PER_MINUTE": "3",
            "COCOON_SHUTDOWN_GRACE_SECONDS": "20",
        }
    )
    cert, key = make_certificate(tmp)
    https_port, http_port = free_port(), free_port()
    nginx_conf, upstreams = write_nginx_config(tmp, https_port, http_port, ports, cert, key)
    write_instance_scripts(tmp, env)
    deployment = Deployment(
        tmp, f"https://127.0.0.1:{https_port}", cert, simulator, database_url, ports, env, nginx_conf, upstreams
    )
    try:
        (migrate,) = unit_lines("cocoon-platform-migrate.service", "ExecStart")
        subprocess.run(
            migrate.replace("/opt/cocoon-platform/.venv/bin/", f"{BIN}/").split(),
            env=env,
            check=True,
            timeout=60,
            cwd=tmp,
        )
        # The first instance takes the deposit watcher's lease before the second starts.
        deployment.start_instance(ports[0])
        deadline = time.monotonic() + 30
        while deployment.watcher_active(ports[0]) != 1.0:
            assert time.monotonic() < deadline, "the first instance never took the watcher lease"
            time.sleep(0.2)
        deployment.start_instance(ports[1])
        deployment.nginx("-t", "-q")
        deployment.nginx()
        wait_http(f"http://127.0.0.1:{http_port}/", timeout=10)
        yield deployment
    finally:
        for port in ports:
            subprocess.run([str(tmp / "stop-instance"), str(port)], timeout=60)
        if (tmp / "nginx.pid").exists():
            subprocess.run([NGINX, "-c", str(nginx_conf), "-p", str(tmp), "-s", "quit"], timeout=10)
        simulator.stop()
        drop_pg_database(database_url)


def chat(client: httpx.Client, key: str, **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16, **extra}
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)


def register(deployment: Deployment) -> tuple[str, str]:
    """A new account, signed up from an address of its own (sign-ups are limited per address)."""
    source = f"127.0.1.{next(SOURCES)}"
    with deployment.client(source) as client:
        body = client.post("/api/register").json()
    return body["api_key"], body["deposit_code"]


def balance(client: httpx.Client, key: str) -> int:
    return int(client.get("/v1/balance", headers={"Authorization": f"Bearer {key}"}).json()["balance_nanoton"])


def test_units_and_files_are_valid(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # verify wants the programs to exist: check copies pointing at this checkout's virtualenv.
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text().replace("/opt/cocoon-platform/.venv/bin/", f"{BIN}/")
        text = re.sub(r"^(User|Group)=cocoon$", r"\1=root", text, flags=re.M)
        (tmp_path / unit.name).write_text(text)
    (tmp_path / "cocoon-platform@8001.service").symlink_to(tmp_path / "cocoon-platform@.service")
    units = [
        str(tmp_path / name)
        for name in ("cocoon-platform-migrate.service", "cocoon-platform@8001.service", "cocoon-platform-watch.service")
    ]
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    problems = [
        line
        for line in result.stderr.splitlines()
        if any(unit.name in line for unit in (DEPLOY / "systemd").glob("*.service")) or "cocoon-platform@8001" in line
    ]
    assert not problems, result.stderr
    # Every setting the environment file names is one the platform knows.
    from cocoon_platform.config import Settings

    known = {f"COCOON_{name.upper()}" for name in Settings.model_fields}
    assert set(env_file_settings()) <= known, set(env_file_settings()) - known
    assert subprocess.run([NGINX, "-v"], capture_output=True).returncode == 0


def test_register_fund_chat_and_stream_over_https(deployment: Deployment) -> None:
    key, code = register(deployment)
    with deployment.client() as client:
        # A deposit on the chain, credited by whichever instance holds the watcher's lease.
        httpx.post(
            deployment.simulator.url + "/_ton/deposits",
            json={"comment": code, "amount_nanoton": 10**9, "count": 1},
            timeout=10,
        ).raise_for_status()
        deadline = time.monotonic() + 30
        while balance(client, key) != 10**9:
            assert time.monotonic() < deadline, "the deposit was not credited"
            time.sleep(0.2)
        answer = chat(client, key)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["cost_nanoton"] > 0
        assert balance(client, key) == 10**9 - answer.json()["usage"]["cost_nanoton"]

        # Server-sent events arrive as the network produces them, not buffered by nginx.
        deployment.simulator.configure(tpt_ms=40)
        try:
            arrivals: list[float] = []
            began = time.monotonic()
            with client.stream(
                "POST",
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "count"}],
                    "max_tokens": 40,
                    "stream": True,
                },
            ) as stream:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        arrivals.append(time.monotonic() - began)
        finally:
            deployment.simulator.configure(tpt_ms=0)
        assert len(arrivals) > 10
        # 40 tokens at 40 ms: the first event must come long before the last one.
        assert arrivals[-1] - arrivals[0] > 0.8, arrivals
        assert arrivals[1] < arrivals[-1] / 2, arrivals

        # nginx's own refusals keep the platform's JSON error shape.
        too_large = client.post(
            "/v1/chat/completions",
            content=b"x" * (6 * 1024 * 1024),
            headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        assert too_large.status_code == 413
        assert too_large.json()["error"]["code"] == "request_too_large"
        assert client.get("/metrics").status_code == 404


def test_client_addresses_come_from_nginx_and_forged_ones_are_ignored(deployment: Deployment) -> None:
    # Sign-ups are limited per client address (3 a minute here). A client rotating a forged
    # X-Forwarded-For is still one address; another machine (another loopback address) is not.
    with deployment.client("127.0.0.2") as client:
        statuses = [
            client.post("/api/register", headers={"X-Forwarded-For": f"10.0.0.{n}"}).status_code for n in range(4)
        ]
    assert statuses == [200, 200, 200, 429]
    with deployment.client("127.0.0.3") as other:
        assert other.post("/api/register").status_code == 200


def test_rate_limit_is_shared_across_instances(deployment: Deployment) -> None:
    key, _ = register(deployment)
    fund(deployment.database_url, key, 10**9)
    deployment.simulator.configure(ttft_ms=1500)
    results: list[int] = []

    def slow() -> None:
        with deployment.client() as own:
            results.append(chat(own, key).status_code)

    try:
        # Two slow requests, one on each instance (nginx alternates), fill the key's two slots...
        first = [threading.Thread(target=slow) for _ in range(2)]
        for thread in first:
            thread.start()
        time.sleep(0.7)
        # ... so a third is refused, whichever instance it reaches.
        with deployment.client() as client:
            third = chat(client, key)
        for thread in first:
            thread.join()
    finally:
        deployment.simulator.configure(ttft_ms=0)
    assert sorted(results) == [200, 200]
    assert third.status_code == 429, third.text


def test_instance_killed_mid_stream_the_other_serves_and_takes_the_watcher(deployment: Deployment) -> None:
    holder, survivor = deployment.ports
    assert deployment.watcher_active(holder) == 1.0
    key, code = register(deployment)
    fund(deployment.database_url, key, 10**9)
    deployment.simulator.configure(tpt_ms=50)
    cut: list[BaseException] = []

    def stream() -> None:
        try:
            with (
                deployment.client() as own,
                own.stream(
                    "POST",
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json={
                        "model": MODEL,
                        "messages": [{"role": "user", "content": "x"}],
                        "max_tokens": 200,
                        "stream": True,
                    },
                ) as answer,
            ):
                for _ in answer.iter_lines():
                    pass
        except httpx.HTTPError as exc:
            cut.append(exc)

    try:
        streams = [threading.Thread(target=stream) for _ in range(2)]  # one on each instance
        for thread in streams:
            thread.start()
        time.sleep(1.5)
        os.kill(deployment.pid(holder), signal.SIGKILL)
        for thread in streams:
            thread.join(30)
    finally:
        deployment.simulator.configure(tpt_ms=0)
    assert len(cut) <= 1  # the stream on the killed instance may break; the other completes

    with deployment.client() as client:
        statuses = [chat(client, key).status_code for _ in range(10)]
        assert statuses == [200] * 10
        before = balance(client, key)
        httpx.post(
            deployment.simulator.url + "/_ton/deposits",
            json={"comment": code, "amount_nanoton": 10**8, "count": 1},
            timeout=10,
        ).raise_for_status()
        deadline = time.monotonic() + 30
        while balance(client, key) != before + 10**8:
            assert time.monotonic() < deadline, "the survivor did not take over the deposit watcher"
            time.sleep(0.2)
    assert deployment.watcher_active(survivor) == 1.0
    deployment.start_instance(holder)


def test_rolling_restart_under_load_fails_no_request_and_loses_no_charge(deployment: Deployment) -> None:
    keys = [register(deployment)[0] for _ in range(2)]
    for key in keys:
        fund(deployment.database_url, key, 10**9)
    pids = [deployment.pid(port) for port in deployment.ports]
    stop = threading.Event()
    outcomes: list[tuple[str, str, int]] = []
    access_log = deployment.tmp / "nginx-access.log"
    log_offset = access_log.stat().st_size

    def load(key: str, streaming: bool) -> None:
        # The openai SDK, as users run it: it sends a request again when its connection closed
        # before any answer (nginx's old workers close idle keep-alive connections on a reload),
        # which never reached the platform. A retry that hid a billed request would show below, in
        # a balance moved by more than the answers' costs; one that hid an error, in nginx's log.
        http = httpx.Client(verify=ssl.create_default_context(cafile=deployment.cert), timeout=60)
        client = openai.OpenAI(base_url=deployment.url + "/v1", api_key=key, http_client=http, max_retries=2)
        messages: list[Any] = [{"role": "user", "content": "s"}]
        while not stop.is_set():
            cost = 0
            try:
                if streaming:
                    for chunk in client.chat.completions.create(
                        model=MODEL,
                        messages=messages,
                        max_tokens=16,
                        stream=True,
                        stream_options={"include_usage": True},
                    ):
                        if chunk.usage is not None:
                            cost = int((chunk.usage.model_extra or {})["cost_nanoton"])
                else:
                    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16)
                    assert answer.usage is not None
                    cost = int((answer.usage.model_extra or {})["cost_nanoton"])
                outcomes.append((key, "ok", cost))
            except openai.APIError as exc:
                outcomes.append((key, repr(exc), 0))
            time.sleep(0.05)

    threads = [
        threading.Thread(target=load, args=(keys[0], False)),
        threading.Thread(target=load, args=(keys[1], True)),
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        env = {
            **deployment.env,
            "UPSTREAMS": str(deployment.upstreams),
            "MIGRATE": f"{BIN}/cocoon-platform migrate",
            "RESTART": f"{deployment.tmp}/stop-instance {{port}} && {deployment.tmp}/start-instance {{port}}",
            "RELOAD": f"{NGINX} -c {deployment.nginx_conf} -p {deployment.tmp} -s reload",
        }
        result = subprocess.run(
            [str(DEPLOY / "rolling-restart.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=deployment.tmp,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert [deployment.pid(port) for port in deployment.ports] != pids  # both really restarted
    assert all(pid not in pids for pid in (deployment.pid(port) for port in deployment.ports))
    assert len(outcomes) > 20
    assert {status for _, status, _ in outcomes} == {"ok"}, [o for o in outcomes if o[1] != "ok"]
    statuses = re.findall(r'" (\d{3}) ', access_log.read_text()[log_offset:])
    assert statuses and set(statuses) == {"200"}, sorted(set(statuses))
    assert " down;" not in deployment.upstreams.read_text()
    # Every answer was charged exactly what it said: each balance moved by the sum of its answers.
    with deployment.client() as client:
        for key in keys:
            spent = sum(cost for k, _, cost in outcomes if k == key)
            assert spent > 0
            assert balance(client, key) == 10**9 - spent


def test_books_reconcile_at_the_end(deployment: Deployment) -> None:
    assert ledger_consistent(deployment.database_url) == []
    result = run_cli(["admin", "reconcile"], deployment.database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert db_rows(deployment.database_url, "SELECT COUNT(*) FROM usage_records")[0][0] > 0
