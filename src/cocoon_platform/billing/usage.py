"""Reading an account's usage history: its requests, and totals per day and model."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.db.models import UsageRecord

DAY_MS = 86_400_000


async def recent_requests(
    session: AsyncSession,
    account_id: int,
    limit: int,
    before_id: int | None,
    *,
    key_id: int | None = None,
    model: str | None = None,
) -> list[UsageRecord]:
    """Newest first; `before_id` continues from the previous page; `key_id` and `model` narrow it."""
    query = select(UsageRecord).where(UsageRecord.account_id == account_id, *_narrowed(key_id, model))
    if before_id is not None:
        query = query.where(UsageRecord.id < before_id)
    result = await session.scalars(query.order_by(UsageRecord.id.desc()).limit(limit))
    return list(result)


def _narrowed(key_id: int | None, model: str | None) -> list[ColumnElement[bool]]:
    conditions = []
    if key_id is not None:
        conditions.append(UsageRecord.key_id == key_id)
    if model is not None:
        conditions.append(UsageRecord.model == model)
    return conditions


async def daily_totals(
    session: AsyncSession,
    account_id: int,
    start: date,
    end: date,
    *,
    key_id: int | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Totals per UTC day and model for start <= day <= end; `key_id` and `model` narrow them."""
    epoch = date(1970, 1, 1)
    first_ms = (start - epoch).days * DAY_MS
    after_ms = (end - epoch).days * DAY_MS + DAY_MS
    day = (UsageRecord.created_at // DAY_MS).label("day")
    rows = await session.execute(
        select(
            day,
            UsageRecord.model,
            func.count().label("requests"),
            func.sum(UsageRecord.prompt_tokens).label("prompt_tokens"),
            func.sum(UsageRecord.cached_tokens).label("cached_tokens"),
            func.sum(UsageRecord.completion_tokens).label("completion_tokens"),
            func.sum(UsageRecord.reasoning_tokens).label("reasoning_tokens"),
            func.sum(UsageRecord.cost_nanoton).label("cost_nanoton"),
        )
        .where(
            UsageRecord.account_id == account_id,
            UsageRecord.created_at >= first_ms,
            UsageRecord.created_at < after_ms,
            *_narrowed(key_id, model),
        )
        .group_by(day, UsageRecord.model)
        .order_by(day, UsageRecord.model)
    )
    return [
        {
            "date": (epoch + timedelta(days=int(row.day))).isoformat(),
            "model": row.model,
            "requests": int(row.requests),
            "prompt_tokens": int(row.prompt_tokens or 0),
            "cached_tokens": int(row.cached_tokens or 0),
            "completion_tokens": int(row.completion_tokens or 0),
            "reasoning_tokens": int(row.reasoning_tokens or 0),
            "cost_nanoton": int(row.cost_nanoton or 0),
        }
        for row in rows
    ]
