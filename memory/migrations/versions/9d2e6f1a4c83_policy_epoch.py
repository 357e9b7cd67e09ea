"""policy epoch: a token every committed change to what a search plan reads replaces

Revision ID: 9d2e6f1a4c83
Revises: f3b8d21c6a47
Create Date: 2026-11-27 10:00:00.000000

`policy_epoch` holds one row. Triggers on `sources`, `source_read_groups` and `policy_versions` give it a new
random `token` (and add one to `n`, for people) for every row inserted, updated or deleted, whatever writes it
(the services, a migration, an operator's SQL), so a process may keep what a search plan read from those tables
while the token stays the same (memory.policy_cache). A token is random, not a count, so history that rolls
back and moves forward again (a failover to a replica that lost commits, a point-in-time recovery) can never
bring back a token a process saw with another state.

On PostgreSQL the row triggers are deferred to commit: every writer then takes the epoch row last, after the
source rows and the audit head it locks while it runs (tests/memory/test_lock_order.py), so the new lock adds
no deadlock. The function keeps the search_path it was created with: a writer whose own search_path differs
still moves this schema's epoch. SQLite runs one write transaction at a time; its triggers fire at once.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '9d2e6f1a4c83'
down_revision: str | Sequence[str] | None = 'f3b8d21c6a47'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("sources", "source_read_groups", "policy_versions")
OPERATIONS = ("INSERT", "UPDATE", "DELETE")
PG_TOKEN = "replace(gen_random_uuid()::text, '-', '')"
SQLITE_TOKEN = "lower(hex(randomblob(16)))"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'policy_epoch',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.Column('token', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_epoch')),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    token = PG_TOKEN if postgresql else SQLITE_TOKEN
    op.execute(f"INSERT INTO policy_epoch (id, n, token) VALUES (1, 0, {token})")
    bump = f"UPDATE policy_epoch SET n = n + 1, token = {token} WHERE id = 1"
    if postgresql:
        op.execute(
            "CREATE FUNCTION policy_epoch_bump() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS "
            f"$$ BEGIN {bump}; RETURN NULL; END $$"
        )
        for table in TABLES:
            op.execute(
                f"CREATE CONSTRAINT TRIGGER policy_epoch_{table} AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION policy_epoch_bump()"
            )
            # TRUNCATE has no row (so no deferred) triggers: this one takes the epoch row at once, in a
            # statement that already holds the table exclusively (an operator's, never the service's).
            op.execute(
                f"CREATE TRIGGER policy_epoch_{table}_truncate AFTER TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION policy_epoch_bump()"
            )
        return
    for table in TABLES:
        for operation in OPERATIONS:
            op.execute(
                f"CREATE TRIGGER policy_epoch_{table}_{operation.lower()} AFTER {operation} ON {table} "
                f"BEGIN {bump}; END"
            )


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER policy_epoch_{table}_truncate ON {table}")
            op.execute(f"DROP TRIGGER policy_epoch_{table} ON {table}")
        op.execute("DROP FUNCTION policy_epoch_bump()")
    else:
        for table in TABLES:
            for operation in OPERATIONS:
                op.execute(f"DROP TRIGGER policy_epoch_{table}_{operation.lower()}")
    op.drop_table('policy_epoch')
