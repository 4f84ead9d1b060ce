"""key limits, lifetime credits, low-balance level, pending deposits

- api_keys: a credit limit (reset daily, weekly, monthly or never), a model allow-list and an
  expiry, and the counters of the limit's current period (spent, held by requests in flight,
  period start), kept only while the key has a limit.
- holds: the key a hold counts against (only when that key has a limit), so a settlement or the
  sweeper gives the key back what it held.
- accounts: lifetime credits (deposits and operator credits, backfilled from the ledger), which
  decide whether the account may use the overdraft (#14); the user's low-balance level.
- pending_deposits: transfers with an account's code seen before they are final.

On PostgreSQL the reservation function checks the key too, in the same call (one round trip):
a live, unexpired key that allows the model; the account's funds, with the overdraft only for
accounts whose credits reach the minimum; then the key's limit. Rows are still locked account
first, then key, as the settlement statement and the sweeper lock them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PREVIOUS_SIGNATURE = "bytea[], bigint[], bigint[], bigint[], varchar[], bigint[]"
SIGNATURE = f"{PREVIOUS_SIGNATURE}, varchar[], bigint[], bigint, bigint, bigint, bigint"

RESERVE_BATCH = """
CREATE OR REPLACE FUNCTION cocoon_reserve_batch(
    key_hashes bytea[], amounts bigint[], min_balances bigint[], overdrafts bigint[],
    hold_ids varchar[], expiries bigint[], model_needles varchar[], overdraft_min_credits bigint[],
    now_seconds bigint, day_start bigint, week_start bigint, month_start bigint)
RETURNS TABLE (granted integer, granted_account bigint, granted_key bigint, key_counted boolean)
LANGUAGE plpgsql AS $$
DECLARE
    wanted record;
    earlier_key bigint;
BEGIN
    FOR wanted IN
        SELECT w.n, k.id AS key_id, k.account_id, k.credit_limit_nanoton,
               CASE k.limit_reset WHEN 'daily' THEN day_start WHEN 'weekly' THEN week_start
                                  WHEN 'monthly' THEN month_start ELSE 0 END AS period_start
          FROM unnest(key_hashes) WITH ORDINALITY AS w(key_hash, n)
          JOIN api_keys k ON k.key_hash = w.key_hash AND k.revoked_at IS NULL
               AND (k.expires_at IS NULL OR k.expires_at > now_seconds)
               AND (k.models IS NULL OR strpos(k.models, model_needles[w.n]) > 0)
         ORDER BY k.account_id, w.n
    LOOP
        SELECT key_id INTO earlier_key FROM holds WHERE id = hold_ids[wanted.n];
        IF FOUND THEN  -- reserved by an earlier try of this batch (migration 0004)
            granted := wanted.n;
            granted_account := wanted.account_id;
            granted_key := wanted.key_id;
            key_counted := earlier_key IS NOT NULL;
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE accounts SET reserved_nanoton = reserved_nanoton + amounts[wanted.n]
         WHERE id = wanted.account_id
           AND balance_nanoton >= min_balances[wanted.n]
           AND balance_nanoton - reserved_nanoton - amounts[wanted.n] >=
               -(CASE WHEN credited_nanoton >= overdraft_min_credits[wanted.n] THEN overdrafts[wanted.n] ELSE 0 END);
        CONTINUE WHEN NOT FOUND;
        key_counted := false;
        IF wanted.credit_limit_nanoton IS NOT NULL THEN
            UPDATE api_keys
               SET limit_spent_nanoton = CASE WHEN limit_period_start < wanted.period_start THEN 0
                                              ELSE limit_spent_nanoton END,
                   limit_period_start = greatest(limit_period_start, wanted.period_start),
                   limit_reserved_nanoton = limit_reserved_nanoton + amounts[wanted.n]
             WHERE id = wanted.key_id AND credit_limit_nanoton IS NOT NULL
               AND CASE WHEN limit_period_start < wanted.period_start THEN 0 ELSE limit_spent_nanoton END
                   + limit_reserved_nanoton + amounts[wanted.n] <= credit_limit_nanoton;
            IF NOT FOUND THEN  -- over the key's limit: give the account its reservation back
                UPDATE accounts SET reserved_nanoton = reserved_nanoton - amounts[wanted.n]
                 WHERE id = wanted.account_id;
                CONTINUE;
            END IF;
            key_counted := true;
        END IF;
        INSERT INTO holds (id, account_id, amount_nanoton, expires_at, key_id)
             VALUES (hold_ids[wanted.n], wanted.account_id, amounts[wanted.n], expiries[wanted.n],
                     CASE WHEN key_counted THEN wanted.key_id END);
        granted := wanted.n;
        granted_account := wanted.account_id;
        granted_key := wanted.key_id;
        RETURN NEXT;
    END LOOP;
END $$
"""

# Lifetime credits so far: every deposit and operator credit the ledger holds.
BACKFILL_CREDITS = """
UPDATE accounts SET credited_nanoton = coalesce((
    SELECT sum(amount_nanoton) FROM ledger_entries
     WHERE ledger_entries.account_id = accounts.id AND kind IN ('deposit', 'admin_credit') AND amount_nanoton > 0
), 0)"""


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("credited_nanoton", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("low_balance_nanoton", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("credit_limit_nanoton", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("limit_reset", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("models", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("limit_spent_nanoton", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("limit_reserved_nanoton", sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(sa.Column("limit_period_start", sa.BigInteger(), server_default="0", nullable=False))
    # A plain ADD COLUMN: holds is a WITHOUT ROWID table on SQLite, which a rebuild would lose.
    op.add_column("holds", sa.Column("key_id", sa.BigInteger(), nullable=True))
    op.create_table(
        "pending_deposits",
        sa.Column("tx_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("amount_nanoton", sa.BigInteger(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_pending_deposits_account_id_accounts"),
        sa.PrimaryKeyConstraint("tx_hash", name="pk_pending_deposits"),
    )
    op.create_index("ix_pending_deposits_account_id", "pending_deposits", ["account_id"], unique=False)
    op.execute(BACKFILL_CREDITS)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS cocoon_reserve_batch({PREVIOUS_SIGNATURE})")
        op.execute(RESERVE_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS cocoon_reserve_batch({SIGNATURE})")
        previous = import_module("cocoon_platform.migrations.versions.0004_reserve_batch_retry_safe")
        op.execute(previous.RESERVE_BATCH)
    op.drop_index("ix_pending_deposits_account_id", table_name="pending_deposits")
    op.drop_table("pending_deposits")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE holds DROP COLUMN key_id")  # in place (SQLite 3.35+): keeps WITHOUT ROWID
    else:
        op.drop_column("holds", "key_id")
    with op.batch_alter_table("api_keys") as batch:
        for column in (
            "limit_period_start",
            "limit_reserved_nanoton",
            "limit_spent_nanoton",
            "expires_at",
            "models",
            "limit_reset",
            "credit_limit_nanoton",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("low_balance_nanoton")
        batch.drop_column("credited_nanoton")
