"""Registration, login and keys."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Request, status
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.accounts import service
from cocoon_platform.accounts.keys import bearer_token, hash_api_key
from cocoon_platform.accounts.limits import is_restricted, next_reset, read_models
from cocoon_platform.accounts.refusals import key_expired
from cocoon_platform.accounts.schemas import (
    KeyInfo,
    KeyList,
    KeySettingsFields,
    KeyUpdate,
    LoginRequest,
    LoginResponse,
    NewKeyRequest,
    NewKeyResponse,
    RegisterResponse,
)
from cocoon_platform.config import format_ton
from cocoon_platform.db.models import Account, ApiKey
from cocoon_platform.deps import (
    BIGINT_MAX,
    AddressLimited,
    CurrentKey,
    KeyManager,
    SessionDep,
    StateDep,
    authenticate,
    authentication_failed,
    refuse_throttled,
)
from cocoon_platform.errors import (
    AdminTokenRequired,
    InvalidApiKey,
    InvalidRequest,
    KeyManagementNotAllowed,
    NotFound,
    openapi_responses,
)
from cocoon_platform.state import AppState

router = APIRouter()

KeyIdPath = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="The key's id (from GET /v1/keys).")]


def _ton(nanoton: int) -> float:
    return float(format_ton(nanoton, 9))


@router.post(
    "/api/register",
    response_model=RegisterResponse,
    tags=["Authentication"],
    summary="Register a new user",
    dependencies=[AddressLimited],
)
async def register(state: StateDep, session: SessionDep) -> RegisterResponse:
    """Creates a new account and returns its API key (shown only once), deposit code and wallet."""
    issued = await service.register(session)
    return RegisterResponse(
        api_key=issued.api_key,
        deposit_code=issued.account.deposit_code,
        balance_ton=_ton(issued.account.balance_nanoton),
        created_at=issued.account.created_at,
        deposit_wallet=state.settings.deposit_wallet,
    )


def _settings(state: AppState, body: KeySettingsFields | None) -> tuple[str | None, dict[str, Any]]:
    """The name and restriction columns a request sets; allow-listed aliases become the network's ids."""
    if body is None:
        return None, {}
    if body.models is not None:
        body.models = list(dict.fromkeys(state.network.canonical(m) for m in body.models))
    if body.expires_at is not None and body.expires_at.timestamp() <= time.time():
        raise InvalidRequest(
            "expires_at must be in the future (ISO 8601, e.g. 2030-01-31T00:00:00Z)", param="expires_at"
        )
    changes = body.changes()
    return changes.pop("name", None), changes


async def _key_info(session: AsyncSession, key: ApiKey, now: float) -> KeyInfo:
    return _key_view(key, (await service.keys_spending(session, [key], now))[key.id], now)


def _key_view(key: ApiKey, spending: service.KeySpending, now: float) -> KeyInfo:
    reset = next_reset(key.limit_reset, now)
    return KeyInfo(
        id=key.id,
        prefix=key.prefix,
        name=key.name,
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        credit_limit_ton=None if key.credit_limit_nanoton is None else _ton(key.credit_limit_nanoton),
        credit_limit_nanoton=key.credit_limit_nanoton,
        limit_reset=key.limit_reset,  # type: ignore[arg-type]  # validated into LimitReset
        models=read_models(key.models),
        expires_at=None if key.expires_at is None else datetime.fromtimestamp(key.expires_at, UTC),
        expired=key.expires_at is not None and key.expires_at <= now,
        restricted=is_restricted(key.credit_limit_nanoton, key.models, key.expires_at),
        spent_nanoton=spending.spent_nanoton,
        spent_ton=_ton(spending.spent_nanoton),
        held_nanoton=spending.held_nanoton,
        period_start=datetime.fromtimestamp(spending.period_start, UTC) if reset else None,
        resets_at=reset,
    )


