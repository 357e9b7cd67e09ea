"""source chunk summary: the highest label and any personal data ever stored in a source

Revision ID: f3b8d21c6a47
Revises: e4a7c91b2d05
Create Date: 2026-11-26 03:00:00.000000

`sources.max_label` (nullable: no chunk yet) and `sources.has_personal` summarise every chunk ever stored in
the source; ingestion raises them in the transaction that stores the chunks and nothing lowers them. A
search reads them to skip its withheld-count search when nothing its caller can read could be withheld.
Existing sources are filled from their chunks here.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'f3b8d21c6a47'
down_revision: str | Sequence[str] | None = 'e4a7c91b2d05'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_label', sa.Integer(), nullable=True))
        # A plain string default, as in 8c4f2d7e1a60: SQLite adds the column in place (an expression default
        # would make Alembic rebuild `sources`, which fails while other tables reference it).
        batch_op.add_column(sa.Column('has_personal', sa.Boolean(), server_default='0', nullable=False))
    op.execute(
        "UPDATE sources SET "
        "max_label = (SELECT max(chunks.label) FROM chunks WHERE chunks.source_id = sources.id), "
        "has_personal = EXISTS (SELECT 1 FROM chunks WHERE chunks.source_id = sources.id AND chunks.personal)"
    )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_column('has_personal')
        batch_op.drop_column('max_label')
