"""jobs scope: one queued or running job per kind and scope, not per kind

Revision ID: a7e3c1d9f204
Revises: c5e8a1f4b937
Create Date: 2026-11-29 12:50:00.000000

`jobs.scope` names what a job works on: `*` (every source) or `source:<id>`. The partial unique index that allows
one queued or running job now holds per (kind, scope): a steward's new floor relabels its own source in the
background without taking the one relabel slot every other source and the admins' runs share. Runs of different
scopes side by side are safe (memory.relabel locks what each batch changes), only wasteful. Existing rows are `*`.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'a7e3c1d9f204'
down_revision: str | Sequence[str] | None = 'c5e8a1f4b937'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('jobs', sa.Column('scope', sa.String(length=160), server_default='*', nullable=False))
    op.drop_index('uq_jobs_active_kind', table_name='jobs', sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
    op.create_index('uq_jobs_active_scope', 'jobs', ['kind', 'scope'], unique=True, sqlite_where=_ACTIVE,
                    postgresql_where=_ACTIVE)


def downgrade() -> None:
    """Downgrade schema (fails while two jobs of one kind are queued or running: let them end first)."""
    op.drop_index('uq_jobs_active_scope', table_name='jobs', sqlite_where=_ACTIVE, postgresql_where=_ACTIVE)
    op.create_index('uq_jobs_active_kind', 'jobs', ['kind'], unique=True, sqlite_where=_ACTIVE,
                    postgresql_where=_ACTIVE)
    op.drop_column('jobs', 'scope')