@router.post(
    "/v1/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=NewKeyResponse,
    tags=["Authentication"],
    summary="Create a new API key",
    responses=openapi_responses(InvalidApiKey(), AdminTokenRequired(), KeyManagementNotAllowed()),
    dependencies=[AddressLimited],
)
async def create_key(
    request: Request,
    state: StateDep,
    session: SessionDep,
    body: Annotated[NewKeyRequest | None, Body()] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> NewKeyResponse:
    """With the admin token (or with none configured): a new account and key.
    With a user's unrestricted `ck_` key: a further key on that user's account. Either may carry a
    name, a credit limit per period, a model allow-list and an expiry; a key with any of those
    cannot itself manage keys (403 key_management_not_allowed)."""
    token = bearer_token(authorization)
    if token is not None and token.startswith("ck_"):
        identity = await authenticate(state, request, session, authorization)
        if identity.restricted:
            raise KeyManagementNotAllowed()
        name, settings = _settings(state, body)
        plaintext, key_id = await service.add_key(session, identity.account_id, name, service.KeySettings(**settings))
        await session.flush()
        account = await session.get(Account, identity.account_id)
    else:
        if state.settings.admin_token is not None and not state.check_admin_token(token):
            raise AdminTokenRequired()
        name, settings = _settings(state, body)
        issued = await service.register(session, name, service.KeySettings(**settings))
        account, plaintext, key_id = issued.account, issued.api_key, issued.key_id
    assert account is not None
    key = await service.live_key(session, account.id, key_id)
    assert key is not None
    return NewKeyResponse(
        api_key=plaintext,
        deposit_code=account.deposit_code,
        balance_ton=_ton(account.balance_nanoton),
        created_at=account.created_at,
        key=await _key_info(session, key, time.time()),
    )


@router.get(
    "/v1/keys",
    response_model=KeyList,
    tags=["Authentication"],
    summary="List your API keys",
    responses=openapi_responses(InvalidApiKey()),
)
async def list_keys(identity: CurrentKey, session: SessionDep) -> KeyList:
    """The account's live keys: prefix, name, creation and last use, restrictions, and what each
    spent in its limit's current period; never the key itself."""
    now = time.time()
    keys = await service.list_keys(session, identity.account_id)
    spending = await service.keys_spending(session, keys, now)
    return KeyList(data=[_key_view(k, spending[k.id], now) for k in keys], current_key_id=identity.key_id)


@router.patch(
    "/v1/keys/{key_id}",
    response_model=KeyInfo,
    tags=["Authentication"],
    summary="Change an API key",
    responses=openapi_responses(InvalidApiKey(), KeyManagementNotAllowed(), NotFound("No such key")),
)
async def change_key(
    key_id: KeyIdPath, body: KeyUpdate, identity: KeyManager, state: StateDep, session: SessionDep
) -> KeyInfo:
    """Change one of your keys' name, credit limit, reset period, allow-list or expiry: only the
    fields sent change, and null removes a restriction. A new limit counts what the key already
    spent in the period and what its requests in flight hold (their charges count when they end)."""
    key = await service.live_key(session, identity.account_id, key_id)
    if key is None:
        raise NotFound(f"No key {key_id} on this account")
    name, changes = _settings(state, body)
    if "name" in body.model_fields_set:
        changes["name"] = name
    key = await service.change_key(session, key, changes)
    await session.flush()
    return await _key_info(session, key, time.time())


@router.delete(
    "/v1/keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["Authentication"],
    summary="Revoke an API key",
    responses=openapi_responses(InvalidApiKey(), KeyManagementNotAllowed(), NotFound("No such key")),
)
async def revoke_key(key_id: KeyIdPath, identity: KeyManager, session: SessionDep) -> None:
    """Revoke one of your keys; it is refused at once, on every instance."""
    if not await service.revoke_key(session, identity.account_id, key_id):
        raise NotFound(f"No key {key_id} on this account")


@router.post(
    "/api/login",
    response_model=LoginResponse,
    tags=["Authentication"],
    summary="Verify API key and get user info",
    responses=openapi_responses(InvalidApiKey()),
    dependencies=[AddressLimited],
)
async def login(request: Request, body: LoginRequest, state: StateDep, session: SessionDep) -> LoginResponse:
    """Validates an API key and returns the account's balance, deposit code and deposit wallet."""
    refuse_throttled(state, request)
    identity = await service.identify(session, hash_api_key(body.api_key)) if body.api_key.startswith("ck_") else None
    if identity is None:
        raise await authentication_failed(state, request)
    if identity.expires_at is not None and identity.expires_at <= time.time():
        raise await authentication_failed(state, request, key_expired(identity.key_id, identity.expires_at))
    account = await session.get(Account, identity.account_id)
    assert account is not None
    return LoginResponse(
        balance_ton=_ton(account.balance_nanoton),
        deposit_code=account.deposit_code,
        deposit_wallet=state.settings.deposit_wallet,
    )
