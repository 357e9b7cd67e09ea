"""source consent purposes: what the data subjects of a consent-gated source consented to

Revision ID: 8c4f2d7e1a60
Revises: 5b1e0c3a9f27
Create Date: 2026-11-25 17:45:00.000000

`sources.consent_purposes` (existing rows: none, so a source that already requires consent serves its
personal data to no purpose until its steward records some: fail closed); an index on the consent flag,
which every search reads; `access_requests.purpose` (the purpose a consent request asks to be added).
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = '8c4f2d7e1a60'
down_revision: str | Sequence[str] | None = '5b1e0c3a9f27'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('sources', schema=None) as batch_op:
        # A plain string default: SQLite adds the column in place (an expression default would make Alembic
        # rebuild the table, and dropping `sources` fails while other tables reference it).
        batch_op.add_column(sa.Column('consent_purposes', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.create_index(batch_op.f('ix_sources_personal_data_requires_consent'),
                              ['personal_data_requires_consent'], unique=False)
    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purpose', sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('access_requests', schema=None) as batch_op:
        batch_op.drop_column('purpose')
    with op.batch_alter_table('sources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sources_personal_data_requires_consent'))
        batch_op.drop_column('consent_purposes')
