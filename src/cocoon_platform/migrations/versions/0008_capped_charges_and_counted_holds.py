"""capped charges; every hold names its key, and says whether it counts against the key's limit

- usage_records.capped_nanoton: what a settlement left uncharged because charging it all would
  have broken a promise (an account below the overdraft's minimum credits under 0, a key past its
  credit limit): the network reported more than the hold's worst case. The operator's loss,
  reported by `admin reconcile` and the `cocoon_capped_*` metrics; null on other records.
- holds.key_id now always names the key whose request made the hold, and holds.key_counted says
  whether the hold is in that key's `limit_reserved_nanoton`. A limit set while the key has
  requests in flight counts their holds then (billing/key_limits.py), which needs to know whose
  they are; until now a hold named its key only when the key had a limit.

On PostgreSQL the reservation function reads the key's limit after locking the account row (a
limit being set takes that lock first, so a reservation that waited for it sees the new limit),
always names the key on the hold, and no longer returns whether the hold counted (the settlement
reads it from the hold).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

SIGNATURE = (
    "bytea[], bigint[], bigint[], bigint[], varchar[], bigint[], varchar[], bigint[], bigint, bigint, bigint, bigint"
)

RESERVE_BATCH = """
CREATE FUNCTION cocoon_reserve_batch(
    key_hashes bytea[], amounts bigint[], min_balances bigint[], overdrafts bigint[],
    hold_ids varchar[], expiries bigint[], model_needles varchar[], overdraft_min_credits bigint[],
    now_seconds bigint, day_start bigint, week_start bigint, month_start bigint)
RETURNS TABLE (granted integer, granted_account bigint, granted_key bigint)
LANGUAGE plpgsql AS $$
DECLARE
    wanted record;
    limited boolean;
BEGIN
    FOR wanted IN
        SELECT w.n, k.id AS key_id, k.account_id
          FROM unnest(key_hashes) WITH ORDINALITY AS w(key_hash, n)
          JOIN api_keys k ON k.key_hash = w.key_hash AND k.revoked_at IS NULL
               AND (k.expires_at IS NULL OR k.expires_at > now_seconds)
               AND (k.models IS NULL OR strpos(k.models, model_needles[w.n]) > 0)
         ORDER BY k.account_id, w.n
    LOOP
        granted := wanted.n;
        granted_account := wanted.account_id;
        granted_key := wanted.key_id;
        PERFORM 1 FROM holds WHERE id = hold_ids[wanted.n];
        IF FOUND THEN  -- reserved by an earlier try of this batch (migration 0004)
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE accounts SET reserved_nanoton = reserved_nanoton + amounts[wanted.n]
         WHERE id = wanted.account_id
           AND balance_nanoton >= min_balances[wanted.n]
           AND balance_nanoton - reserved_nanoton - amounts[wanted.n] >=
               -(CASE WHEN credited_nanoton >= overdraft_min_credits[wanted.n] THEN overdrafts[wanted.n] ELSE 0 END);
        CONTINUE WHEN NOT FOUND;
        -- Read now, with the account row locked: a limit being set or lifted locks it first and
        -- counts the key's holds, so a reservation that waited for it sees the new limit.
        SELECT credit_limit_nanoton IS NOT NULL INTO limited FROM api_keys WHERE id = wanted.key_id;
        IF limited THEN
            UPDATE api_keys
               SET limit_spent_nanoton = CASE WHEN limit_period_start < (CASE limit_reset
                       WHEN 'daily' THEN day_start WHEN 'weekly' THEN week_start WHEN 'monthly' THEN month_start
                       ELSE 0 END) THEN 0 ELSE limit_spent_nanoton END,
                   limit_period_start = greatest(limit_period_start, CASE limit_reset
                       WHEN 'daily' THEN day_start WHEN 'weekly' THEN week_start WHEN 'monthly' THEN month_start
                       ELSE 0 END),
                   limit_reserved_nanoton = limit_reserved_nanoton + amounts[wanted.n]
             WHERE id = wanted.key_id
               AND CASE WHEN limit_period_start < (CASE limit_reset
                       WHEN 'daily' THEN day_start WHEN 'weekly' THEN week_start WHEN 'monthly' THEN month_start
                       ELSE 0 END) THEN 0 ELSE limit_spent_nanoton END
                   + limit_reserved_nanoton + amounts[wanted.n] <= credit_limit_nanoton;
            IF NOT FOUND THEN  -- over the key's limit: give the account its reservation back
                UPDATE accounts SET reserved_nanoton = reserved_nanoton - amounts[wanted.n]
                 WHERE id = wanted.account_id;
                CONTINUE;
            END IF;
        END IF;
        INSERT INTO holds (id, account_id, amount_nanoton, expires_at, key_id, key_counted)
             VALUES (hold_ids[wanted.n], wanted.account_id, amounts[wanted.n], expiries[wanted.n],
                     wanted.key_id, limited);
        RETURN NEXT;
    END LOOP;
END $$
"""


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("capped_nanoton", sa.BigInteger(), nullable=True))
    # Plain ADD COLUMN: holds is a WITHOUT ROWID table on SQLite, which a rebuild would lose.
    op.add_column("holds", sa.Column("key_counted", sa.Boolean(), server_default=sa.false(), nullable=False))
    # Until now a hold named a key only when it counted against the key's limit.
    op.execute("UPDATE holds SET key_counted = (key_id IS NOT NULL)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS cocoon_reserve_batch({SIGNATURE})")  # its result changes
        op.execute(RESERVE_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS cocoon_reserve_batch({SIGNATURE})")
        previous = import_module("cocoon_platform.migrations.versions.0006_key_limits_and_credits")
        op.execute(previous.RESERVE_BATCH)
    # Before this revision a hold named only the key whose limit it counted against.
    op.execute("UPDATE holds SET key_id = NULL WHERE NOT key_counted")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE holds DROP COLUMN key_counted")  # in place (SQLite 3.35+): keeps WITHOUT ROWID
    else:
        op.drop_column("holds", "key_counted")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("capped_nanoton")
