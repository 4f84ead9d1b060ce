"""FastAPI dependencies shared by the endpoint modules."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.accounts.keys import bearer_key_hash
from cocoon_platform.accounts.service import KeyIdentity, identify
from cocoon_platform.errors import InvalidApiKey, PlatformError
from cocoon_platform.state import AppState


# The largest value a database integer column holds: larger ids and positions are refused with
# 422 where they are read, not sent to the database to fail there (a 500).
BIGINT_MAX = 2**63 - 1


def get_state(request: Request) -> AppState:
    return request.app.state.platform  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A session per request; endpoints that write commit it themselves."""
    async with state.sessionmaker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def refuse_throttled(state: AppState, request: Request) -> None:
    """Before any database work: 429 when the client's address failed authentication too often."""
    if state.limiter.blocked_until:
        state.limiter.refuse_if_blocked(state.client_addresses.bucket_of(request.scope))


async def authentication_failed(state: AppState, request: Request) -> PlatformError:
    """Count a failed authentication against the client's address; the error to raise (429 past the limit)."""
    return await state.limiter.failed_authentication(state.client_addresses.bucket_of(request.scope)) or InvalidApiKey()


async def current_key(
    request: Request,
    state: StateDep,
    session: SessionDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> KeyIdentity:
    refuse_throttled(state, request)
    key_hash = bearer_key_hash(authorization)
    identity = await identify(session, key_hash) if key_hash else None
    if identity is None:
        raise await authentication_failed(state, request)
    state.last_used.touch(identity.key_id, time.time())
    return identity


CurrentKey = Annotated[KeyIdentity, Depends(current_key)]


async def limit_address(request: Request, state: StateDep) -> None:
    """Sign-up and sign-in endpoints: a per-address rate limit against abuse."""
    await state.limiter.admit_address(state.client_addresses.bucket_of(request.scope))


AddressLimited = Depends(limit_address)
