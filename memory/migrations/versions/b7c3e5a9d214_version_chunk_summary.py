"""version chunk summary: the highest label and any personal data among a version's chunks

Revision ID: b7c3e5a9d214
Revises: 9d2e6f1a4c83
Create Date: 2026-11-27 12:15:00.000000

`document_versions.max_label` (nullable: no chunk) and `document_versions.has_personal` summarise the
version's chunks, which never change once stored. A search reads them with its hits' rows: a caller the policy
would not show every chunk of a version in clear (a neighbour masked or withheld) gets no measure of the
version's whole clear text (its hash, the chunks' offsets). Existing versions are filled from their chunks
here.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'b7c3e5a9d214'
down_revision: str | Sequence[str] | None = '9d2e6f1a4c83'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('document_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_label', sa.Integer(), nullable=True))
        # A plain string default, as in f3b8d21c6a47: SQLite adds the column in place.
        batch_op.add_column(sa.Column('has_personal', sa.Boolean(), server_default='0', nullable=False))
    op.execute(
        "UPDATE document_versions SET "
        "max_label = (SELECT max(chunks.label) FROM chunks WHERE chunks.version_id = document_versions.id), "
        "has_personal = EXISTS (SELECT 1 FROM chunks WHERE chunks.version_id = document_versions.id "
        "AND chunks.personal)"
    )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('document_versions', schema=None) as batch_op:
        batch_op.drop_column('has_personal')
        batch_op.drop_column('max_label')
