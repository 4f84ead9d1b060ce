"""the ledger's per-account index leaves out usage entries

Every settlement writes a usage entry to the ledger, and with it a leaf of this index in a
different place for each account: on SQLite a quarter of the pages a batch of settlements
writes (`bench/sqlite_store.py`). No query reads usage entries through it: a request's usage
is listed from `usage_records`, which has an index of its own, and the reconciliation sums the
whole table. The money an account put in or an operator moved (deposits, credits, debits)
stays indexed for per-account statements.

Building the partial index reads the whole table once, while the migration holds it.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

NOT_USAGE = sa.text("kind <> 'usage'")


def upgrade() -> None:
    op.drop_index("ix_ledger_entries_account_id_id", table_name="ledger_entries")
    op.create_index(
        "ix_ledger_entries_account_id_id_not_usage",
        "ledger_entries",
        ["account_id", "id"],
        unique=False,
        sqlite_where=NOT_USAGE,
        postgresql_where=NOT_USAGE,
    )


def downgrade() -> None:
    op.drop_index("ix_ledger_entries_account_id_id_not_usage", table_name="ledger_entries")
    op.create_index("ix_ledger_entries_account_id_id", "ledger_entries", ["account_id", "id"], unique=False)
