"""runs keep the order they were made in, on PostgreSQL too

A contact's runs in flight are loaded, and stepped through, in the order they were made
(two runs waiting for one event resume in that order, and what the first changes the
second sees). SQLite keeps that order as the rowid. PostgreSQL has no such thing and
handed the rows back in whatever order its plan read them, so the same history could end
differently there. ``runs.seq`` is that order on PostgreSQL: a sequence fills it as rows
go in, and the runs already in flight get it by entry moment. On SQLite the column stays
NULL (the rowid is the order).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 00:45:00.000000

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('runs', sa.Column('seq', sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute('CREATE SEQUENCE runs_seq OWNED BY runs.seq')
    # only runs in flight are ever loaded in order; finished ones keep NULL
    op.execute(
        "UPDATE runs SET seq = live.n FROM ("
        " SELECT id, row_number() OVER (ORDER BY entered_at, id) AS n"
        " FROM runs WHERE ended_at IS NULL) AS live"
        " WHERE runs.id = live.id"
    )
    op.execute("SELECT setval('runs_seq', COALESCE((SELECT max(seq) FROM runs), 0) + 1, false)")
    op.execute("ALTER TABLE runs ALTER COLUMN seq SET DEFAULT nextval('runs_seq')")


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('runs', 'seq')  # on PostgreSQL the sequence it owns goes with it
