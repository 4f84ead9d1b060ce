"""Health and other system endpoints."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from cocoon_platform import __version__

router = APIRouter(tags=["System"])


class Health(BaseModel):
    status: str = "ok"
    version: str = __version__
    service: str = "cocoon-platform"


@router.get("/health", response_model=Health, summary="Health check")
async def health() -> Health:
    """Always 200 while the service runs."""
    return Health()
