"""GET /metrics, in Prometheus text format."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response
from sqlalchemy import func, select

from cocoon_platform.accounts.keys import bearer_token
from cocoon_platform.db.models import Deposit, Hold
from cocoon_platform.deps import SessionDep, StateDep
from cocoon_platform.errors import AdminTokenRequired
from cocoon_platform.ops import metrics

router = APIRouter(tags=["System"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, 403: {"description": "Metrics token required"}})
async def prometheus_metrics(
    state: StateDep, session: SessionDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    """Request, latency, token, billing, upstream and deposit metrics. Needs the metrics token when one is set."""
    if state.settings.metrics_token is not None and not state.check_token(
        bearer_token(authorization), state.settings.metrics_token
    ):
        raise AdminTokenRequired("Metrics token required")
    # Database-wide figures are read at scrape time, so every instance reports the same truth.
    metrics.OPEN_RESERVATIONS.set(await session.scalar(select(func.count()).select_from(Hold)) or 0)
    for status, count in (await session.execute(select(Deposit.status, func.count()).group_by(Deposit.status))).all():
        metrics.DEPOSITS.labels(status).set(count)
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
