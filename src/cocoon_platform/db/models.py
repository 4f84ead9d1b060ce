"""Tables. Money is integer nanoTON everywhere; a balance only moves with a ledger entry."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so Alembic migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite keeps no zone, so it is put back on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    deposit_code: Mapped[str] = mapped_column(String(16), unique=True)
    balance_nanoton: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Sum of this account's open holds; kept on the row so a reservation is one guarded UPDATE.
    reserved_nanoton: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Lifetime credits (deposits and operator credits): the overdraft is only for accounts whose
    # credits reach COCOON_OVERDRAFT_MIN_CREDITS_TON, so a throw-away account can't go below zero.
    credited_nanoton: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # The user's own warning level: `/v1/balance` says `low_balance` below it (None: no warning).
    low_balance_nanoton: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ApiKey(Base):
    """A key and its restrictions (see accounts/limits.py).

    The `limit_*` counters are kept only while the key has a credit limit: its reservations and
    settlements move them in the same statements that move the account's balance, so a key's
    limit holds under concurrency exactly as the balance does; an unlimited key costs nothing more.
    """

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    credit_limit_nanoton: Mapped[int | None] = mapped_column(BigInteger)
    limit_reset: Mapped[str | None] = mapped_column(String(16))  # daily | weekly | monthly; None: never
    # The model allow-list as "\n<id>\n<id>\n", so the reservation tests membership with one
    # substring search in either database (ids never hold a newline); None: every model.
    models: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)  # unix seconds
    limit_spent_nanoton: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    limit_reserved_nanoton: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    limit_period_start: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # unix seconds


class LedgerEntry(Base):
    """Append-only: a row is never updated or deleted."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(32))
    amount_nanoton: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(String(128), unique=True)
    memo: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    # Usage entries are left out: every settlement writes one, and a request's usage is read
    # from usage_records (migration 0005). SQLite uses it only for a query that says
    # `kind <> 'usage'` in those words.
    __table_args__ = (
        Index(
            "ix_ledger_entries_account_id_id_not_usage",
            "account_id",
            "id",
            sqlite_where=text("kind <> 'usage'"),
            postgresql_where=text("kind <> 'usage'"),
        ),
    )


class Hold(Base):
    """A reservation of a request's worst-case cost, open while the request runs.

    Written and deleted on every request, so it stays as cheap as a table can: no secondary
    index (it only ever holds the requests in flight; the sweeper scans it) and, on SQLite, no
    rowid, so a hold is one B-tree entry rather than a row plus its primary-key index.
    """

    __tablename__ = "holds"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (SQLAlchemy's declarative form)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    amount_nanoton: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)  # unix seconds
    # The key whose request made the hold (None only on holds older than migration 0008), and
    # whether the hold counts against that key's credit limit (is in its limit_reserved_nanoton):
    # while the key has a limit, every hold of the key does (billing/key_limits.py).
    key_id: Mapped[int | None] = mapped_column(BigInteger)
    key_counted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class UsageRecord(Base):
    __tablename__ = "usage_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    key_id: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(40))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    reasoning_tokens: Mapped[int] = mapped_column(Integer)
    cost_nanoton: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(24))
    http_status: Mapped[int] = mapped_column(Integer)
    estimated: Mapped[bool] = mapped_column(Boolean)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(BigInteger)  # unix milliseconds, set by the app
    # What an `orphaned` hold reserved (released at 0 by the sweeper); null on other records.
    reserved_nanoton: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # What the settlement left uncharged, the operator's loss: charging the request's whole cost
    # would have taken an account without the overdraft under 0 or a key past its credit limit
    # (billing/store/records.py, `cap_charges`). Null when the whole cost was charged.
    capped_nanoton: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_usage_records_account_id_id", "account_id", "id"),)


class Deposit(Base):
    """Every incoming transfer with value the watcher saw, credited or not."""

    __tablename__ = "deposits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    tx_hash: Mapped[str] = mapped_column(String(64), unique=True)  # lower hex of the 32-byte hash
    lt: Mapped[int] = mapped_column(BigInteger)
    utime: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str | None] = mapped_column(String(80))
    amount_nanoton: Mapped[int] = mapped_column(BigInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    body_kind: Mapped[str] = mapped_column(String(24))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # credited | unmatched
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    credited_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class PendingDeposit(Base):
    """A transfer carrying an account's deposit code that the watcher saw before it was final;
    removed once the transfer is credited (it then is a row of `deposits`)."""

    __tablename__ = "pending_deposits"

    tx_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_nanoton: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WatcherCursor(Base):
    __tablename__ = "watcher_cursors"

    wallet: Mapped[str] = mapped_column(String(80), primary_key=True)
    lt: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
