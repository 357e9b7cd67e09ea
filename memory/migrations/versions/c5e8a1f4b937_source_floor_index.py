"""source floor index: the sources above a caller's clearance by an index seek

Revision ID: c5e8a1f4b937
Revises: d4f7a2c9e815
Create Date: 2026-11-29 10:20:00.000000

`ix_sources_floor` on `sources (floor)`: a search whose caller reads more sources than the plan's limit is
filtered on the vectors' read groups and labels, and leaves out the sources whose floor is above its caller's
clearance (a floor raised before the relabel reaches the stored labels: memory.readable_sources.floors_above).
"""
from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = 'c5e8a1f4b937'
down_revision: str | Sequence[str] | None = 'd4f7a2c9e815'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(op.f('ix_sources_floor'), 'sources', ['floor'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_sources_floor'), table_name='sources')
