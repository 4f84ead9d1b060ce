"""`cocoon-platform mcp`: the MCP tools over stdio, on the user's own machine.

A client of any deployment's public API: the key comes from `COCOON_API_KEY` (never from argv,
where other users of the machine could read it) and the platform's address from
`COCOON_PLATFORM_URL`. It needs no database and no platform settings. stdout carries the MCP
protocol only; logs go to stderr, at warning level (a request line would show its URL).
"""

from __future__ import annotations

import argparse
import logging
import os

from cocoon_platform.cli.common import CommandError, Subparsers

DEFAULT_PLATFORM_URL = "http://127.0.0.1:8000"


def register_mcp(commands: Subparsers[argparse.ArgumentParser]) -> None:
    """Add `mcp` to the top-level commands."""
    mcp = commands.add_parser(
        "mcp",
        help="run the MCP server over stdio for an AI client (COCOON_API_KEY, COCOON_PLATFORM_URL)",
        description="The platform's MCP tools (chat, translate, models, network status, pricing, balance, "
        "deposit instructions, usage, generation lookup) over stdio, as a client of the platform's HTTP API. "
        f"Set COCOON_API_KEY to your ck_ key and COCOON_PLATFORM_URL to the platform (default {DEFAULT_PLATFORM_URL}).",
    )
    mcp.set_defaults(handler=cmd_mcp)


def cmd_mcp(_: argparse.Namespace) -> int:
    api_key = os.environ.get("COCOON_API_KEY", "").strip()
    if not api_key:
        raise CommandError("set COCOON_API_KEY to your ck_ API key (POST /api/register gives one)")
    url = os.environ.get("COCOON_PLATFORM_URL", "").strip() or DEFAULT_PLATFORM_URL
    if not url.startswith(("http://", "https://")):
        raise CommandError(f"COCOON_PLATFORM_URL must be an http:// or https:// URL, not {url!r}")
    import anyio  # the SDK and its transport load only for this command

    logging.getLogger("httpx").setLevel(logging.WARNING)
    anyio.run(serve_stdio, url.rstrip("/"), api_key)
    return 0


async def serve_stdio(url: str, api_key: str) -> None:
    import httpx

    from cocoon_platform.agents.client import PlatformClient
    from cocoon_platform.agents.tools import build_server

    async with httpx.AsyncClient(base_url=url) as http:
        client = PlatformClient(http, api_key)
        await build_server(lambda _: client).run_stdio_async()
