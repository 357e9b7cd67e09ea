"""policy epoch: a counter every committed change to what a search plan reads moves

Revision ID: 9d2e6f1a4c83
Revises: f3b8d21c6a47
Create Date: 2026-11-27 10:00:00.000000

`policy_epoch` holds one row. Triggers on `sources`, `source_read_groups` and `policy_versions` add one to it for
every row inserted, updated or deleted, whatever writes it (the services, a migration, an operator's SQL), so a
process may keep what a search plan read from those tables while the counter stays the same
(memory.policy_cache). On PostgreSQL the triggers are deferred to commit: every writer then takes the epoch row
last, after the source rows and the audit head it locks while it runs (tests/memory/test_lock_order.py), so
the new lock adds no deadlock. SQLite runs one write transaction at a time; its triggers fire at once.
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
BUMP = "UPDATE policy_epoch SET n = n + 1 WHERE id = 1"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'policy_epoch',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_epoch')),
    )
    op.execute("INSERT INTO policy_epoch (id, n) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION policy_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
        for table in TABLES:
            op.execute(
                f"CREATE CONSTRAINT TRIGGER policy_epoch_{table} AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION policy_epoch_bump()"
            )
            # TRUNCATE has no row triggers; it already holds the table exclusively.
            op.execute(
                f"CREATE TRIGGER policy_epoch_{table}_truncate AFTER TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION policy_epoch_bump()"
            )
        return
    for table in TABLES:
        for operation in OPERATIONS:
            op.execute(
                f"CREATE TRIGGER policy_epoch_{table}_{operation.lower()} AFTER {operation} ON {table} "
                f"BEGIN {BUMP}; END"
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
