"""Reservations and settlements of metered requests, with the fewest database round trips.

- A reservation is one guarded UPDATE of the account row (no read-then-write): it only
  succeeds when the key is live, the balance is at least the minimum, and the worst-case
  cost fits in balance - open holds + overdraft. A hold row records it with an expiry.
- A settlement releases the hold, posts the charge to the ledger and writes the usage
  record in one transaction. Settlements (and on SQLite, reservations) are group-committed:
  whatever queued while the previous batch ran goes into the next transaction, and each
  caller resumes only after the transaction holding its work has committed.

This is the one hot path that talks to the database driver directly (sqlite3, asyncpg)
instead of through SQLAlchemy: measured, SQLAlchemy's per-statement overhead and
aiosqlite's thread hop per statement capped the whole gateway near 1,000 requests/s.

Layout, by what changes together: records.py (the operations and the rows they write),
batching.py (the queues and committers), sqlite.py and postgres.py (each database's statements
and connection handling). The sweeper, off the hot path, is billing/sweeper.py.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url

from cocoon_platform.billing.store.batching import BillingStore, Busy
from cocoon_platform.billing.store.postgres import PostgresBillingStore
from cocoon_platform.billing.store.records import AccountFunds, Reservation, Settlement, SettlementRows
from cocoon_platform.billing.store.sqlite import SqliteBillingStore
from cocoon_platform.config import Settings

__all__ = [
    "AccountFunds",
    "BillingStore",
    "Busy",
    "PostgresBillingStore",
    "Reservation",
    "Settlement",
    "SettlementRows",
    "SqliteBillingStore",
    "create_billing_store",
]


def create_billing_store(settings: Settings) -> BillingStore:
    url = make_url(settings.database_url)
    if url.drivername.startswith("sqlite"):
        return SqliteBillingStore(url.database or ":memory:", settings.sqlite_synchronous, settings.settle_batch_max)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return PostgresBillingStore(dsn, settings.settle_batch_max)
