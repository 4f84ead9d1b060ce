"""PostgreSQL: a reservation batch that is applied twice reserves once

A batch is retried when its connection is lost, and the loss can come after the commit, before
the reply. The retry then met the holds it had made (their ids are the requests' ids): the whole
call failed on the primary key, its callers got an error, and their amounts stayed held until the
sweeper. Now a reservation whose hold already exists is reported as granted, as it was, and
nothing more is reserved.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

RESERVE_BATCH = """
CREATE OR REPLACE FUNCTION cocoon_reserve_batch(
    key_hashes bytea[], amounts bigint[], min_balances bigint[], overdrafts bigint[],
    hold_ids varchar[], expiries bigint[])
RETURNS TABLE (granted integer, granted_account bigint, granted_key bigint)
LANGUAGE plpgsql AS $$
DECLARE
    wanted record;
BEGIN
    FOR wanted IN
        SELECT w.n, k.id AS key_id, k.account_id
          FROM unnest(key_hashes) WITH ORDINALITY AS w(key_hash, n)
          JOIN api_keys k ON k.key_hash = w.key_hash AND k.revoked_at IS NULL
         ORDER BY k.account_id, w.n
    LOOP
        PERFORM 1 FROM holds WHERE id = hold_ids[wanted.n];
        IF NOT FOUND THEN
            UPDATE accounts SET reserved_nanoton = reserved_nanoton + amounts[wanted.n]
             WHERE id = wanted.account_id
               AND balance_nanoton >= min_balances[wanted.n]
               AND balance_nanoton - reserved_nanoton - amounts[wanted.n] >= -overdrafts[wanted.n];
            IF FOUND THEN
                INSERT INTO holds (id, account_id, amount_nanoton, expires_at)
                     VALUES (hold_ids[wanted.n], wanted.account_id, amounts[wanted.n], expiries[wanted.n]);
            END IF;
        END IF;
        IF FOUND THEN  -- reserved now, or by an earlier try of this batch
            granted := wanted.n;
            granted_account := wanted.account_id;
            granted_key := wanted.key_id;
            RETURN NEXT;
        END IF;
    END LOOP;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(RESERVE_BATCH)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        previous = import_module("cocoon_platform.migrations.versions.0003_reserve_batch")
        op.execute(previous.RESERVE_BATCH)
