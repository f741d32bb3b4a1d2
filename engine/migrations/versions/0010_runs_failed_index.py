"""failed runs counted per workflow

``leadflow workflows`` listed active runs only: a workflow whose runs all failed (an
unknown template, a webhook body that does not render) looked idle. Counting its failed
runs from the runs table would read every finished run; ``ix_runs_workflow_failed`` holds
just the failed ones, which are few, and a run that ends any other way never enters it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 08:10:00.000000

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FAILED = sa.text("state = 'failed'")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        'ix_runs_workflow_failed',
        'runs',
        ['workflow_id'],
        sqlite_where=FAILED,
        postgresql_where=FAILED,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_runs_workflow_failed', table_name='runs')
