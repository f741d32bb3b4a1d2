"""an unsubscribed address stays unsubscribed, whichever contact holds it

Unsubscribing set ``UNSUBSCRIBED`` on the contact of the link. Another contact with the
same address (a CRM import by id beside web events by email, never merged) was still
written to. ``suppressed_addresses`` keeps each address unsubscribed through a link or a
one-click request; delivery checks it for every email. A later double opt-in confirmation
by that address lifts it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 06:05:00.000000

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'suppressed_addresses',
        sa.Column('channel', sa.String(length=20), nullable=False),
        sa.Column('address', sa.String(length=320), nullable=False),
        sa.Column('contact_id', sa.String(length=320), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('reason', sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint('channel', 'address'),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('suppressed_addresses')
