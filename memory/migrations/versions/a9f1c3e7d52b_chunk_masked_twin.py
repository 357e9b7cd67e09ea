"""chunk masked twin: the point id of a personal chunk's masked-text vector

Revision ID: a9f1c3e7d52b
Revises: c2e8f4b6a913
Create Date: 2026-11-28 10:00:00.000000

`chunks.masked_point_id` (nullable, unique index): the vector point holding the embedding of the chunk's masked
text, which a caller who reads the chunk masked is searched on (docs/operations.md, "What a masked hit still
tells its caller"). Chunks stored before this revision keep NULL: their personal chunks are not served to
masked callers until `memory backfill-twins` embeds and stores their twins (fail closed).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'a9f1c3e7d52b'
down_revision: str | Sequence[str] | None = 'c2e8f4b6a913'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('masked_point_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_chunks_masked_point_id'), ['masked_point_id'], unique=True)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_chunks_masked_point_id'))
        batch_op.drop_column('masked_point_id')
