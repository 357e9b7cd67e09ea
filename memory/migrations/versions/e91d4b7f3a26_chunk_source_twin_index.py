"""chunk source twin index: a source's masked twins by an index seek

Revision ID: e91d4b7f3a26
Revises: a9f1c3e7d52b
Create Date: 2026-11-27 18:20:00.000000

`ix_chunks_source_masked_point` on `chunks (source_id, masked_point_id)`: the access repair
(`memory.sources.settle_access`) samples one masked twin of every source on each run, which without it walks a
source's chunks until it meets a personal one.
"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'e91d4b7f3a26'
down_revision: str | Sequence[str] | None = 'a9f1c3e7d52b'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index('ix_chunks_source_masked_point', 'chunks', ['source_id', 'masked_point_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_chunks_source_masked_point', table_name='chunks')
