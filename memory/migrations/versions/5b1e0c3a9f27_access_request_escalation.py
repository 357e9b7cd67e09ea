"""access request escalation: who escalated a request to admins, when and why

Revision ID: 5b1e0c3a9f27
Revises: d172decaa606
Create Date: 2026-11-25 17:30:00.000000

The new status value `escalated` needs no schema change (status is a plain string, no CHECK constraint).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '5b1e0c3a9f27'
down_revision: str | Sequence[str] | None = 'd172decaa606'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('escalated_by', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('escalation_note', sa.Text(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.drop_column('escalation_note')
        batch_op.drop_column('escalated_at')
        batch_op.drop_column('escalated_by')
