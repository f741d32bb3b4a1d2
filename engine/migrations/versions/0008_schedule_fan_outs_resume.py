"""a schedule's fan-out records how far it got, so a failed one is finished

A cron fire was claimed in one transaction and its contacts entered in chunks of their
own afterwards: a worker that died, or a chunk that failed, lost the rest of that fire for
good (the claim said it was taken). ``done_through`` is the last contact id whose chunk
committed, ``finished`` whether all did, and ``lease_until`` how long the worker holding
it may take: an unfinished fire whose lease ran out is taken over and finished from there.
Fires made before this revision count as finished.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 05:40:00.000000

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # plain ALTER TABLE ... ADD COLUMN, which SQLite has: a batch (copy the table) adding
    # the three at once failed now and then, its column order computed from a set
    op.add_column('schedule_fires', sa.Column('done_through', sa.String(length=320)))
    op.add_column(
        'schedule_fires',
        sa.Column('finished', sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column('schedule_fires', sa.Column('lease_until', sa.DateTime(timezone=True)))


def downgrade() -> None:
    """Downgrade schema."""
    for column in ('lease_until', 'finished', 'done_through'):  # one batch each, as above
        with op.batch_alter_table('schedule_fires', schema=None) as batch_op:
            batch_op.drop_column(column)
