"""runs indexed by what is in flight, and by last entry

``ix_runs_contact_state`` and ``ix_runs_workflow_state`` held every run, finished or not,
and a run that finished moved inside both (its state is in the key): a resumed wait cost
two index deletes and two inserts at random places, and a run that ended in the wake that
started it (most scoring runs) two inserts. Only runs in flight are ever looked up by
state, and they are few, so partial indexes on ``ended_at IS NULL`` hold just them: a run
that finishes leaves them, and one that ends at once never enters them. Re-entry rules
read each contact's last entry per workflow; ``ix_runs_contact_entries`` answers that
from the index alone (bench/bench_resume.py, bench/bench_ingest.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 04:00:00.000000

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

IN_FLIGHT = sa.text('ended_at IS NULL')


def upgrade() -> None:
    """Upgrade schema."""
    op.drop_index('ix_runs_contact_state', table_name='runs')
    op.drop_index('ix_runs_workflow_state', table_name='runs')
    op.create_index(
        'ix_runs_contact_live',
        'runs',
        ['contact_id', 'state'],
        sqlite_where=IN_FLIGHT,
        postgresql_where=IN_FLIGHT,
    )
    op.create_index(
        'ix_runs_workflow_live',
        'runs',
        ['workflow_id', 'state'],
        sqlite_where=IN_FLIGHT,
        postgresql_where=IN_FLIGHT,
    )
    op.create_index(
        'ix_runs_contact_entries', 'runs', ['contact_id', 'workflow_id', 'entered_at']
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_runs_contact_entries', table_name='runs')
    op.drop_index('ix_runs_workflow_live', table_name='runs')
    op.drop_index('ix_runs_contact_live', table_name='runs')
    op.create_index('ix_runs_workflow_state', 'runs', ['workflow_id', 'state'])
    op.create_index('ix_runs_contact_state', 'runs', ['contact_id', 'state'])
