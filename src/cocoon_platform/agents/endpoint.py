"""`/mcp`: the MCP tools over streamable HTTP on the platform itself (the server is in remote.py).

Rules:
- The caller's `ck_` key is the bearer token, checked by the platform's own key dependency
  (`CurrentKey`) before the MCP transport sees the request: a missing or wrong key gets the API's
  401 in the API's shape, and counts against the client's address like any failed authentication.
- The key check's database session ends before the tools run: its transaction would hold a
  connection (on SQLite, the write lock) while the tools' own API calls wait for one.
- The MCP SDK is loaded on the first `/mcp` request, in a thread, not at start-up: importing it
  costs 1-3 s of CPU, which a process that never serves MCP (a test's, a busy worker's) should not
  pay, and which should not stall the event loop. Its session manager then runs in a task of its
  own until shutdown (the SDK's task group must be entered and left by the same task); should
  that task end, the next request starts another.
"""

from __future__ import annotations

import asyncio
import importlib
from contextlib import suppress
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Receive, Scope, Send

from cocoon_platform.deps import CurrentKey, SessionDep
from cocoon_platform.errors import InvalidApiKey, openapi_responses

if TYPE_CHECKING:
    from cocoon_platform.agents.remote import McpEndpoint

MCP_PATH = "/mcp"

router = APIRouter()


class McpService:
    """The lifespan's handle on the MCP server: starts it on first use, stops it at shutdown."""

    def __init__(self, api: FastAPI, lifespan_state: dict[str, Any], max_body_bytes: int) -> None:
        self.api = api
        self.lifespan_state = lifespan_state
        self.max_body_bytes = max_body_bytes
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[McpEndpoint] | None = None

    async def __aenter__(self) -> McpService:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def endpoint(self) -> McpEndpoint:
        if self._task is None or self._task.done():
            self._ready = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._serve(self._ready), name="mcp")
        assert self._ready is not None
        return await asyncio.shield(self._ready)

    async def _serve(self, ready: asyncio.Future[McpEndpoint]) -> None:
        try:
            remote = await asyncio.to_thread(importlib.import_module, "cocoon_platform.agents.remote")
            endpoint: McpEndpoint = remote.McpEndpoint(self.api, self.lifespan_state, self.max_body_bytes)
            async with endpoint.running():
                ready.set_result(endpoint)
                await asyncio.Future()  # serve until shutdown cancels this task
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError("the MCP server stopped"))
            raise


class _Handover(Response):
    """Hands the request, its body unread, to the MCP transport, which writes the answer itself."""

    def __init__(self, service: McpService) -> None:
        super().__init__()
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = await self.service.endpoint()
        await endpoint(scope, receive, send)


MCP_DESCRIPTION = """The platform's tools for AI agents over the Model Context Protocol (streamable HTTP,
stateless, JSON answers): chat, translate, list_models, network_status, pricing, balance,
deposit_instructions, usage_history, get_generation. Authenticate with `Authorization: Bearer ck_...`;
inference through MCP is billed exactly like the same API call and appears in `GET /v1/usage`.
Point an MCP client at this URL; see `/docs/mcp.md`."""


@router.post(
    MCP_PATH,
    tags=["Agents"],
    summary="MCP server (streamable HTTP)",
    description=MCP_DESCRIPTION,
    response_class=Response,
    responses={
        200: {"description": "A JSON-RPC answer", "content": {"application/json": {}}},
        **openapi_responses(InvalidApiKey()),
    },
)
async def mcp_post(request: Request, identity: CurrentKey, session: SessionDep) -> Response:
    return await _hand_over(request, session)


@router.api_route(MCP_PATH, methods=["GET", "DELETE"], include_in_schema=False)
async def mcp_other(request: Request, identity: CurrentKey, session: SessionDep) -> Response:
    """The transport answers these itself (stateless: no stream to open, no session to end)."""
    return await _hand_over(request, session)


async def _hand_over(request: Request, session: AsyncSession) -> Response:
    await session.close()  # see the module's rules: the tools' API calls need the connection
    return _Handover(request.state.mcp)
