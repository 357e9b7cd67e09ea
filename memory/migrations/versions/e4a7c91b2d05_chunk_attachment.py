"""chunk attachment: the email attachment a chunk was parsed from, for citations

Revision ID: e4a7c91b2d05
Revises: 8c4f2d7e1a60
Create Date: 2026-11-26 00:30:00.000000

`chunks.attachment` (nullable): the safe file name of the email attachment a chunk comes from; NULL for the
message body and for every other kind of file. Chunks stored before this revision keep NULL: their
attachment was not recorded (an unchanged message is not stored again).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'e4a7c91b2d05'
down_revision: str | Sequence[str] | None = '8c4f2d7e1a60'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attachment', sa.Text(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('chunks', schema=None) as batch_op:
        batch_op.drop_column('attachment')
