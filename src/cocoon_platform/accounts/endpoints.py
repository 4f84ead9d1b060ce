"""Registration, login and keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Request, status

from cocoon_platform.accounts import service
from cocoon_platform.accounts.keys import bearer_key_hash, bearer_token
from cocoon_platform.accounts.schemas import (
    ApiKeyResponse,
    KeyInfo,
    KeyList,
    LoginRequest,
    LoginResponse,
    NewKeyRequest,
    RegisterResponse,
)
from cocoon_platform.config import format_ton
from cocoon_platform.db.models import Account
from cocoon_platform.deps import (
    BIGINT_MAX,
    AddressLimited,
    CurrentKey,
    SessionDep,
    StateDep,
    authentication_failed,
    refuse_throttled,
)
from cocoon_platform.errors import AdminTokenRequired, NotFound, error_body

router = APIRouter()

UNAUTHORIZED = {
    "description": "Invalid or missing API key",
    "content": {"application/json": {"example": error_body("Invalid API key", "invalid_auth", "invalid_api_key")}},
}
FORBIDDEN = {
    "description": "Admin token required",
    "content": {"application/json": {"example": error_body("Admin token required", "auth_error", "forbidden")}},
}


def _ton(nanoton: int) -> float:
    return float(format_ton(nanoton, 9))


@router.post("/api/register", response_model=RegisterResponse, tags=["Authentication"],
             summary="Register a new user", dependencies=[AddressLimited])
async def register(state: StateDep, session: SessionDep) -> RegisterResponse:
    """Creates a new account and returns its API key (shown only once), deposit code and wallet."""
    issued = await service.register(session)
    await session.commit()
    return RegisterResponse(
        api_key=issued.api_key,
        deposit_code=issued.account.deposit_code,
        balance_ton=_ton(issued.account.balance_nanoton),
        created_at=issued.account.created_at,
        deposit_wallet=state.settings.deposit_wallet,
    )


@router.post(
    "/v1/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyResponse,
    tags=["Authentication"],
    summary="Create a new API key",
    responses={403: FORBIDDEN, 401: UNAUTHORIZED},
    dependencies=[AddressLimited],
)
async def create_key(
    request: Request,
    state: StateDep,
    session: SessionDep,
    body: Annotated[NewKeyRequest | None, Body()] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> ApiKeyResponse:
    """With the admin token (or with none configured): a new account and key.
    With a user's `ck_` key: a further key, optionally named, on that user's account."""
    name = body.name if body else None
    token = bearer_token(authorization)
    if token is not None and token.startswith("ck_"):
        refuse_throttled(state, request)
        identity = await service.identify(session, bearer_key_hash(authorization) or b"")
        if identity is None:
            raise await authentication_failed(state, request)
        plaintext, _ = await service.add_key(session, identity.account_id, name)
        await session.commit()
        account = await session.get(Account, identity.account_id)
        assert account is not None
        return ApiKeyResponse(
            api_key=plaintext,
            deposit_code=account.deposit_code,
            balance_ton=_ton(account.balance_nanoton),
            created_at=account.created_at,
        )
    if state.settings.admin_token is not None and not state.check_admin_token(token):
        raise AdminTokenRequired()
    issued = await service.register(session, name)
    await session.commit()
    return ApiKeyResponse(
        api_key=issued.api_key,
        deposit_code=issued.account.deposit_code,
        balance_ton=_ton(issued.account.balance_nanoton),
        created_at=issued.account.created_at,
    )


@router.get("/v1/keys", response_model=KeyList, tags=["Authentication"], summary="List your API keys",
            responses={401: UNAUTHORIZED})
async def list_keys(identity: CurrentKey, session: SessionDep) -> KeyList:
    """The account's live keys: prefix, name, creation and last use; never the key itself."""
    keys = await service.list_keys(session, identity.account_id)
    return KeyList(
        data=[
            KeyInfo(id=k.id, prefix=k.prefix, name=k.name, created_at=k.created_at, last_used_at=k.last_used_at)
            for k in keys
        ]
    )


@router.delete("/v1/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["Authentication"],
               summary="Revoke an API key", responses={401: UNAUTHORIZED, 404: {"description": "No such key"}})
async def revoke_key(key_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)], identity: CurrentKey,
                     session: SessionDep) -> None:
    """Revoke one of your keys; it is refused at once, on every instance."""
    if not await service.revoke_key(session, identity.account_id, key_id):
        raise NotFound(f"No key {key_id} on this account")
    await session.commit()


@router.post("/api/login", response_model=LoginResponse, tags=["Authentication"],
             summary="Verify API key and get user info", responses={401: UNAUTHORIZED}, dependencies=[AddressLimited])
async def login(request: Request, body: LoginRequest, state: StateDep, session: SessionDep) -> LoginResponse:
    """Validates an API key and returns the account's balance, deposit code and deposit wallet."""
    refuse_throttled(state, request)
    account = await service.account_by_key(session, body.api_key) if body.api_key.startswith("ck_") else None
    if account is None:
        raise await authentication_failed(state, request)
    return LoginResponse(
        balance_ton=_ton(account.balance_nanoton),
        deposit_code=account.deposit_code,
        deposit_wallet=state.settings.deposit_wallet,
    )
