"""The deposits table: recording the wallet's incoming transfers and crediting them.

Rules:
- Every finalised incoming transfer with value is kept, once, keyed by its transaction hash
  (lower hex of the 32 bytes; unique in the table). A clean transfer whose text comment,
  normalised, is an account's deposit code is `credited`; anything else with value (unknown
  code, no comment, binary or encrypted comment) is `unmatched` until an operator assigns it.
- A credit is the deposits row plus one ledger entry `deposit:<tx hash hex>` written in the
  caller's transaction, so either both exist or neither does, and the ledger's unique
  reference makes a second credit of the same transaction impossible.
- Never a deposit (no row): bounced, aborted, coins sent back out, outgoing or external,
  zero value, jetton notifications (see `classify`), or another account's transaction.

- A transfer carrying an account's code that is not final yet is noted in `pending_deposits`
  (`record_pending`), so its owner sees it coming; the note goes when the transaction is
  recorded, whatever it turned out to be.

Watchers keep their place in `watcher_cursors` (`load_cursor` / `save_cursor`), written in
the same transaction as the deposits it covers.

The caller owns the transaction: functions here never commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import ModuleType
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from cocoon_platform.accounts.keys import DEPOSIT_CODE_ALPHABET, normalise_deposit_code
from cocoon_platform.accounts.service import account_by_code
from cocoon_platform.billing.ledger import EntryKind, post_entry
from cocoon_platform.config import format_ton
from cocoon_platform.db.models import Account, Deposit, PendingDeposit, WatcherCursor, utcnow
from cocoon_platform.ton.address import InvalidAddress, TonAddress
from cocoon_platform.ton.comment import BodyKind
from cocoon_platform.ton.toncenter import ChainTransaction, Classification, classify, decode_tx_hash

__all__ = [
    "AlreadyCredited",
    "Cursor",
    "DepositError",
    "DepositOutcome",
    "DepositStatus",
    "DepositRow",
    "UnknownDeposit",
    "UnknownDepositCode",
    "assign_unmatched",
    "known_hashes",
    "ledger_reference",
    "list_deposits",
    "load_cursor",
    "parse_tx_hash",
    "record_pending",
    "record_transaction",
    "record_transactions",
    "save_cursor",
]

logger = logging.getLogger(__name__)

_CODE_CHARS = frozenset(DEPOSIT_CODE_ALPHABET)


class DepositStatus(StrEnum):
    """A deposit row's status: credited to an account, or waiting for an operator to match it."""

    CREDITED = "credited"
    UNMATCHED = "unmatched"


class DepositOutcome(StrEnum):
    """What `record_transaction` did with one transaction."""

    CREDITED = "credited"
    UNMATCHED = "unmatched"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


class DepositError(Exception):
    """An operator action on deposits was refused; the message says why."""


class UnknownDeposit(DepositError):
    pass


class AlreadyCredited(DepositError):
    pass


class UnknownDepositCode(DepositError):
    pass


@dataclass(frozen=True, slots=True)
class DepositRow:
    """A deposit as an operator sees it; `deposit_code` is that of the credited account."""

    tx_hash: str
    lt: int
    utime: int
    sender: str | None
    amount_nanoton: int
    comment: str | None
    body_kind: str
    status: str
    deposit_code: str | None
    created_at: datetime
    credited_at: datetime | None


def ledger_reference(tx_hash_hex: str) -> str:
    """The ledger reference of a deposit: one transaction can be credited only once."""
    return f"deposit:{tx_hash_hex}"


def parse_tx_hash(text: str) -> str:
    """Lower hex of a transaction hash typed as hex (64 digits) or base64/base64url."""
    try:
        return decode_tx_hash(text).hex()
    except ValueError as exc:
        raise DepositError(str(exc)) from None


async def record_transaction(session: AsyncSession, tx: ChainTransaction, wallet: TonAddress) -> DepositOutcome:
    """Record one finalised transaction of `wallet`; see `record_transactions`."""
    [outcome] = await record_transactions(session, [tx], wallet)
    return outcome


