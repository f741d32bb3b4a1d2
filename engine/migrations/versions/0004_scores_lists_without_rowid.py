"""scores and list_members as WITHOUT ROWID tables on SQLite

Both tables are keyed by a pair of strings, so SQLite kept each twice: the rows by rowid,
and an automatic index on the key pointing at them. Every key lookup read the index and
then the table, and every insert or delete of a list membership changed three b-trees.
Stored in their key's b-tree instead (``WITHOUT ROWID``), a lookup is one search and a
membership change touches two. A decay tick over a million scores (50,000 top-3 account
roll-ups through the key, 9,890 band moves) went from 4.58-5.44 s to 4.42-4.62 s
(bench/bench_decay.py). PostgreSQL has no rowids: nothing changes there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 03:00:00.000000

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

TABLES = ('scores', 'list_members')


def _rebuild(with_rowid: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    for table in TABLES:
        # Batch mode copies the table into a new one made with these options, rows and
        # indexes included, then swaps the names.
        with op.batch_alter_table(
            table, recreate='always', table_kwargs={'sqlite_with_rowid': with_rowid}
        ):
            pass


def upgrade() -> None:
    """Upgrade schema."""
    _rebuild(with_rowid=False)


def downgrade() -> None:
    """Downgrade schema."""
    _rebuild(with_rowid=True)
