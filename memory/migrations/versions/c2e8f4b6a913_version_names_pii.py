"""version names pii: personal data found in the names shown beside a version's chunks

Revision ID: c2e8f4b6a913
Revises: b7c3e5a9d214
Create Date: 2026-11-27 12:40:00.000000

`document_versions.names_pii` (JSON, nullable): the spans of personal data the classifier found in the
version's file name and its attachments' names, so that a caller who gets its chunks masked gets those names
masked in citations too. Versions stored before are left NULL: their names were never classified, and
re-ingesting unchanged bytes makes no new version, so they stay so.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'c2e8f4b6a913'
down_revision: str | Sequence[str] | None = 'b7c3e5a9d214'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('document_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('names_pii', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('document_versions', schema=None) as batch_op:
        batch_op.drop_column('names_pii')
