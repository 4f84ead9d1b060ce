"""Why a key refused a request: the message says what to change (see accounts/limits.py).

Only a refused reservation reads these (off the hot path): the reservation itself checks
everything in one statement and says only yes or no.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cocoon_platform.accounts.limits import model_needle, next_reset, read_models
from cocoon_platform.billing.store.records import AccountFunds
from cocoon_platform.config import format_ton
from cocoon_platform.errors import KeyExpired, KeyLimitReached, ModelNotAllowed, PlatformError


def key_expired(key_id: int, expires_at: int) -> KeyExpired:
    expired = datetime.fromtimestamp(expires_at, UTC).isoformat()
    return KeyExpired(
        f"This API key expired at {expired}. Use another key, or set a later expires_at "
        f"(PATCH /v1/keys/{key_id} with an unrestricted key)."
    )


def key_refusal(funds: AccountFunds, model: str, now: float) -> PlatformError | None:
    """Why a key refuses a request whatever its cost (expired, or the model not allowed), if it does."""
    if funds.expires_at is not None and funds.expires_at <= now:
        return key_expired(funds.key_id, funds.expires_at)
    if funds.models is not None and model_needle(model) not in funds.models:
        allowed = ", ".join(read_models(funds.models) or []) or "none"
        return ModelNotAllowed(
            f"This API key may not use the model '{model[:200]}'; it may use: {allowed}. "
            "Pick one of those, or add the model to the key's models "
            f"(PATCH /v1/keys/{funds.key_id} with an unrestricted key).",
            param="model",
        )
    return None


def limit_refusal(funds: AccountFunds, amount: int, largest_max_tokens: int, now: float) -> KeyLimitReached | None:
    """The refusal of a request whose worst case (`amount`) would take the key past its credit limit."""
    if funds.credit_limit is None:
        return None
    left = funds.credit_limit - funds.limit_spent - funds.limit_reserved
    if amount <= left:
        return None
    reset = next_reset(funds.limit_reset, now)
    period = f"per {funds.limit_reset.removesuffix('ly').replace('dai', 'day')}" if funds.limit_reset else "in total"
    fits = f"lower max_tokens (the largest that fits is {largest_max_tokens}), " if largest_max_tokens > 0 else ""
    when = f"wait for the limit to reset at {reset.isoformat()}, " if reset else ""

    def ton(nanoton: int) -> str:
        return format_ton(nanoton, 9, trim=True)

    return KeyLimitReached(
        f"This API key's credit limit is reached: the request needs up to {ton(amount)} TON but the key's limit of "
        f"{ton(funds.credit_limit)} TON {period} has {ton(max(left, 0))} TON left ({ton(funds.limit_spent)} TON "
        f"spent, {ton(funds.limit_reserved)} TON held by requests in flight). To go on: {fits}{when}"
        f"raise the key's credit_limit_ton (PATCH /v1/keys/{funds.key_id} with an unrestricted key), "
        "or use another key."
    )
