"""Health, readiness and other system endpoints."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cocoon_platform import __version__
from cocoon_platform.deps import StateDep
from cocoon_platform.ops.readiness import problems

router = APIRouter(tags=["System"])


class Health(BaseModel):
    status: str = "ok"
    version: str = __version__
    service: str = "cocoon-platform"


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    problems: list[str]


@router.get("/health", response_model=Health, summary="Health check")
async def health() -> Health:
    """Always 200 while the service runs."""
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness check",
    responses={503: {"model": Readiness, "description": "Not ready: `problems` lists what is wrong"}},
)
async def ready(state: StateDep) -> Readiness | JSONResponse:
    """200 when this instance can serve; 503 with what is wrong (a background loop down, the
    database or Redis unreachable, the placeholder deposit wallet in use). Load balancers and
    the rolling restart watch this; `/health` only says the process runs."""
    found = await problems(state)
    if found:
        return JSONResponse(Readiness(status="not_ready", problems=found).model_dump(), status_code=503)
    return Readiness(status="ready", problems=[])
