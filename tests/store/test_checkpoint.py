"""SQLite's write-ahead log checkpointed off the event loop (engine.store.checkpoint).

`serve`'s connections never checkpoint in a commit (on the loop, with an fsync); its checkpointer does,
in gevent's threadpool, and the log stays as small as the writes between two checkpoints.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from engine.store import db
from engine.store.checkpoint import Checkpointer

ROW = "x" * 2000


def _write(database, rows: int) -> None:
    with database.connection_context():
        database.execute_sql("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, data TEXT)")
        for start in range(0, rows, 100):
            with database.atomic():
                for _ in range(min(100, rows - start)):
                    database.execute_sql("INSERT INTO filler (data) VALUES (?)", (ROW,))


def _wal(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_serve_connections_leave_checkpoints_to_the_checkpointer(tmp_path):
    path = tmp_path / "sd.db"
    database = db.make_database(f"sqlite:///{path}", background_checkpoints=True)
    with database.connection_context():
        assert database.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    plain = db.make_database(f"sqlite:///{tmp_path / 'cli.db'}", command_line=True)
    with plain.connection_context():  # command-line tools keep SQLite's own
        assert plain.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000

    _write(database, 3000)  # ~6 MB: past the 1,000 pages (4 MB) where a commit would have checkpointed
    assert _wal(path) > 5_000_000  # so no commit did
    checkpointer = Checkpointer(str(path))
    busy, frames, done = checkpointer.run_once()
    assert busy == 0 and frames > 1000 and done == frames
    grown = _wal(path)
    for _ in range(5):  # the log restarts from its beginning: it no longer grows
        _write(database, 200)
        assert checkpointer.run_once()[2] < 300
    assert _wal(path) == grown
    # never on the loop's thread
    assert checkpointer.threads and threading.get_ident() not in checkpointer.threads
    checkpointer.stop()
    database.close_all()


def test_the_greenlet_checkpoints_every_interval(tmp_path):
    path = tmp_path / "sd.db"
    database = db.make_database(f"sqlite:///{path}", background_checkpoints=True)
    _write(database, 50)
    checkpointer = Checkpointer(str(path), every=0.05).start()
    try:
        import gevent

        gevent.sleep(0.5)
        assert checkpointer.checkpoints >= 3 and checkpointer.last[1] == checkpointer.last[2]
    finally:
        checkpointer.stop()
        database.close_all()


def test_a_failing_checkpoint_is_said_once_and_retried(tmp_path, caplog):
    checkpointer = Checkpointer(str(tmp_path / "no" / "such" / "folder" / "sd.db"))
    with caplog.at_level(logging.WARNING, logger="switchdesk"):
        assert checkpointer.run_once() is None
        assert checkpointer.run_once() is None
    assert caplog.text.count("SQLite checkpoint of") == 1 and checkpointer.checkpoints == 0
    checkpointer.stop()


def test_the_log_file_is_cut_back_after_a_large_write(tmp_path, monkeypatch):
    """journal_size_limit: once checkpointed and restarted, a log grown by one large batch is truncated."""
    monkeypatch.setitem(db.SQLITE_PRAGMAS, "journal_size_limit", 1024 * 1024)
    path = tmp_path / "sd.db"
    database = db.make_database(f"sqlite:///{path}", background_checkpoints=True)
    _write(database, 3000)
    assert _wal(path) > 5_000_000
    checkpointer = Checkpointer(str(path))
    checkpointer.run_once()
    _write(database, 10)  # the log restarts: cut back to the limit
    assert _wal(path) <= 1024 * 1024
    checkpointer.stop()
    database.close_all()
