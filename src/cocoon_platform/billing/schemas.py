"""Response bodies of the billing endpoints, with the spec's field names."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

# The usage record's uncharged rest, as /v1/usage and /v1/generation describe it (docs/money.md: Cap).
CAPPED_DESCRIPTION = (
    "What the request cost beyond what was charged, in nanoton: the network reported more than the "
    "request's worst case and charging it all would have taken the balance below what the account "
    "allows (0, or the overdraft) or the key past its credit limit; that rest is never charged. "
    "0 when the whole cost was charged."
)


class BalanceResponse(BaseModel):
    balance_ton: float = Field(description="Balance in TON (1 TON = 1e9 nanoton).")
    balance_nanoton: int = Field(description="Balance in nanotons (smallest unit).")
    balance_usd: float | None = Field(description="Balance in USD (based on current TON/USD rate).")
    ton_usd_rate: float | None = Field(description="Current TON/USD exchange rate used for conversion.")
    reserved_nanoton: int = Field(description="Held for requests in flight; released when they settle.")
    low_balance: bool = Field(
        default=False, description="Whether the balance is below your low-balance threshold (PATCH /api/account)."
    )
    low_balance_threshold_nanoton: int | None = Field(default=None, description="Your low-balance threshold, if set.")


class DepositResponse(BaseModel):
    wallet: str = Field(description="TON wallet address to send funds to.")
    memo: str = Field(description="Unique memo/comment to include with your TON transfer.")
    instructions: str = Field(description="Human-readable deposit instructions.")
    payment_link: str = Field(description="A ton://transfer link with the memo, which wallets open directly.")


class TokenRate(BaseModel):
    base_nanoton: int = Field(description="Base price per token in nanoton before multiplier.")
    multiplier: float = Field(description="Token type multiplier.")
    effective_nanoton: int = Field(
        description="Final price per token in nanoton (base * multiplier * markup), rounded up."
    )


class Rates(BaseModel):
    prompt_token: TokenRate
    completion_token: TokenRate
    reasoning_token: TokenRate
    cached_prompt_token: TokenRate


class PricingResponse(BaseModel):
    currency: str = "TON"
    unit: str = "nanoton"
    nanoton_per_ton: int = 1_000_000_000
    markup_multiplier: float
    rates: Rates
    minimum_balance_ton: float
    maximum_overdraft_ton: float
    payment_method: str
    price_source: str = Field(description="'live' when read from the COCOON client, 'default' otherwise.")
    prices_updated_at: float = Field(description="Unix time the prices in force were read.")


class UsageItem(BaseModel):
    request_id: str
    created_at: datetime
    model: str
    endpoint: str = Field(description="'chat', 'completions', 'responses' or 'messages'.")
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_nanoton: int
    cost_ton: float
    status: str = Field(
        description="ok, client_disconnected, upstream_cut, upstream_error, aborted or orphaned "
        "(the platform failed mid-request; not billed)."
    )
    estimated: bool = Field(
        description="True when token counts were estimated, all or in part (the upstream never reported them, "
        "or not for every attempt of a retried request)."
    )
    duration_ms: int
    key_id: int | None = Field(default=None, description="The key the request was made with.")
    capped_nanoton: int = Field(default=0, description=CAPPED_DESCRIPTION)


class DailyTotal(BaseModel):
    date: date
    model: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cost_nanoton: int
    cost_ton: float


class UsageResponse(BaseModel):
    data: list[UsageItem] = Field(description="Requests, newest first.")
    has_more: bool
    next_before: int | None = Field(description="Pass as `before` to get the next page.")
    totals: list[DailyTotal] = Field(description="Totals per UTC day and model over start..end.")
    start: date
    end: date
