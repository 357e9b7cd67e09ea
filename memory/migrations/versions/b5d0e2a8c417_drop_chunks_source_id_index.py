"""drop ix_chunks_source_id: a prefix of ix_chunks_source_masked_point

Revision ID: b5d0e2a8c417
Revises: e91d4b7f3a26
Create Date: 2026-11-27 21:40:00.000000

`ix_chunks_source_masked_point` (`chunks (source_id, masked_point_id)`, e91d4b7f3a26) serves every lookup by
`source_id` alone as well (its first column), on SQLite and PostgreSQL alike, so the single-column index was
one more B-tree written on every chunk insert and delete for nothing.
"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'b5d0e2a8c417'
down_revision: str | Sequence[str] | None = 'e91d4b7f3a26'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.drop_index('ix_chunks_source_id', table_name='chunks')


def downgrade() -> None:
    """Downgrade schema."""
    op.create_index('ix_chunks_source_id', 'chunks', ['source_id'], unique=False)