async def record_transactions(
    session: AsyncSession, txs: Sequence[ChainTransaction], wallet: TonAddress
) -> list[DepositOutcome]:
    """Record finalised transactions of `wallet` (one page); outcomes in the same order.

    A hash already in the table (or earlier in `txs`) is a `duplicate` and changes nothing.
    Rows are inserted with ON CONFLICT DO NOTHING on the unique hash, so when two watchers
    record the same transaction the first to commit wins and the other sees a duplicate
    instead of an error. Pending transactions are refused (ValueError): they may still change.
    """
    outcomes: dict[str, DepositOutcome] = {}
    recordable: dict[str, tuple[ChainTransaction, bool]] = {}  # hash -> (tx, may be credited)
    repeated: set[int] = set()
    for index, tx in enumerate(txs):
        classification = classify(tx)
        if classification is Classification.PENDING:
            raise ValueError(f"transaction {tx.hash.hex()} is not finalised")
        tx_hash = tx.hash.hex()
        if tx_hash in outcomes or tx_hash in recordable:
            repeated.add(index)
        elif classification is Classification.IGNORE or not _belongs_to(tx, wallet):
            outcomes[tx_hash] = DepositOutcome.IGNORED
        else:
            recordable[tx_hash] = (tx, classification is Classification.CREDIT)
    for tx_hash in await known_hashes(session, recordable):
        outcomes[tx_hash] = DepositOutcome.DUPLICATE
        del recordable[tx_hash]
    seen = [tx.hash.hex() for tx in txs]
    if seen:  # final now: no longer pending, whatever they turned out to be
        await session.execute(delete(PendingDeposit).where(PendingDeposit.tx_hash.in_(seen)))
    if recordable:
        outcomes.update(await _record_new(session, list(recordable.values())))
    return [DepositOutcome.DUPLICATE if index in repeated else outcomes[tx.hash.hex()] for index, tx in enumerate(txs)]


async def record_pending(session: AsyncSession, txs: Sequence[ChainTransaction], wallet: TonAddress) -> int:
    """Note the transfers among `txs` that are not final yet and carry an account's code, so
    `GET /v1/deposits` shows them as pending; returns how many were new. Nothing is credited."""
    candidates = [
        tx
        for tx in txs
        if classify(tx) is Classification.PENDING
        and tx.incoming
        and not tx.bounced
        and tx.value_nanoton > 0
        and tx.body.kind is BodyKind.TEXT
        and _belongs_to(tx, wallet)
    ]
    accounts = await _accounts_by_code(session, {_code(tx) for tx in candidates})
    rows: list[dict[str, Any]] = [
        {
            "tx_hash": tx.hash.hex(),
            "account_id": accounts[_code(tx)],
            "amount_nanoton": tx.value_nanoton,
            "seen_at": utcnow(),
        }
        for tx in candidates
        if _code(tx) in accounts
    ]
    known = await known_hashes(session, [row["tx_hash"] for row in rows])
    rows = [row for row in rows if row["tx_hash"] not in known]
    if not rows:
        return 0
    statement = (
        _dialect(session)
        .insert(PendingDeposit)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[PendingDeposit.tx_hash])
        .returning(PendingDeposit.tx_hash)
    )
    return len(list(await session.scalars(statement)))


