"""GET /metrics, in Prometheus text format."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy import func, select

from cocoon_platform.accounts.keys import bearer_token
from cocoon_platform.db.models import Deposit, Hold
from cocoon_platform.deps import StateDep
from cocoon_platform.errors import AdminTokenRequired, openapi_responses
from cocoon_platform.ops import metrics

router = APIRouter(tags=["System"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, **openapi_responses(AdminTokenRequired("Metrics token required"))},
)
async def prometheus_metrics(
    request: Request, state: StateDep, authorization: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    """Request, latency, token, billing, upstream and deposit metrics. Needs the metrics token when
    one is set; without one, only clients on this host (loopback) may read them."""
    token = state.settings.metrics_token
    if token is not None:
        if not state.check_token(bearer_token(authorization), token):
            raise AdminTokenRequired("Metrics token required")
    else:
        # The resolved client, not the peer: a request relayed by a trusted proxy is judged by
        # the address it forwards, so /metrics through a proxy needs the token.
        client = state.client_addresses.resolve(request.scope)
        if client is None or not client.is_loopback:
            raise AdminTokenRequired("Metrics token required: set COCOON_METRICS_TOKEN to scrape from another host")
    if state.database_gauges.due():
        # Database-wide figures, so every instance reports the same truth; read at most once per
        # DATABASE_GAUGE_SECONDS whatever the scrape rate.
        async with state.sessionmaker() as session:
            metrics.OPEN_RESERVATIONS.set(await session.scalar(select(func.count()).select_from(Hold)) or 0)
            deposits = (await session.execute(select(Deposit.status, func.count()).group_by(Deposit.status))).all()
        for status, count in deposits:
            metrics.DEPOSITS.labels(status).set(count)
    metrics.UPSTREAM_IN_USE.set(state.pool.connections_in_use)  # this process's pool, now
    metrics.UPSTREAM_WAITING.set(state.pool.callers_waiting)
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
