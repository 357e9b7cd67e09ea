"""jobs: long maintenance runs started in the background (a relabel), their state readable from any replica

Revision ID: d4f7a2c9e815
Revises: c8e1f5a3b692
Create Date: 2026-11-28 09:40:00.000000

One row per job: kind, status, parameters, who asked, progress, result or error, heartbeat (a runner that stopped
is told from one that runs by it), and a cancellation request any replica can set. A partial unique index allows
one queued or running job per kind (memory.jobs).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'd4f7a2c9e815'
down_revision: str | Sequence[str] | None = 'c8e1f5a3b692'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('jobs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('requested_by', sa.String(length=128), nullable=False),
    sa.Column('acting_for', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), server_default='0', nullable=False),
    sa.Column('progress', sa.JSON(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('uq_jobs_active_kind', 'jobs', ['kind'], unique=True, sqlite_where=_ACTIVE,
                    postgresql_where=_ACTIVE)
    op.create_index('ix_jobs_created_at', 'jobs', ['created_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_jobs_created_at', table_name='jobs')
    op.drop_index('uq_jobs_active_kind', table_name='jobs')
    op.drop_table('jobs')
