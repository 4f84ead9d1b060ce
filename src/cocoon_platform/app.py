"""The ASGI application: FastAPI for the API surface, a lean handler for metered inference."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from cocoon_platform import __version__
from cocoon_platform.accounts.endpoints import router as accounts_router
from cocoon_platform.billing.endpoints import router as billing_router
from cocoon_platform.config import Settings
from cocoon_platform.errors import install_handlers
from cocoon_platform.proxy.handler import InferenceHandler
from cocoon_platform.proxy.openapi import add_inference_paths
from cocoon_platform.proxy.request import CHAT_PATH, COMPLETIONS_PATH
from cocoon_platform.state import AppState
from cocoon_platform.system import router as system_router
from cocoon_platform.upstream.endpoints import router as upstream_router

DESCRIPTION = """Paid API proxy for the COCOON decentralized AI network on TON.
OpenAI-compatible chat and text completions with per-token billing, prepaid in TON.

Authenticate with `Authorization: Bearer ck_...` (from `POST /api/register`)."""

INFERENCE_PATHS = frozenset((CHAT_PATH, COMPLETIONS_PATH))


class PlatformApp:
    """Sends POSTs to the inference paths straight to the lean handler, the rest to FastAPI."""

    def __init__(self, api: FastAPI, inference: InferenceHandler) -> None:
        self.api = api
        self.inference = inference

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in INFERENCE_PATHS:
            await self.inference(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def create_api(settings: Settings, inference: InferenceHandler) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState(settings)
        app.state.platform = state
        inference.bind(state)
        state.spawn("billing", state.billing.run)
        state.spawn("sweeper", state.sweep_holds)
        state.spawn("last-used", state.last_used.run)
        state.spawn("network-status", state.network.run)
        try:
            yield
        finally:
            await state.close()

    api = FastAPI(title="Cocoon Platform API", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    install_handlers(api)
    api.include_router(accounts_router)
    api.include_router(billing_router)
    api.include_router(upstream_router)
    api.include_router(system_router)
    add_inference_paths(api)
    return api


def create_app(settings: Settings | None = None) -> Any:
    settings = settings or Settings()
    inference = InferenceHandler()
    app: Any = PlatformApp(create_api(settings, inference), inference)
    if settings.cors_origin_list:
        app = CORSMiddleware(app, allow_origins=settings.cors_origin_list, allow_methods=["*"],
                             allow_headers=["*"], expose_headers=["X-Request-Id"])
    return app
