"""`/mcp`: the same MCP tools over streamable HTTP on the platform itself.

Rules:
- The caller's `ck_` key is the bearer token, checked by the platform's own key dependency
  (`CurrentKey`) before the MCP transport sees the request: a missing or wrong key gets the API's
  401 in the API's shape, and counts against the client's address like any failed authentication.
- The tools call the platform's public HTTP API with that same key, in-process (an ASGI transport
  into the platform's front door, no socket): each call passes the front door's body limit, key
  check, rate limits, field filter, holds and settlement exactly as an API call does, and shows in
  `/v1/usage`. Nothing is billed or checked a second way here.
- Stateless, with JSON answers: every POST stands alone (no session to keep, nothing in memory
  between calls, any instance or worker can answer). The session manager runs in the app's lifespan.
- No DNS-rebinding host check: that guards servers trusting ambient credentials (cookies, a local
  network); this one trusts only the bearer key a browser never sends on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Receive, Scope, Send

from cocoon_platform.accounts.keys import bearer_token
from cocoon_platform.agents.client import PlatformClient
from cocoon_platform.agents.tools import build_server
from cocoon_platform.deps import CurrentKey, SessionDep
from cocoon_platform.errors import InvalidApiKey

MCP_PATH = "/mcp"
INTERNAL_URL = "http://platform.internal"  # never resolved: requests go through the ASGI transport

router = APIRouter()


class McpEndpoint:
    """The MCP server of one running platform, and the in-process client its tools call the API with."""

    def __init__(self, api: FastAPI, lifespan_state: dict[str, Any], max_body_bytes: int) -> None:
        self.api = api
        self.lifespan_state = lifespan_state
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self._front_door), base_url=INTERNAL_URL,
                                      trust_env=False)
        self.server = build_server(self._client_for)
        self.server.streamable_http_app(
            streamable_http_path=MCP_PATH, stateless_http=True, json_response=True,
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


class _Handover(Response):
    """Hands the request, its body unread, to the MCP transport, which writes the answer itself."""

    def __init__(self, endpoint: McpEndpoint) -> None:
        super().__init__()
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.endpoint(scope, receive, send)


MCP_DESCRIPTION = """The platform's tools for AI agents over the Model Context Protocol (streamable HTTP,
stateless, JSON answers): chat, translate, list_models, network_status, pricing, balance,
deposit_instructions, usage_history, get_generation. Authenticate with `Authorization: Bearer ck_...`;
inference through MCP is billed exactly like the same API call and appears in `GET /v1/usage`.
Point an MCP client at this URL; see `/docs/mcp.md`."""


@router.post(MCP_PATH, tags=["Agents"], summary="MCP server (streamable HTTP)", description=MCP_DESCRIPTION,
             response_class=Response,
             responses={200: {"description": "A JSON-RPC answer", "content": {"application/json": {}}},
                        401: {"description": "Invalid or missing API key"}})
async def mcp_post(request: Request, identity: CurrentKey, session: SessionDep) -> Response:
    return await _hand_over(request, session)


@router.api_route(MCP_PATH, methods=["GET", "DELETE"], include_in_schema=False)
async def mcp_other(request: Request, identity: CurrentKey, session: SessionDep) -> Response:
    """The transport answers these itself (stateless: no stream to open, no session to end)."""
    return await _hand_over(request, session)


async def _hand_over(request: Request, session: AsyncSession) -> Response:
    # The key check's session ends here, not after the answer: its transaction would hold a database
    # connection (and on SQLite, the write lock) while the tools' own API calls wait for one.
    await session.close()
    return _Handover(request.state.mcp)
