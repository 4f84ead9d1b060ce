"""The user's own money, read back: their account's funds and low-balance threshold, their
deposits, and one request's record by its id.

Rules:
- Only the caller's account is ever read: another account's deposit or request is 404, the
  same answer as one that does not exist.
- Deposits are listed newest first: transfers seen but not final yet (`pending`, for at most
  PENDING_VISIBLE_SECONDS; the watcher forgets them once final) before credited ones, which
  page by `before` (the `next_before` of the previous page).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from cocoon_platform.accounts.service import low_balance
from cocoon_platform.billing.schemas import CAPPED_DESCRIPTION
from cocoon_platform.config import NANOTON_PER_TON, Settings, format_ton, ton_to_nanoton
from cocoon_platform.db.models import Account, Deposit, PendingDeposit, UsageRecord, utcnow
from cocoon_platform.deps import BIGINT_MAX, AccountManager, CurrentKey, SessionDep, StateDep
from cocoon_platform.errors import AccountManagementNotAllowed, InvalidApiKey, NotFound, openapi_responses
from cocoon_platform.state import AppState
from cocoon_platform.ton.deposits import DepositStatus

router = APIRouter(tags=["Billing"])

# A transfer that stays unfinal this long is no longer shown (it may never be final).
PENDING_VISIBLE_SECONDS = 3600


class DepositItem(BaseModel):
    tx_hash: str = Field(description="The transaction's hash (hex).")
    amount_nanoton: int
    amount_ton: float
    status: Literal["credited", "pending"] = Field(
        description="'credited' once in your balance; 'pending' while the transfer is seen but not final."
    )
    created_at: datetime = Field(description="When the transfer was made (pending: when it was first seen).")
    credited_at: datetime | None
    explorer_url: str = Field(description="The transaction in a TON explorer.")


class DepositList(BaseModel):
    data: list[DepositItem] = Field(description="Pending transfers first, then credited deposits, newest first.")
    has_more: bool
    next_before: int | None = Field(description="Pass as `before` to get the next page.")


class GenerationResponse(BaseModel):
    id: str = Field(description="The request's id, as in its answer.")
    model: str
    endpoint: str
    status: str = Field(description="ok, client_disconnected, upstream_cut, upstream_error or aborted.")
    http_status: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    total_tokens: int
    cost_nanoton: int
    cost_ton: float
    estimated: bool = Field(
        description="True when token counts were estimated, all or in part (the upstream never reported them, "
        "or not for every attempt of a retried request)."
    )
    duration_ms: int
    created_at: datetime
    key_id: int = Field(description="The key the request was made with (see GET /v1/keys).")
    capped_nanoton: int = Field(default=0, description=CAPPED_DESCRIPTION)


def explorer_url(settings: Settings, tx_hash: str) -> str:
    return settings.ton_explorer_tx_url.replace("{tx_hash}", tx_hash)


@router.get(
    "/v1/deposits", response_model=DepositList, summary="Your deposits", responses=openapi_responses(InvalidApiKey())
)
async def deposits(
    identity: CurrentKey,
    state: StateDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX, description="From next_before.")] = None,
) -> DepositList:
    """Your TON deposits, newest first: pending transfers (seen, not final yet), then credited ones."""
    settings = state.settings
    items: list[DepositItem] = []
    if before is None:
        seen_after = utcnow() - timedelta(seconds=PENDING_VISIBLE_SECONDS)
        pending = await session.scalars(
            select(PendingDeposit)
            .where(PendingDeposit.account_id == identity.account_id, PendingDeposit.seen_at >= seen_after)
            .order_by(PendingDeposit.seen_at.desc())
        )
        items += [
            DepositItem(
                tx_hash=p.tx_hash,
                amount_nanoton=p.amount_nanoton,
                amount_ton=p.amount_nanoton / NANOTON_PER_TON,
                status="pending",
                created_at=p.seen_at,
                credited_at=None,
                explorer_url=explorer_url(settings, p.tx_hash),
            )
            for p in pending
        ]
    query = select(Deposit).where(
        Deposit.account_id == identity.account_id, Deposit.status == DepositStatus.CREDITED.value
    )
    if before is not None:
        query = query.where(Deposit.id < before)
    credited = list(await session.scalars(query.order_by(Deposit.id.desc()).limit(limit + 1)))
    page = credited[:limit]
    items += [
        DepositItem(
            tx_hash=d.tx_hash,
            amount_nanoton=d.amount_nanoton,
            amount_ton=d.amount_nanoton / NANOTON_PER_TON,
            status="credited",
            created_at=datetime.fromtimestamp(d.utime, UTC),
            credited_at=d.credited_at,
            explorer_url=explorer_url(settings, d.tx_hash),
        )
        for d in page
    ]
    more = len(credited) > limit
    return DepositList(data=items, has_more=more, next_before=page[-1].id if more else None)


@router.get(
    "/v1/generation",
    response_model=GenerationResponse,
    summary="One request's record",
    responses=openapi_responses(InvalidApiKey(), NotFound("No such request on this account")),
)
async def generation(
    identity: CurrentKey,
    session: SessionDep,
    id: Annotated[str, Query(min_length=1, max_length=200, description="The `id` of the request's answer.")],
) -> GenerationResponse:
    """A request's tokens by kind, cost, model, status and duration, by the id in its answer."""
    record = await session.scalar(
        select(UsageRecord).where(UsageRecord.request_id == id, UsageRecord.account_id == identity.account_id)
    )
    if record is None:
        raise NotFound(f"No request {id[:80]!r} on this account (ids are kept once the request has ended)")
    return GenerationResponse(
        id=record.request_id,
        model=record.model,
        endpoint=record.endpoint,
        status=record.status,
        http_status=record.http_status,
        prompt_tokens=record.prompt_tokens,
        cached_tokens=record.cached_tokens,
        completion_tokens=record.completion_tokens,
        reasoning_tokens=record.reasoning_tokens,
        total_tokens=record.prompt_tokens + record.completion_tokens,
        cost_nanoton=record.cost_nanoton,
        cost_ton=record.cost_nanoton / NANOTON_PER_TON,
        estimated=record.estimated,
        duration_ms=record.duration_ms,
        created_at=datetime.fromtimestamp(record.created_at / 1000, UTC),
        key_id=record.key_id,
        capped_nanoton=record.capped_nanoton or 0,
    )


