"""The MCP tools through the MCP SDK's own client, against a real platform and simulator.

Over stdio (`cocoon-platform mcp` spawned as a client would) and over streamable HTTP (`/mcp` on the
platform): every tool listed and called, answers equal to the HTTP API's, a chat billed like an API
call (in /v1/usage with its cost, the balance moved by exactly that), a 402 as a tool error that
says how to top up. The database does not change what the tools do (they only call the HTTP API),
so SQLite; one test runs on PostgreSQL, where the key check and the tools' own calls each take a
connection of the pool.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult
from support import BIN, Server, base_env, fresh_database, fund, new_account, start_server, start_simulator

TOOLS = {
    "chat",
    "translate",
    "list_models",
    "network_status",
    "pricing",
    "balance",
    "deposit_instructions",
    "usage_history",
    "get_generation",
}
FUNDS = 10**9  # 1 TON

Connect = Callable[[str], AbstractAsyncContextManager[Client]]


@dataclass
class Platform:
    server: Server
    database_url: str
    upstream_url: str

    def api(self, key: str) -> httpx.Client:
        return self.server.client(headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp: Path = tmp_path_factory.mktemp("mcp")
    simulator = start_simulator(tmp)
    database_url = f"sqlite+aiosqlite:///{tmp}/cocoon.db"
    server = start_server(tmp, database_url, {"COCOON_UPSTREAM_URL": simulator.url})
    try:
        server.client().get("/v1/models").raise_for_status()
        yield Platform(server, database_url, simulator.url)
    finally:
        server.stop()
        simulator.stop()


def stdio_connect(platform: Platform) -> Connect:
    """A client that spawns `cocoon-platform mcp` with the key in its environment, as a desktop app does."""

    def connect(key: str) -> AbstractAsyncContextManager[Client]:
        env = base_env({"COCOON_API_KEY": key, "COCOON_PLATFORM_URL": platform.server.url})
        return Client(StdioServerParameters(command=str(BIN / "cocoon-platform"), args=["mcp"], env=env))

    return connect


def http_connect(platform: Platform) -> Connect:
    """A client of `/mcp` on the platform, the key as a bearer token, as a remote MCP client does."""

    def connect(key: str) -> AbstractAsyncContextManager[Client]:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
        return Client(streamable_http_client(f"{platform.server.url}/mcp", http_client=http))

    return connect


@pytest.fixture(params=["stdio", "http"])
def connect(request: pytest.FixtureRequest, platform: Platform) -> Connect:
    return {"stdio": stdio_connect, "http": http_connect}[request.param](platform)


def run(test: Callable[[], Any]) -> None:
    anyio.run(test)


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    text = result.content[0].text  # type: ignore[union-attr]
    assert json.loads(text) == result.structured_content  # clients that read only text see the same
    return result.structured_content


def test_tools_are_listed_with_descriptions_and_schemas(platform: Platform, connect: Connect) -> None:
    key = new_account(platform.server, platform.database_url)

    async def check() -> None:
        async with connect(key) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and "Use it" in tool.description, tool.name
            assert "\n " not in tool.description, tool.name  # no source indentation
            assert tool.input_schema["type"] == "object"
        assert set(tools["chat"].input_schema["required"]) == {"model", "messages"}
        assert set(tools["translate"].input_schema["required"]) == {"text", "target_language"}
        assert "zh" in tools["translate"].input_schema["properties"]["target_language"]["enum"]
        assert tools["balance"].annotations is not None and tools["balance"].annotations.read_only_hint
        assert tools["chat"].annotations is not None and not tools["chat"].annotations.read_only_hint

    run(check)


def test_free_tools_answer_as_the_api_does(platform: Platform, connect: Connect) -> None:
    key = new_account(platform.server, platform.database_url, FUNDS)
    api = platform.api(key)

    async def check() -> None:
        async with connect(key) as client:
            assert structured(await client.call_tool("balance", {})) == api.get("/v1/balance").json()
            deposit = structured(await client.call_tool("deposit_instructions", {}))
            assert deposit == api.get("/v1/deposit").json()
            assert deposit["payment_link"].startswith("ton://transfer/") and deposit["memo"] in deposit["payment_link"]
            models = structured(await client.call_tool("list_models", {}))["models"]
            assert models == api.get("/v1/models").json()["data"]
            prices = structured(await client.call_tool("pricing", {}))
            assert prices["rates"] == api.get("/v1/pricing").json()["rates"]
            status = structured(await client.call_tool("network_status", {}))
            assert status["status"] == "online"
            assert {m["id"] for m in status["models"]} == {m["id"] for m in models if "/" in m["id"]}
            usage = structured(await client.call_tool("usage_history", {"limit": 5}))
            assert usage["data"] == [] and usage["has_more"] is False

    run(check)


def test_chat_and_translate_are_billed_like_api_calls(platform: Platform, connect: Connect) -> None:
    key = new_account(platform.server, platform.database_url, FUNDS)
    api = platform.api(key)

    async def check() -> None:
        async with connect(key) as client:
            before = api.get("/v1/balance").json()["balance_nanoton"]
            chat = structured(
                await client.call_tool(
                    "chat",
                    {
                        "model": "Qwen/Qwen3-32B",
                        "messages": [{"role": "user", "content": "What is TON?"}],
                        "max_tokens": 64,
                    },
                )
            )
            assert chat["answer"] and chat["model"] == "Qwen/Qwen3-32B"
            assert chat["cost_nanoton"] > 0 and chat["cost_ton"] == chat["cost_nanoton"] / 1e9
            after_chat = api.get("/v1/balance").json()["balance_nanoton"]
            assert before - after_chat == chat["cost_nanoton"]

            translation = structured(
                await client.call_tool(
                    "translate", {"text": "May the force be with you", "target_language": "zh", "source_language": "en"}
                )
            )
            assert translation["model"] == "ByteDance-Seed/Seed-X-PPO-7B"
            assert translation["translation"] and not translation["translation"].isascii()
            assert translation["cost_nanoton"] > 0
            assert after_chat - api.get("/v1/balance").json()["balance_nanoton"] == translation["cost_nanoton"]

            usage = structured(await client.call_tool("usage_history", {"limit": 10}))
            assert usage["data"] == api.get("/v1/usage", params={"limit": 10}).json()["data"]

            generation = structured(await client.call_tool("get_generation", {"id": chat["request_id"]}))
            assert generation == api.get("/v1/generation", params={"id": chat["request_id"]}).json()
            assert generation["cost_nanoton"] == chat["cost_nanoton"] and generation["model"] == chat["model"]
            unknown = await client.call_tool("get_generation", {"id": "chatcmpl-nothing"})
            assert unknown.is_error and "HTTP 404" in unknown.content[0].text  # type: ignore[union-attr]
        rows = {row["request_id"]: row for row in usage["data"]}
        assert set(rows) == {chat["request_id"], translation["request_id"]}
        assert rows[chat["request_id"]]["cost_nanoton"] == chat["cost_nanoton"]
        assert rows[chat["request_id"]]["endpoint"] == "chat"
        assert rows[translation["request_id"]]["cost_nanoton"] == translation["cost_nanoton"]
        assert rows[translation["request_id"]]["endpoint"] == "completions"

    run(check)


def test_refusals_are_tool_errors_with_the_platforms_message(platform: Platform, connect: Connect) -> None:
    key = new_account(platform.server, platform.database_url)  # balance 0

    async def check() -> None:
        async with connect(key) as client:
            refused = await client.call_tool(
                "chat", {"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert refused.is_error
            text = refused.content[0].text  # type: ignore[union-attr]
            assert "HTTP 402 (insufficient_balance)" in text and "Insufficient balance" in text
            assert "deposit_instructions" in text and "ton://" in text
            await anyio.to_thread.run_sync(fund, platform.database_url, key, FUNDS)
            unknown = await client.call_tool(
                "chat", {"model": "no/such-model", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert unknown.is_error and "no/such-model" in unknown.content[0].text  # type: ignore[union-attr]
            invalid = await client.call_tool("chat", {"model": "Qwen/Qwen3-32B", "messages": []})
            assert invalid.is_error
            api = platform.api(key)  # nothing was charged
            assert all(row["cost_nanoton"] == 0 for row in api.get("/v1/usage").json()["data"])
            assert api.get("/v1/balance").json()["balance_nanoton"] == FUNDS

    run(check)


def test_stdio_refuses_to_start_without_a_key(platform: Platform) -> None:
    done = subprocess.run(
        [str(BIN / "cocoon-platform"), "mcp"],
        check=False,
        capture_output=True,
        text=True,
        env=base_env({"COCOON_PLATFORM_URL": platform.server.url}),
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1 and "COCOON_API_KEY" in done.stderr and done.stdout == ""


def test_http_clients_of_the_2025_protocol(platform: Platform) -> None:
    """Clients still on the initialize handshake (2025 revisions, most desktop apps today) get the same tools."""
    key = new_account(platform.server, platform.database_url, FUNDS)
    api = platform.api(key)

    async def check() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
        transport = streamable_http_client(f"{platform.server.url}/mcp", http_client=http)
        async with Client(transport, mode="legacy") as client:
            assert client.protocol_version.startswith("2025-")
            assert client.server_info is not None and client.server_info.name == "cocoon-platform"
            assert client.instructions is not None and "402" in client.instructions
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
            chat = structured(
                await client.call_tool(
                    "chat", {"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "hi"}]}
                )
            )
            assert structured(await client.call_tool("balance", {})) == api.get("/v1/balance").json()
        assert api.get("/v1/balance").json()["balance_nanoton"] == FUNDS - chat["cost_nanoton"]

    run(check)


def test_mcp_over_http_needs_a_valid_key(platform: Platform) -> None:
    request = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    client = platform.server.client()
    for authorization in (None, "Bearer ck_not-a-key", "Basic abc"):
        sent = {**headers, "Authorization": authorization} if authorization else headers
        refused = client.post("/mcp", json=request, headers=sent)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    key = new_account(platform.server, platform.database_url)
    accepted = client.post("/mcp", json=request, headers={**headers, "Authorization": f"Bearer {key}"})
    assert accepted.status_code == 200
    assert accepted.json()["result"]["serverInfo"]["name"] == "cocoon-platform"

    async def connect_without_key() -> None:
        async with Client(f"{platform.server.url}/mcp") as mcp_client:
            await mcp_client.list_tools()

    with pytest.raises(BaseExceptionGroup) as raised:  # the SDK's client gives up on the 401
        anyio.run(connect_without_key)
    assert raised.group_contains(MCPError, depth=None)


def test_failed_keys_on_mcp_count_against_the_address(platform: Platform, tmp_path: Path) -> None:
    """/mcp checks keys with the API's own dependency: its failures are throttled like any other door's."""
    server = start_server(tmp_path, platform.database_url, {"COCOON_AUTH_FAILURES_PER_MINUTE": "3"})
    try:
        key = new_account(server, platform.database_url)
        client = server.client(headers={"Accept": "application/json, text/event-stream"})
        ping = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        statuses = [
            client.post("/mcp", json=ping, headers={"Authorization": f"Bearer ck_{i:040d}"}).status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 401, 429]
        refused = client.post("/mcp", json=ping, headers={"Authorization": f"Bearer {key}"})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert client.get("/v1/balance", headers={"Authorization": f"Bearer {key}"}).status_code == 429
    finally:
        server.stop()


def test_mcp_is_in_the_published_api(platform: Platform) -> None:
    client = platform.server.client()
    assert "post" in client.get("/openapi.json").json()["paths"]["/mcp"]
    assert "[POST /mcp]" in client.get("/llms.txt").text


def test_chat_over_http_is_billed_on_postgresql(platform: Platform, tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as database_url:
        server = start_server(tmp_path, database_url, {"COCOON_UPSTREAM_URL": platform.upstream_url})
        try:
            on_postgresql = Platform(server, database_url, platform.upstream_url)
            key = new_account(server, database_url, FUNDS)
            api = on_postgresql.api(key)

            async def check() -> None:
                async with http_connect(on_postgresql)(key) as client:
                    results = [
                        structured(
                            await client.call_tool(
                                "chat",
                                {"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": f"question {i}"}]},
                            )
                        )
                        for i in range(3)
                    ]
                    balance = structured(await client.call_tool("balance", {}))
                charged = sum(result["cost_nanoton"] for result in results)
                assert charged > 0 and balance["balance_nanoton"] == FUNDS - charged
                assert balance == api.get("/v1/balance").json()
                rows = api.get("/v1/usage").json()["data"]
                assert sorted(row["request_id"] for row in rows) == sorted(r["request_id"] for r in results)

            run(check)
        finally:
            server.stop()
