"""Balance, deposit instructions and pricing."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Response

from cocoon_platform.accounts.service import low_balance
from cocoon_platform.billing.prices import COEFFICIENT_ONE, MULTIPLIER_ONE, NetworkPrices
from cocoon_platform.billing.schemas import (
    BalanceResponse,
    DailyTotal,
    DepositResponse,
    PricingResponse,
    Rates,
    TokenRate,
    UsageItem,
    UsageResponse,
)
from cocoon_platform.billing.usage import daily_totals, recent_requests
from cocoon_platform.config import NANOTON_PER_TON, format_ton
from cocoon_platform.db.models import Account
from cocoon_platform.deps import BIGINT_MAX, CurrentKey, SessionDep, StateDep
from cocoon_platform.errors import InvalidApiKey, InvalidRequest, openapi_responses

router = APIRouter(tags=["Billing"])


@router.get(
    "/v1/balance",
    response_model=BalanceResponse,
    summary="Check account balance",
    responses=openapi_responses(InvalidApiKey()),
)
async def balance(identity: CurrentKey, state: StateDep, session: SessionDep) -> BalanceResponse:
    """Returns the current TON balance of the key's account."""
    account = await session.get(Account, identity.account_id)
    if account is None:
        raise InvalidApiKey()
    rate = state.ton_usd_rate()
    balance_ton = float(format_ton(account.balance_nanoton, 9))
    return BalanceResponse(
        balance_ton=balance_ton,
        balance_nanoton=account.balance_nanoton,
        balance_usd=round(balance_ton * rate, 4) if rate is not None else None,
        ton_usd_rate=rate,
        reserved_nanoton=account.reserved_nanoton,
        low_balance=low_balance(account),
        low_balance_threshold_nanoton=account.low_balance_nanoton,
    )


def payment_link(wallet: str, memo: str) -> str:
    """A TON transfer deep link; wallets pre-fill the comment from `text=`."""
    return f"ton://transfer/{wallet}?text={quote(memo)}"


@router.get(
    "/v1/deposit",
    response_model=DepositResponse,
    summary="Get deposit instructions",
    responses=openapi_responses(InvalidApiKey()),
)
async def deposit(identity: CurrentKey, state: StateDep, session: SessionDep) -> DepositResponse:
    """The wallet and your memo code: send TON there with the code as the comment."""
    account = await session.get(Account, identity.account_id)
    if account is None:
        raise InvalidApiKey()
    wallet = state.settings.deposit_wallet
    memo = account.deposit_code
    return DepositResponse(
        wallet=wallet,
        memo=memo,
        instructions=(
            f"Send TON to {wallet} with the comment/memo: {memo}. "
            "Your balance will be credited automatically within ~30 seconds."
        ),
        payment_link=payment_link(wallet, memo),
    )


