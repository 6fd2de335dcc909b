"""SQLite's temporary files (statement journals, sorts, temporary tables) are kept in memory (SQLITE_PRAGMAS)."""
from __future__ import annotations

import os
from pathlib import Path

from engine.store import db


def _temp_files() -> list[str]:
    """The process's open files that SQLite made as temporary files (opened, then unlinked at once)."""
    names = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            names.append(os.readlink(fd))
        except OSError:
            continue
    return [name for name in names if "etilqs_" in name]


def test_a_large_savepoint_journal_opens_no_file(tmp_path):
    database = db.make_database(f"sqlite:///{tmp_path / 'sd.db'}", background_checkpoints=True)
    with database.connection_context():
        assert database.execute_sql("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
        database.execute_sql("CREATE TABLE filler (id INTEGER PRIMARY KEY, data TEXT)")
        with database.atomic():
            database.execute_sql("INSERT INTO filler (data) SELECT printf('%.2000c', 'x') FROM "
                                 "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
                                 "SELECT i FROM n)")
        with database.atomic():  # a savepoint that changes ~100 pages written before it: > 64 KiB of journal
            raw = database.connection()
            raw.execute('SAVEPOINT "callevent"')
            raw.execute("UPDATE filler SET data = printf('%.2000c', 'y')")
            assert _temp_files() == []
            raw.execute('RELEASE SAVEPOINT "callevent"')
