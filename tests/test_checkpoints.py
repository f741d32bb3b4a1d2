"""The worker's WAL checkpoints: off the writers' commits, copied back by their own thread."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, text

from engine.store.checkpoints import WAL_KEEP_BYTES, Checkpointer, is_sqlite_file
from engine.store.db import open_engine, writer


def _write_pages(engine: Engine, rows: int = 3000) -> None:
    """About 1,500 pages of 16 KiB: past SQLite's automatic checkpoint of 1,000 pages."""
    with writer(engine).begin() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS filler (id INTEGER, body TEXT)")
        connection.execute(
            text("INSERT INTO filler VALUES (:id, :body)"),
            [{"id": i, "body": "x" * 8000} for i in range(rows)],
        )


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _copied_back(path: Path) -> bool:
    """Whether the filler's pages (about 24 MB) are in the database file itself: until a
    checkpoint copies them back they live only in the log."""
    return path.stat().st_size > 20 * 1024 * 1024


def test_only_sqlite_files_get_a_checkpointer(tmp_path: Path) -> None:
    assert is_sqlite_file(open_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    assert not is_sqlite_file(open_engine("sqlite://"))


def test_installed_connections_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    engine = open_engine(f"sqlite:///{path}")
    try:
        checkpointer = Checkpointer(engine)
        checkpointer.install()
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            limit = connection.exec_driver_sql("PRAGMA journal_size_limit").scalar()
            assert limit == WAL_KEEP_BYTES
        _write_pages(engine)
        # The commit did not copy its pages back: they are all still in the log.
        assert _wal_bytes(path) > 1000 * 16384
        assert not _copied_back(path)
        copied = checkpointer.run()
        assert _copied_back(path)
        assert copied > 1000
        assert checkpointer.checkpoints == 1
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM filler").scalar() == 3000
    finally:
        engine.dispose()


def test_without_the_checkpointer_the_commit_copies_the_log_back(tmp_path: Path) -> None:
    """The behaviour the checkpointer takes away from the writers."""
    path = tmp_path / "store.db"
    engine = open_engine(f"sqlite:///{path}")
    try:
        _write_pages(engine)
        assert _copied_back(path)
    finally:
        engine.dispose()


def test_the_thread_checkpoints_while_writers_commit_and_once_more_on_stop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    engine = open_engine(f"sqlite:///{path}")
    try:
        checkpointer = Checkpointer(engine)
        checkpointer.start(0.05)
        _write_pages(engine)
        deadline = time.monotonic() + 10
        while not _copied_back(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _copied_back(path)  # by the thread: this commit did not
        before = checkpointer.checkpoints
        checkpointer.stop()
        assert checkpointer.checkpoints > before  # at least the last copy, on stop
        assert checkpointer._thread is None
    finally:
        engine.dispose()