async def _record_new(
    session: AsyncSession, candidates: list[tuple[ChainTransaction, bool]]
) -> dict[str, DepositOutcome]:
    """Insert the deposits rows, then post a ledger entry for each credited one."""
    accounts = await _accounts_by_code(session, {_code(tx) for tx, creditable in candidates if creditable})
    rows = [_deposit_values(tx, accounts.get(_code(tx)) if creditable else None) for tx, creditable in candidates]
    # Sorted so concurrent watchers take the unique-index locks in one order (no deadlock).
    rows.sort(key=lambda row: row["tx_hash"])
    inserted = await _insert_new(session, rows)
    outcomes: dict[str, DepositOutcome] = {}
    credits = []
    for row in rows:
        if row["tx_hash"] not in inserted:
            outcomes[row["tx_hash"]] = DepositOutcome.DUPLICATE
        elif row["account_id"] is None:
            outcomes[row["tx_hash"]] = DepositOutcome.UNMATCHED
            logger.info(
                "unmatched deposit %s: %s TON (%s)",
                row["tx_hash"],
                format_ton(row["amount_nanoton"], 9),
                row["body_kind"],
            )
        else:
            outcomes[row["tx_hash"]] = DepositOutcome.CREDITED
            credits.append(row)
    # Account rows are locked in id order for the same reason.
    for row in sorted(credits, key=lambda row: (row["account_id"], row["lt"])):
        await post_entry(
            session,
            row["account_id"],
            row["amount_nanoton"],
            EntryKind.DEPOSIT,
            ledger_reference(row["tx_hash"]),
            f"TON deposit from {row['sender']}",
        )
        logger.info(
            "credited %s TON to account %d (tx %s)",
            format_ton(row["amount_nanoton"], 9),
            row["account_id"],
            row["tx_hash"],
        )
    return outcomes


def _code(tx: ChainTransaction) -> str:
    return normalise_deposit_code(tx.body.text or "")


async def _accounts_by_code(session: AsyncSession, codes: Iterable[str]) -> dict[str, int]:
    # Only texts that could be a code are looked up: a comment holding NUL would make
    # PostgreSQL reject the whole query (and with it the page).
    wanted = [code for code in codes if code and set(code) <= _CODE_CHARS]
    if not wanted:
        return {}
    rows = await session.execute(select(Account.deposit_code, Account.id).where(Account.deposit_code.in_(wanted)))
    return {code: account_id for code, account_id in rows}


def _deposit_values(tx: ChainTransaction, account_id: int | None) -> dict[str, Any]:
    return {
        "tx_hash": tx.hash.hex(),
        "lt": tx.lt,
        "utime": tx.now,
        "sender": _sender(tx),
        "amount_nanoton": tx.value_nanoton,
        "comment": _storable(tx.body.text),
        "body_kind": tx.body.kind.value,
        "account_id": account_id,
        "status": (DepositStatus.UNMATCHED if account_id is None else DepositStatus.CREDITED).value,
        "created_at": utcnow(),
        "credited_at": None if account_id is None else utcnow(),
    }


async def _insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the rows whose hash is not taken; returns the hashes inserted.

    One statement per page: at most 1000 rows x 11 columns stays under the bind-parameter
    limits of SQLite (32766) and asyncpg (32767).
    """
    statement = (
        _dialect(session)
        .insert(Deposit)
        .values(rows)
        .on_conflict_do_nothing(index_elements=[Deposit.tx_hash])
        .returning(Deposit.tx_hash)
    )
    return set(await session.scalars(statement))


def _dialect(session: AsyncSession) -> ModuleType:
    """The dialect module whose `insert` has ON CONFLICT (both backends support it)."""
    return postgresql if session.get_bind().dialect.name == "postgresql" else sqlite


def _belongs_to(tx: ChainTransaction, wallet: TonAddress) -> bool:
    """Providers print the account in several forms; compare (workchain, hash) only."""
    try:
        if TonAddress.parse(tx.account) == wallet:
            return True
    except InvalidAddress:
        pass
    logger.warning("ignoring transaction %s of account %r: not the deposit wallet", tx.hash.hex(), tx.account[:80])
    return False


def _sender(tx: ChainTransaction) -> str | None:
    """The sender in raw form (one spelling per address), or as given if it isn't one."""
    if tx.source is None:
        return None
    try:
        return TonAddress.parse(tx.source).to_raw()
    except InvalidAddress:
        return _storable(tx.source[:80])


