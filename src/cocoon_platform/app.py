"""The ASGI application: FastAPI for the API surface, a lean handler for metered inference."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cocoon_platform import __version__
from cocoon_platform.accounts.endpoints import router as accounts_router
from cocoon_platform.billing.endpoints import router as billing_router
from cocoon_platform.config import Settings
from cocoon_platform.errors import install_handlers
from cocoon_platform.state import AppState
from cocoon_platform.system import router as system_router

DESCRIPTION = """Paid API proxy for the COCOON decentralized AI network on TON.
OpenAI-compatible chat and text completions with per-token billing, prepaid in TON.

Authenticate with `Authorization: Bearer ck_...` (from `POST /api/register`)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = AppState(settings)
        app.state.platform = state
        state.spawn("last-used", state.last_used.run)
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="Cocoon Platform API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_handlers(app)
    app.include_router(accounts_router)
    app.include_router(billing_router)
    app.include_router(system_router)
    return app
