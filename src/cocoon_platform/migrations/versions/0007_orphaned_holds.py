"""usage records remember what an orphaned hold reserved

A hold left open because the platform process died (kill -9, out of memory) is released at 0 by
the sweeper: the operator's loss, not the user's (ruling 1 of #23). It is recorded as a usage
record with status `orphaned` and, in this column, the amount the hold reserved, so that
`admin reconcile` and the metrics can say what crashes cost. Other records leave it null.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("reserved_nanoton", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("reserved_nanoton")
