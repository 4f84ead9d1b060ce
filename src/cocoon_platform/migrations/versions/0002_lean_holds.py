"""lean holds: no expiry index; on SQLite a table without rowid

Every metered request inserts and deletes a hold, so each index on the table is another page
written per request. The table only holds the requests in flight, so the sweeper's scan needs
no index; on SQLite, WITHOUT ROWID keeps a hold in one B-tree instead of two.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_COLUMNS = "id, account_id, amount_nanoton, expires_at"


def _rebuild_sqlite_holds(without_rowid: bool) -> None:
    """SQLite can't change a table's rowid-ness in place: copy the open holds into a new table."""
    op.execute(
        "CREATE TABLE holds_rebuilt (\n"
        "\tid VARCHAR(40) NOT NULL, \n"
        "\taccount_id INTEGER NOT NULL, \n"
        "\tamount_nanoton BIGINT NOT NULL, \n"
        "\texpires_at BIGINT NOT NULL, \n"
        "\tCONSTRAINT pk_holds PRIMARY KEY (id), \n"
        "\tCONSTRAINT fk_holds_account_id_accounts FOREIGN KEY(account_id) REFERENCES accounts (id)\n"
        ")" + (" WITHOUT ROWID" if without_rowid else "")
    )
    op.execute(f"INSERT INTO holds_rebuilt ({_COLUMNS}) SELECT {_COLUMNS} FROM holds")
    op.execute("DROP TABLE holds")
    op.execute("ALTER TABLE holds_rebuilt RENAME TO holds")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_holds(without_rowid=True)  # dropping the table drops its index too
    else:
        op.drop_index("ix_holds_expires_at", table_name="holds")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite_holds(without_rowid=False)
    op.create_index("ix_holds_expires_at", "holds", ["expires_at"], unique=False)
