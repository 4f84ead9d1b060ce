"""The ASGI application: FastAPI for the API surface, a lean handler for metered inference."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from cocoon_platform import __version__
from cocoon_platform.accounts.endpoints import router as accounts_router
from cocoon_platform.agents.endpoint import McpService
from cocoon_platform.agents.endpoint import router as mcp_router
from cocoon_platform.agents.llms import router as llms_router
from cocoon_platform.api_docs import router as api_docs_router
from cocoon_platform.billing.endpoints import router as billing_router
from cocoon_platform.billing.history import router as history_router
from cocoon_platform.config import Settings
from cocoon_platform.dashboard.endpoints import router as dashboard_router
from cocoon_platform.dialects import Dialect
from cocoon_platform.dialects.endpoints import router as dialects_router
from cocoon_platform.dialects.messages import COUNT_TOKENS_PATH
from cocoon_platform.dialects.messages import PATH as MESSAGES_PATH
from cocoon_platform.errors import MethodNotAllowed, PayloadTooLarge, install_handlers
from cocoon_platform.ops.endpoints import router as ops_router
from cocoon_platform.ops.request_log import configure_logging
from cocoon_platform.proxy.asgi import send_error, with_common_headers
from cocoon_platform.proxy.handler import DIALECTS, InferenceHandler, new_request_id
from cocoon_platform.proxy.openapi import add_inference_paths
from cocoon_platform.proxy.request import CHAT_PATH, COMPLETIONS_PATH
from cocoon_platform.server import tune_garbage_collector
from cocoon_platform.state import AppState
from cocoon_platform.system import router as system_router
from cocoon_platform.ton.watcher import watch_exclusively
from cocoon_platform.upstream.endpoints import router as upstream_router

DESCRIPTION = """Paid API proxy for the COCOON decentralized AI network on TON.
OpenAI-compatible chat and text completions with per-token billing, prepaid in TON.

Authenticate with `Authorization: Bearer ck_...` (from `POST /api/register`)."""

INFERENCE_PATHS = frozenset((CHAT_PATH, COMPLETIONS_PATH, *DIALECTS))
POST_ONLY_PATHS = INFERENCE_PATHS | {COUNT_TOKENS_PATH}
# Headers a browser's script may read from an answer.
EXPOSED_HEADERS = [
    "X-Request-Id",
    "Retry-After",
    "X-RateLimit-Limit-Requests",
    "X-RateLimit-Remaining-Requests",
    "X-RateLimit-Reset-Requests",
]


def error_dialect(path: str) -> Dialect | None:
    """The dialect whose shape a path's errors take (None: OpenAI's): an inference path's own, and
    Anthropic's for every path under /v1/messages (count_tokens, and those the platform does not
    serve, such as /v1/messages/batches): only Anthropic's SDK calls them, and it reads no other shape."""
    if path.startswith(MESSAGES_PATH + "/"):
        return DIALECTS[MESSAGES_PATH]
    return DIALECTS.get(path)


class PlatformApp:
    """Sends POSTs to the inference paths straight to the lean handler, the rest to FastAPI.

    The one front door. What every answer gets, and where each door applies it:
    - request id (`x-request-id`): the handler's own heads (proxy/asgi.py), FastAPI's through
      `with_common_headers`; 405 and 413 refusals here through `send_error`;
    - security headers (`nosniff`, `cache-control: no-store` unless a page sets its own): the
      same two places;
    - body-size limit (COCOON_MAX_BODY_BYTES, 413 in the error shape): the handler's
      `read_body`, `_bounded` here for FastAPI;
    - CORS: `CORSMiddleware` around this whole app (create_app).
    tests/test_front_door.py sends every route, read from the app, through both checks.

    The handler is made by the lifespan with the running state and reaches each request in
    `scope["state"]` (the ASGI server copies the lifespan's state into every request's scope)."""

    def __init__(self, api: FastAPI, max_body_bytes: int) -> None:
        self.api = api
        self.max_body_bytes = max_body_bytes
        api.state.front_door = self  # clients inside the platform (the MCP tools) call it in-process

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
        elif scope["path"] in INFERENCE_PATHS and scope["method"] == "POST":
            inference: InferenceHandler = scope["state"]["inference"]
            await inference(scope, receive, send)
        else:
            request_id = new_request_id()
            if scope["path"] in POST_ONLY_PATHS and scope["method"] != "POST":
                await send_error(
                    send,
                    MethodNotAllowed(
                        f"{scope['method']} is not allowed on {scope['path']}: send a POST.", headers={"Allow": "POST"}
                    ),
                    request_id,
                    error_dialect(scope["path"]),
                )
                return
            try:
                receive = await self._bounded(scope, receive)
            except PayloadTooLarge as exc:
                await send_error(send, exc, request_id, error_dialect(scope["path"]))
                return
            await self.api(scope, receive, with_common_headers(send, request_id.encode()))

    async def _bounded(self, scope: dict[str, Any], receive: Any) -> Any:
        """Refuse bodies over the limit before FastAPI sees them (413 in the error shape)."""
        too_large = PayloadTooLarge(f"Request body exceeds {self.max_body_bytes} bytes")
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body_bytes:
                raise too_large
            return receive
        if b"transfer-encoding" not in headers:
            return receive
        # A chunked body has no announced size: read it (up to the limit) and replay it.
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                raise too_large
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        replay = [{"type": "http.request", "body": b"".join(parts), "more_body": False}]

        async def replayed() -> dict[str, Any]:
            return replay.pop() if replay else await receive()

        return replayed


def create_api(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        state = AppState(settings)
        app.state.platform = state
        state.spawn("billing", state.billing.run)
        state.spawn("sweeper", state.sweep_holds)
        state.spawn("last-used", state.last_used.run)
        state.spawn("network-status", state.network.run)
        if settings.deposit_watcher:
            state.spawn("deposit-watcher", partial(watch_exclusively, settings, state.sessionmaker, state.http))
        if state.rates is not None:
            state.spawn("ton-usd-rate", state.rates.run)
        tune_garbage_collector()
        try:
            serving = {"platform": state, "inference": InferenceHandler(state)}
            async with McpService(app, serving, settings.max_body_bytes) as mcp:
                yield {**serving, "mcp": mcp}
        finally:
            await state.close()

    # /docs is served by api_docs.py from packaged files (FastAPI's loads Swagger UI from a CDN).
    api = FastAPI(
        title="Cocoon Platform API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    install_handlers(api, error_dialect)
    api.include_router(accounts_router)
    api.include_router(billing_router)
    api.include_router(history_router)
    api.include_router(upstream_router)
    api.include_router(dialects_router)
    api.include_router(system_router)
    api.include_router(dashboard_router)
    api.include_router(ops_router)
    api.include_router(api_docs_router)
    api.include_router(llms_router)
    api.include_router(mcp_router)
    add_inference_paths(api)
    return api


def create_app(settings: Settings | None = None) -> Any:
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_json)
    app: Any = PlatformApp(create_api(settings), settings.max_body_bytes)
    if settings.cors_origin_list:
        app = CORSMiddleware(
            app,
            allow_origins=settings.cors_origin_list,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
        )
    return app
