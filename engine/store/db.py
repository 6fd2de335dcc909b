"""Database binding shared by the API and the engine.

One `DatabaseProxy` is bound at start-up from a URL, so every model works on
SQLite (the embedded default) and on PostgreSQL (several boxes, one database)
alike. Nothing in the code may assume SQLite.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

DEFAULT_URL = "sqlite:///switchdesk.db"

db = peewee.DatabaseProxy()

# WAL lets the API read while the engine writes; a short busy timeout keeps a
# blocked writer from stalling the gevent loop for long (writes are kept short).
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "synchronous": "normal",
    "busy_timeout": 5000,
    "cache_size": -16000,
    # the write-ahead log file is cut back to this when it restarts: a large import or batch must not leave
    # a file of its size behind for good (SQLite only ever reuses the file otherwise)
    "journal_size_limit": 64 * 1024 * 1024,
    # SQLite's temporary files stay in memory: a call event's savepoint inside a batch journals more than 64 KiB
    # of pages now and then, which otherwise spilled to a new file in /var/tmp (access, open, unlink, writes:
    # about once a call at 20 calls/s), and a sandboxed unit may have no writable /var/tmp at all
    "temp_store": "memory",
}


def make_database(url: str, *, command_line: bool = False, shared: bool = False,
                  background_checkpoints: bool = False) -> peewee.Database:
    """Build (but do not open) the database named by `url`.

    `command_line`: a process of its own beside a running `serve`. Its SQLite transactions take the
    write lock when they begin: a deferred one that reads and then writes gets "database is locked" at
    once (not after the busy timeout) when serve wrote in between. The server keeps deferred
    transactions, so its readers never wait on the event loop. `shared`: one of the processes of
    `serve --workers N`, which all write: the same immediate transactions, for the same reason.
    `background_checkpoints`: no commit checkpoints the write-ahead log (`serve` has
    engine.store.checkpoint do it off the event loop).
    """
    parsed = urlparse(url)
    scheme = parsed.scheme
    if scheme == "sqlite":
        # sqlite:///relative.db, sqlite:////abs/path.db, sqlite:///:memory:
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else parsed.path
        if not path:
            raise ValueError(f"no database file in {url!r}")
        return PooledSqliteDatabase(
            path, pragmas={**SQLITE_PRAGMAS, **({"wal_autocheckpoint": 0} if background_checkpoints else {})},
            max_connections=64, stale_timeout=300, timeout=POOL_WAIT,
            check_same_thread=False, lock_type="IMMEDIATE" if command_line or shared else None,
        )
    if scheme in ("postgres", "postgresql"):
        return PooledPostgresqlDatabase(
            url.replace("postgres://", "postgresql://", 1),
            max_connections=32, stale_timeout=300, timeout=POOL_WAIT, prefer_psycopg3=True,
        )
    raise ValueError(f"unsupported database URL scheme {scheme!r} (use sqlite:/// or postgresql://)")


# With every pooled connection in use, a request waits this long for one to come back (woken when
# one does) instead of failing at once: 50 keep-alive clients on PostgreSQL's 32 got 500s.
POOL_WAIT = 30


def bind(url: str, *, command_line: bool = False, shared: bool = False,
         background_checkpoints: bool = False) -> peewee.Database:
    """Bind the global proxy to the database at `url` (see make_database) and return it."""
    database = make_database(url, command_line=command_line, shared=shared,
                             background_checkpoints=background_checkpoints)
    db.initialize(database)
    return database


def is_sqlite() -> bool:
    return isinstance(db.obj, peewee.SqliteDatabase)


class JSONField(peewee.TextField):
    """JSON stored as text: portable between SQLite and PostgreSQL, returned exactly as stored."""

    def db_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def python_value(self, value: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        # Most stored lists and maps are empty: skip the parser for them (every request loads a few users).
        if value == "[]":
            return []
        if value == "{}":
            return {}
        return json.loads(value)


@contextlib.contextmanager
def connection() -> Iterator[None]:
    """A connection for the engine's greenlets, closed after only if opened here.

    Unlike `connection_context()`, it never closes a connection another holder
    still uses: without gevent's monkey-patching (tests, tools) every greenlet
    shares one thread's connection state.
    """
    opened = db.is_closed()
    if opened:
        db.connect()
    try:
        yield
    finally:
        if opened and not db.is_closed() and not db.in_transaction():
            db.close()
