"""version retraction indexes: the latest retractions and restores by an index scan

Revision ID: c8e1f5a3b692
Revises: b5d0e2a8c417
Create Date: 2026-11-27 22:00:00.000000

Partial indexes on `document_versions (retracted_at)` and `(restored_at)`, each over the rows where it is set:
every repair run reads the most recent retractions and restores to check their vectors
(`memory.vector_sync.settle_retractions`); most versions are neither, so the indexes stay small and an ingest
writes no entry in them.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'c8e1f5a3b692'
down_revision: str | Sequence[str] | None = 'b5d0e2a8c417'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    for column in ('retracted_at', 'restored_at'):
        where = sa.text(f'{column} IS NOT NULL')
        op.create_index(f'ix_versions_{column}', 'document_versions', [column], unique=False,
                        sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    """Downgrade schema."""
    for column in ('retracted_at', 'restored_at'):
        op.drop_index(f'ix_versions_{column}', table_name='document_versions')