class AccountSettings(BaseModel):
    low_balance_threshold_ton: Decimal | None = Field(
        ge=0,
        le=1_000_000_000,
        description="Below this balance, /v1/balance says low_balance: true and the dashboard warns; null: never.",
    )

    @field_validator("low_balance_threshold_ton")
    @classmethod
    def _exact_nanoton(cls, value: Decimal | None) -> Decimal | None:
        if value is not None:
            ton_to_nanoton(value)
        return value


class AccountResponse(BaseModel):
    deposit_code: str
    created_at: datetime
    balance_ton: float
    balance_nanoton: int
    reserved_nanoton: int = Field(description="Held for requests in flight.")
    credited_nanoton: int = Field(description="Lifetime credits: every deposit and operator credit.")
    overdraft_available: bool = Field(
        description="Whether open requests may take the balance below zero (only "
        "once lifetime credits reach the platform's minimum)."
    )
    low_balance_threshold_ton: float | None
    low_balance_threshold_nanoton: int | None
    low_balance: bool


def _ton_float(nanoton: int) -> float:
    return float(format_ton(nanoton, 9))


def _account_response(state: AppState, account: Account) -> AccountResponse:
    threshold = account.low_balance_nanoton
    return AccountResponse(
        deposit_code=account.deposit_code,
        created_at=account.created_at,
        balance_ton=_ton_float(account.balance_nanoton),
        balance_nanoton=account.balance_nanoton,
        reserved_nanoton=account.reserved_nanoton,
        credited_nanoton=account.credited_nanoton,
        overdraft_available=(
            state.settings.max_overdraft_nanoton > 0
            and account.credited_nanoton >= state.settings.overdraft_min_credits_nanoton
        ),
        low_balance_threshold_ton=None if threshold is None else _ton_float(threshold),
        low_balance_threshold_nanoton=threshold,
        low_balance=low_balance(account),
    )


@router.get(
    "/api/account",
    response_model=AccountResponse,
    tags=["Billing"],
    summary="Your account",
    responses=openapi_responses(InvalidApiKey()),
)
async def get_account(identity: CurrentKey, state: StateDep, session: SessionDep) -> AccountResponse:
    """Your account's funds, lifetime credits, whether the overdraft is open to it, and its settings."""
    account = await session.get(Account, identity.account_id)
    assert account is not None
    return _account_response(state, account)


@router.patch(
    "/api/account",
    response_model=AccountResponse,
    tags=["Billing"],
    summary="Change your account's settings",
    responses=openapi_responses(InvalidApiKey(), AccountManagementNotAllowed()),
)
async def change_account(
    body: AccountSettings, identity: AccountManager, state: StateDep, session: SessionDep
) -> AccountResponse:
    """Set (or, with null, remove) the low-balance threshold that /v1/balance and the dashboard warn below.
    Only with an unrestricted key: a key with a credit limit, a model allow-list or an expiry gets
    403 `account_management_not_allowed`."""
    account = await session.get(Account, identity.account_id)
    assert account is not None
    if "low_balance_threshold_ton" in body.model_fields_set:
        threshold = body.low_balance_threshold_ton
        account.low_balance_nanoton = None if threshold is None else ton_to_nanoton(threshold)
    await session.flush()
    await session.refresh(account)
    return _account_response(state, account)
