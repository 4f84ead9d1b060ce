"""FastAPI dependencies shared by the endpoint modules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.accounts.keys import bearer_key_hash
from cocoon_platform.accounts.refusals import key_expired
from cocoon_platform.accounts.service import KeyIdentity, identify
from cocoon_platform.errors import AccountManagementNotAllowed, InvalidApiKey, KeyManagementNotAllowed, PlatformError
from cocoon_platform.state import AppState

# The largest value a database integer column holds: larger ids and positions are refused with
# 422 where they are read, not sent to the database to fail there (a 500).
BIGINT_MAX = 2**63 - 1


def get_state(request: Request) -> AppState:
    return request.app.state.platform  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A session per request, and the request owns its transaction: committed when the endpoint
    returns, rolled back when it raises. Both happen before the answer is sent (the dependency's
    scope is the endpoint function), so a success means the writes are committed and a commit
    that fails is an error answer, never a success whose writes were lost. Endpoints `flush()`
    when they need their writes visible to their own later reads; none commits."""
    async with state.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def refuse_throttled(state: AppState, request: Request) -> None:
    """Before any database work: 429 when the client's address failed authentication too often."""
    if state.limiter.blocked_until:
        state.limiter.refuse_if_blocked(state.client_addresses.bucket_of(request.scope))


async def authentication_failed(state: AppState, request: Request, error: InvalidApiKey | None = None) -> PlatformError:
    """Count a failed authentication against the client's address; the error to raise (429 past the
    limit, else `error`: an invalid key by default, or an expired one)."""
    throttled = await state.limiter.failed_authentication(state.client_addresses.bucket_of(request.scope))
    return throttled or error or InvalidApiKey()


async def authenticate(
    state: AppState, request: Request, session: AsyncSession, authorization: str | None
) -> KeyIdentity:
    """The live, unexpired key of a request's `Authorization` header; failures count for the throttle."""
    refuse_throttled(state, request)
    key_hash = bearer_key_hash(authorization)
    identity = await identify(session, key_hash) if key_hash else None
    if identity is None:
        raise await authentication_failed(state, request)
    if identity.expires_at is not None and identity.expires_at <= time.time():
        raise await authentication_failed(state, request, key_expired(identity.key_id, identity.expires_at))
    return identity


async def current_key(
    request: Request,
    state: StateDep,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> KeyIdentity:
    identity = await authenticate(state, request, session, authorization)
    state.last_used.touch(identity.key_id, time.time())
    return identity


CurrentKey = Annotated[KeyIdentity, Depends(current_key)]


def unrestricted(refusal: type[PlatformError]) -> Callable[[KeyIdentity], Awaitable[KeyIdentity]]:
    """A dependency: the request's key, refused with `refusal` when it has any restriction (a
    credit limit, a model allow-list or an expiry). Ruling 5 of #23: such a key was handed out
    trusted with less than the account, so it manages nothing; else a capped key mints itself an
    uncapped one, and the cap means nothing."""

    async def dependency(identity: CurrentKey) -> KeyIdentity:
        if identity.restricted:
            raise refusal()
        return identity

    return dependency


# Creating, changing and deleting keys.
KeyManager = Annotated[KeyIdentity, Depends(unrestricted(KeyManagementNotAllowed))]
# Changing the account's settings (PATCH /api/account).
AccountManager = Annotated[KeyIdentity, Depends(unrestricted(AccountManagementNotAllowed))]


async def limit_address(request: Request, state: StateDep) -> None:
    """Sign-up and sign-in endpoints: a per-address rate limit against abuse."""
    await state.limiter.admit_address(state.client_addresses.bucket_of(request.scope))


AddressLimited = Depends(limit_address)
