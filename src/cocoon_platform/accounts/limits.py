"""What a key may do: a credit limit per period, a model allow-list, an expiry.

Rules:
- A limit counts the key's charges in its current period (UTC: a day from midnight, a week
  from Monday, a month from the 1st; or never reset) plus what its requests in flight hold,
  those already in flight when the limit is set included (billing/key_limits.py); a request is
  refused when its worst case would take that past the limit. The check rides the reservation
  (billing/store), so it holds under concurrency exactly as the balance does, and a settlement
  never takes the key past it (billing/store/records.py, cap_charges).
- A key with any restriction cannot create, change or delete keys (ruling 5 of #23), or a
  capped key could mint an uncapped one.
- The allow-list is stored as "\\n<id>\\n<id>\\n" and a model is allowed when "\\n<model>\\n" occurs
  in it: one substring search, the same in SQLite and PostgreSQL. Model ids never hold a newline
  (a request's model that does can match nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache

DAY_SECONDS = 86_400
# Matches no allow-list: stands in for a model id that holds a newline.
NO_MODEL = "\n\n"


class LimitReset(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@lru_cache(maxsize=4)
def _starts_of_day(day: int) -> tuple[int, int, int]:
    midnight = datetime.fromtimestamp(day * DAY_SECONDS, UTC)
    week = midnight - timedelta(days=midnight.weekday())
    month = midnight.replace(day=1)
    return day * DAY_SECONDS, int(week.timestamp()), int(month.timestamp())


def period_starts(now: float) -> tuple[int, int, int]:
    """Unix seconds at which the current day, week and month began (UTC)."""
    return _starts_of_day(int(now) // DAY_SECONDS)


def period_start(reset: str | None, now: float) -> int:
    """Where the current period of a limit that resets so began; 0 for a limit that never resets."""
    if reset is None:
        return 0
    day, week, month = period_starts(now)
    return {LimitReset.DAILY: day, LimitReset.WEEKLY: week, LimitReset.MONTHLY: month}[LimitReset(reset)]


def model_needle(model: str) -> str:
    """What the reservation looks for in a key's stored allow-list."""
    return NO_MODEL if "\n" in model else f"\n{model}\n"


def store_models(models: list[str] | None) -> str | None:
    """An allow-list as stored; None allows every model."""
    return None if models is None else "\n" + "".join(f"{m}\n" for m in models)


def read_models(stored: str | None) -> list[str] | None:
    return None if stored is None else [m for m in stored.split("\n") if m]


def is_restricted(credit_limit: int | None, models: str | None, expires_at: int | None) -> bool:
    """A key with any restriction may not manage keys."""
    return credit_limit is not None or models is not None or expires_at is not None


def next_reset(reset: str | None, now: float) -> datetime | None:
    """When a limit that resets so next starts a period (UTC); None for one that never resets."""
    if reset is None:
        return None
    start = datetime.fromtimestamp(period_start(reset, now), UTC)
    if reset == LimitReset.DAILY:
        return start + timedelta(days=1)
    if reset == LimitReset.WEEKLY:
        return start + timedelta(weeks=1)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