def _rate(prices: NetworkPrices, multiplier: int, markup: Fraction, coefficient: int) -> TokenRate:
    effective = Fraction(prices.price_per_token * multiplier * coefficient, MULTIPLIER_ONE * COEFFICIENT_ONE) * markup
    return TokenRate(
        base_nanoton=prices.price_per_token,
        multiplier=multiplier / MULTIPLIER_ONE,
        effective_nanoton=-(-effective.numerator // effective.denominator),
    )


@router.get("/v1/pricing", response_model=PricingResponse, summary="Get pricing information")
async def pricing(state: StateDep) -> PricingResponse:
    """Per-token rates for every token type (the network's live prices times the markup)."""
    prices = state.prices
    markup = state.pricer.markup
    coefficient = state.pricer.coefficient
    settings = state.settings
    return PricingResponse(
        markup_multiplier=float(settings.markup_multiplier),
        rates=Rates(
            prompt_token=_rate(prices, prices.prompt_multiplier, markup, coefficient),
            completion_token=_rate(prices, prices.completion_multiplier, markup, coefficient),
            reasoning_token=_rate(prices, prices.reasoning_multiplier, markup, coefficient),
            cached_prompt_token=_rate(prices, prices.cached_multiplier, markup, coefficient),
        ),
        minimum_balance_ton=settings.min_balance_nanoton / NANOTON_PER_TON,
        maximum_overdraft_ton=settings.max_overdraft_nanoton / NANOTON_PER_TON,
        payment_method=f"TON transfer to {settings.deposit_wallet} with your deposit code as the comment",
        price_source=prices.source,
        prices_updated_at=prices.fetched_at,
    )


# Most requests in one answer: a JSON page, or a CSV export.
USAGE_PAGE_MAX = 200
USAGE_CSV_MAX = 10_000


@router.get(
    "/v1/usage",
    response_model=UsageResponse,
    summary="Usage history",
    responses={
        **openapi_responses(InvalidApiKey()),
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "With format=csv: the requests as CSV, one row each, with a header",
        },
    },
)
async def usage_history(
    identity: CurrentKey,
    session: SessionDep,
    limit: Annotated[
        int, Query(ge=1, le=USAGE_CSV_MAX, description=f"At most {USAGE_PAGE_MAX} (CSV: {USAGE_CSV_MAX}).")
    ] = 50,
    before: Annotated[
        int | None, Query(ge=0, le=BIGINT_MAX, description="Continue before this position (from next_before).")
    ] = None,
    start: Annotated[date | None, Query(description="First UTC day of the totals (default: 30 days ago).")] = None,
    end: Annotated[date | None, Query(description="Last UTC day of the totals (default: today).")] = None,
    key_id: Annotated[int | None, Query(ge=1, le=BIGINT_MAX, description="Only this key's requests.")] = None,
    model: Annotated[str | None, Query(max_length=200, description="Only this model's requests.")] = None,
    format: Annotated[Literal["json", "csv"], Query(description="csv: the requests as a CSV file.")] = "json",
) -> UsageResponse | Response:
    """Your requests newest first, with tokens by type and cost; and totals per day and model.
    `key_id` and `model` narrow both; `format=csv` exports the requests (the page's next
    position is in the `X-Next-Before` header)."""
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=30)
    if start > end:
        raise InvalidRequest("start must not be after end", param="start")
    if (end - start).days > 366:
        raise InvalidRequest("the totals range is limited to 366 days", param="start")
    if format == "json" and limit > USAGE_PAGE_MAX:
        raise InvalidRequest(f"limit is at most {USAGE_PAGE_MAX} (or {USAGE_CSV_MAX} with format=csv)", param="limit")
    records = await recent_requests(session, identity.account_id, limit + 1, before, key_id=key_id, model=model)
    page = records[:limit]
    next_before = page[-1].id if len(records) > limit else None
    items = [
        UsageItem(
            request_id=r.request_id,
            created_at=datetime.fromtimestamp(r.created_at / 1000, UTC),
            model=r.model,
            endpoint=r.endpoint,
            prompt_tokens=r.prompt_tokens,
            cached_tokens=r.cached_tokens,
            completion_tokens=r.completion_tokens,
            reasoning_tokens=r.reasoning_tokens,
            total_tokens=r.prompt_tokens + r.completion_tokens,
            cost_nanoton=r.cost_nanoton,
            cost_ton=r.cost_nanoton / NANOTON_PER_TON,
            status=r.status,
            estimated=r.estimated,
            duration_ms=r.duration_ms,
            key_id=r.key_id,
            capped_nanoton=r.capped_nanoton or 0,
        )
        for r in page
    ]
    if format == "csv":
        return _usage_csv(items, next_before)
    return UsageResponse(
        data=items,
        has_more=next_before is not None,
        next_before=next_before,
        totals=[
            DailyTotal(**row, cost_ton=int(row["cost_nanoton"]) / NANOTON_PER_TON)
            for row in await daily_totals(session, identity.account_id, start, end, key_id=key_id, model=model)
        ],
        start=start,
        end=end,
    )


def _usage_csv(items: list[UsageItem], next_before: int | None) -> Response:
    out = io.StringIO()
    columns = list(UsageItem.model_fields)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for item in items:
        row = item.model_dump(mode="json")
        writer.writerow([_csv_cell(row[column]) for column in columns])
    headers = {"Content-Disposition": 'attachment; filename="usage.csv"'}
    if next_before is not None:
        headers["X-Next-Before"] = str(next_before)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def _csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: a model name starting with =, +, - or @ is not run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value
