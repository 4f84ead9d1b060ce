"""A guided tour: the COCOON-client simulator and the platform wired together, every endpoint used.

    python scripts/demo.py [--once]

Starts `cocoon-platform simulate` (which also fakes toncenter for its wallet) and
`cocoon-platform serve` on a fresh SQLite database, then registers, deposits TON, waits for the
watcher to credit it, chats (plain and streamed), translates, asks through MCP as an AI agent
would, and shows usage and balance.
Without --once it keeps both running for the dashboard until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openai import OpenAI

from cocoon_simulator.toncenter import DEFAULT_WALLET

BIN = Path(sys.executable).parent
DATA = Path("data")


def port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"a demo process exited early ({url}); see data/demo-*.log")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def show(title: str, value: Any) -> None:
    print(f"\n== {title}")
    print(json.dumps(value, indent=2, ensure_ascii=False) if not isinstance(value, str) else value)


async def ask_over_mcp(url: str, api_key: str) -> dict[str, Any]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        result = await client.call_tool(
            "chat",
            {
                "model": "Qwen/Qwen3-32B",
                "max_tokens": 40,
                "messages": [{"role": "user", "content": "Say hello to an AI agent."}],
            },
        )
    return result.structured_content or {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true", help="stop after the tour")
    args = parser.parse_args()
    DATA.mkdir(exist_ok=True)
    for leftover in DATA.glob("demo.db*"):
        leftover.unlink()
    sim_port, port = port_or_free(10000), port_or_free(8000)
    sim_url, url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COCOON_")}
    env.update(
        {
            "COCOON_DATABASE_URL": f"sqlite+aiosqlite:///{DATA.resolve()}/demo.db",
            "COCOON_PORT": str(port),
            "COCOON_UPSTREAM_URL": sim_url,
            "COCOON_TONCENTER_URL": sim_url,
            "COCOON_DEPOSIT_WALLET": DEFAULT_WALLET,
            "COCOON_DEPOSIT_POLL_SECONDS": "1",
            "COCOON_RATES_ENABLED": "false",  # no internet here: balance_usd stays null
            "COCOON_LOG_LEVEL": "warning",
        }
    )
    simulator = subprocess.Popen(
        [str(BIN / "cocoon-platform"), "simulate", "--port", str(sim_port), "--ttft-ms", "150", "--tpt-ms", "25"],
        env=env,
        stdout=(DATA / "demo-simulator.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    platform = subprocess.Popen(
        [str(BIN / "cocoon-platform"), "serve"],
        env=env,
        stdout=(DATA / "demo-platform.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait(sim_url + "/v1/models", simulator)
        wait(url + "/health", platform)
        print(f"COCOON-client simulator on {sim_url}; platform on {url}")
        http = httpx.Client(base_url=url, timeout=30)
        show("GET /health", http.get("/health").json())
        show("GET /v1/models", http.get("/v1/models").json())
        show("GET /api/stats", http.get("/api/stats").json())
        show("GET /v1/pricing", http.get("/v1/pricing").json())

        account = http.post("/api/register").json()
        show("POST /api/register (the key is shown once)", account)
        auth = {"Authorization": f"Bearer {account['api_key']}"}
        deposit = http.get("/v1/deposit", headers=auth).json()
        show("GET /v1/deposit", deposit)

        print(f"\n== Sending 2.5 TON to {deposit['wallet']} with comment {deposit['memo']} (simulated)")
        subprocess.run(
            [
                str(BIN / "cocoon-platform"),
                "simulate",
                "deposit",
                "--url",
                sim_url,
                "--code",
                deposit["memo"],
                "--amount-ton",
                "2.5",
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        sent = time.monotonic()
        while http.get("/v1/balance", headers=auth).json()["balance_nanoton"] == 0:
            if time.monotonic() - sent > 30:
                raise SystemExit("the deposit was not credited within 30 s; see data/demo-platform.log")
            time.sleep(0.2)
        show(
            f"GET /v1/balance (credited {time.monotonic() - sent:.1f} s after sending)",
            http.get("/v1/balance", headers=auth).json(),
        )

        client = OpenAI(base_url=url + "/v1", api_key=account["api_key"])
        answer = client.chat.completions.create(
            model="Qwen/Qwen3-32B", max_tokens=60, messages=[{"role": "user", "content": "What is the TON blockchain?"}]
        )
        show("POST /v1/chat/completions", answer.model_dump(exclude_none=True))

        print("\n== POST /v1/chat/completions, streamed")
        stream = client.chat.completions.create(
            model="Qwen/Qwen3-32B",
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Tell me a story."}],
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                print(chunk.choices[0].delta.content, end="", flush=True)
            if chunk.usage is not None:
                print(
                    f"\n   [{chunk.usage.completion_tokens} tokens, "
                    f"{(chunk.usage.model_extra or {}).get('cost_ton')} TON]"
                )

        translation = client.completions.create(
            model="ByteDance-Seed/Seed-X-PPO-7B",
            max_tokens=30,
            prompt="Translate the following English sentence into Chinese: Hello, how are you? <zh>",
        )
        show("POST /v1/completions (Seed-X translation)", translation.model_dump(exclude_none=True))

        show("GET /llms.txt (the first lines)", "\n".join(http.get("/llms.txt").text.splitlines()[:3]))
        show("MCP at /mcp: the tool chat, as an AI agent calls it", anyio.run(ask_over_mcp, url, account["api_key"]))

        show("GET /v1/usage", http.get("/v1/usage", headers=auth, params={"limit": 5}).json())
        show("GET /v1/balance", http.get("/v1/balance", headers=auth).json())
        if args.once:
            return 0
        print(f"\nDashboard: {url}/  (sign in with the key above). Ctrl-C stops the demo.")
        platform.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (platform, simulator):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
