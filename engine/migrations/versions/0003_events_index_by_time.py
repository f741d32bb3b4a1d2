"""events indexed by contact, then time, then name

``ix_events_contact_name_ts`` (contact, name, time) made the decay's "no engagement in
the last 30 days" test one seek per engagement name and score: 7 seeks per score for the
shipped sales-ready model, most of the tick's quiet check. Ordered by time before name,
the index answers it with one seek per score that reads only the contact's events of
the window, which a quiet contact has few of (bench/bench_decay.py). The runner's
per-contact event counts (``count_events``: one name, a time window) read the contact's
events of the window and keep the matching name, from the index alone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 02:15:00.000000

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(
            'ix_events_contact_ts_name', ['contact_id', 'timestamp', 'name'], unique=False
        )
        batch_op.drop_index('ix_events_contact_name_ts')


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(
            'ix_events_contact_name_ts', ['contact_id', 'name', 'timestamp'], unique=False
        )
        batch_op.drop_index('ix_events_contact_ts_name')
