"""drop ix_scores_name_value

A decay tick rewrites ``value`` on nearly every row of ``scores``, and with this index it
rewrote an index entry per row too (about two thirds of the tick's UPDATE on SQLite,
bench/bench_decay.py). No query needs scores in value order: segment sorts by score sort
the joined rows anyway, and the account roll-ups start from the account's members
(``ix_contacts_account_id``, then the primary key), which SQLite only does when this index
is not there to tempt it into walking every score of the name.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 22:40:00.000000

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.drop_index('ix_scores_name_value')


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.create_index('ix_scores_name_value', ['name', 'value'], unique=False)
