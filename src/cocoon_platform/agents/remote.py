"""The MCP server behind `/mcp` (see endpoint.py): the SDK's streamable HTTP transport over the tools.

Rules:
- The tools call the platform's public HTTP API with the caller's key, in-process (an ASGI transport
  into the platform's front door, no socket): each call passes the front door's body limit, key
  check, rate limits, field filter, holds and settlement exactly as an API call does, and shows in
  `/v1/usage`. Nothing is billed or checked a second way here.
- Stateless, with JSON answers: every POST stands alone (no session to keep, nothing in memory
  between calls, any instance or worker can answer). The session manager runs in the task that
  endpoint.py starts on the first `/mcp` request.
- No DNS-rebinding host check: that guards servers trusting ambient credentials (cookies, a local
  network); this one trusts only the bearer key a browser never sends on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from cocoon_platform.accounts.keys import bearer_token
from cocoon_platform.agents.client import PlatformClient
from cocoon_platform.agents.endpoint import MCP_PATH
from cocoon_platform.agents.tools import build_server
from cocoon_platform.errors import InvalidApiKey

INTERNAL_URL = "http://platform.internal"  # never resolved: requests go through the ASGI transport


class McpEndpoint:
    """The MCP server of one running platform, and the in-process client its tools call the API with."""

    def __init__(self, api: FastAPI, lifespan_state: dict[str, Any], max_body_bytes: int) -> None:
        self.api = api
        self.lifespan_state = lifespan_state
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self._front_door), base_url=INTERNAL_URL, trust_env=False
        )
        self.server = build_server(self._client_for)
        self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            max_request_body_size=max_body_bytes,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[McpEndpoint]:
        async with self.http, self.server.session_manager.run():
            yield self

    async def _front_door(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The platform's whole ASGI app (`PlatformApp`), with the lifespan's state as the server gives it."""
        await self.api.state.front_door({**scope, "state": dict(self.lifespan_state)}, receive, send)

    def _client_for(self, ctx: Context) -> PlatformClient:
        key = bearer_token((ctx.headers or {}).get("authorization"))
        if key is None:  # the route checked it: only a request that bypassed the route lands here
            raise InvalidApiKey()
        return PlatformClient(self.http, key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.server.session_manager.handle_request(scope, receive, send)
