"""waits without their index by contact

``ix_waits_contact`` served the batch loader's read of a contact's waits and a merge's
re-pointing of them. A wait belongs to a run in flight, and both find those runs first (by
``ix_runs_contact_live``), so they now reach the waits by run id, the primary key. The
index cost a b-tree insert for every wait made and a delete for every wait resumed, at
random places: deleting 200,000 due waits out of 1,000,000 took about a tenth less time
without it (bench/bench_resume.py; bench/README.md, "Seventh round").

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 11:00:00.000000

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.drop_index('ix_waits_contact', table_name='waits')


def downgrade() -> None:
    """Downgrade schema."""
    op.create_index('ix_waits_contact', 'waits', ['contact_id'], unique=False)
