"""Which account a key belongs to, remembered, so per-account limits cost no database round
trip per request.

A key never moves to another account, so a remembered answer stays right; a key revoked since
is still refused where the request authenticates (the reservation), so remembering it only
decides whose limits a doomed request counts against. Unknown keys are not remembered (the
failed-authentication throttle deals with floods of them). Bounded: past `capacity` entries
the memory starts again.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cocoon_platform.accounts.service import identify

CAPACITY = 100_000


class KeyAccounts:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], capacity: int = CAPACITY) -> None:
        self._sessionmaker = sessionmaker
        self._capacity = capacity
        self._accounts: dict[bytes, int] = {}

    async def account_of(self, key_hash: bytes) -> int | None:
        """The key's account id, or None when no live key has this hash."""
        account_id = self._accounts.get(key_hash)
        if account_id is not None:
            return account_id
        async with self._sessionmaker() as session:
            identity = await identify(session, key_hash)
        if identity is None:
            return None
        if len(self._accounts) >= self._capacity:
            self._accounts.clear()
        self._accounts[key_hash] = identity.account_id
        return identity.account_id