def _storable(text: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; one such text must not block the watcher forever.
    return None if text is None else text.replace("\x00", "\\x00")


async def known_hashes(session: AsyncSession, tx_hashes: Iterable[str]) -> set[str]:
    """The given hashes (lower hex) that already have a deposits row."""
    wanted = list(tx_hashes)
    if not wanted:
        return set()
    rows = await session.scalars(select(Deposit.tx_hash).where(Deposit.tx_hash.in_(wanted)))
    return set(rows)


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last transaction a watcher has handled (lt, lower-hex hash)."""

    lt: int
    tx_hash: str

    @classmethod
    def of(cls, tx: ChainTransaction) -> Cursor:
        return cls(tx.lt, tx.hash.hex())


async def load_cursor(session: AsyncSession, wallet_key: str) -> Cursor | None:
    row = (
        await session.execute(select(WatcherCursor.lt, WatcherCursor.tx_hash).where(WatcherCursor.wallet == wallet_key))
    ).first()
    return Cursor(row.lt, row.tx_hash) if row else None


async def save_cursor(session: AsyncSession, wallet_key: str, cursor: Cursor) -> None:
    """Upsert the wallet's cursor; it only moves forward, so a slower second watcher can't
    drag it back."""
    statement = (
        _dialect(session)
        .insert(WatcherCursor)
        .values(wallet=wallet_key, lt=cursor.lt, tx_hash=cursor.tx_hash, updated_at=utcnow())
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[WatcherCursor.wallet],
            set_={
                "lt": statement.excluded.lt,
                "tx_hash": statement.excluded.tx_hash,
                "updated_at": statement.excluded.updated_at,
            },
            where=WatcherCursor.lt < statement.excluded.lt,
        )
    )


async def assign_unmatched(session: AsyncSession, tx_hash: str, code: str) -> int:
    """Credit an unmatched deposit to the account with deposit code `code`; new balance.

    Exactly once: the guarded UPDATE (status unmatched -> credited) lets one caller through,
    and the ledger entry reuses the deposit's `deposit:<hash>` reference, so even a deposit
    that was somehow credited already cannot be posted twice.
    """
    tx_hash_hex = parse_tx_hash(tx_hash)
    account = await account_by_code(session, code)
    if account is None:
        raise UnknownDepositCode(f"no account has deposit code {code.strip()!r}")
    deposit = await session.scalar(select(Deposit).where(Deposit.tx_hash == tx_hash_hex))
    if deposit is None:
        raise UnknownDeposit(f"no deposit with transaction hash {tx_hash_hex}")
    claimed = await session.execute(
        update(Deposit)
        .where(Deposit.tx_hash == tx_hash_hex, Deposit.status == DepositStatus.UNMATCHED.value)
        .values(status=DepositStatus.CREDITED.value, account_id=account.id, credited_at=utcnow())
    )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        raise AlreadyCredited(f"deposit {tx_hash_hex} is already credited")
    return await post_entry(
        session,
        account.id,
        deposit.amount_nanoton,
        EntryKind.DEPOSIT,
        ledger_reference(tx_hash_hex),
        f"TON deposit from {deposit.sender}, assigned by an operator",
    )


async def list_deposits(
    session: AsyncSession, unmatched_only: bool = False, limit: int | None = None
) -> list[DepositRow]:
    """Deposits most recently recorded first, with the credited account's deposit code."""
    query = (
        select(Deposit, Account.deposit_code)
        .outerjoin(Account, Account.id == Deposit.account_id)
        .order_by(Deposit.id.desc())
        .limit(limit)
    )
    if unmatched_only:
        query = query.where(Deposit.status == DepositStatus.UNMATCHED.value)
    rows = await session.execute(query)
    return [
        DepositRow(
            tx_hash=d.tx_hash,
            lt=d.lt,
            utime=d.utime,
            sender=d.sender,
            amount_nanoton=d.amount_nanoton,
            comment=d.comment,
            body_kind=d.body_kind,
            status=d.status,
            deposit_code=code,
            created_at=d.created_at,
            credited_at=d.credited_at,
        )
        for d, code in rows
    ]
