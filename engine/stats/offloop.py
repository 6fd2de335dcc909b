"""Heavy reads of the statistics (reports, the day-row rebuild) off the event loop.

The pooled peewee database is the event loop's: its pool and per-connection state use gevent's
patched locks, which must not be taken from another OS thread. So on SQLite a heavy read runs in
gevent's thread pool on a raw read-only `sqlite3` connection of its own (the sqlite3 module lets go of
the GIL while SQLite works, and the loop keeps serving calls and streams); the queries are still built
by peewee — only their text and parameters cross over. On PostgreSQL the server does the work and the
reads stay on the loop through peewee.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import gevent
import peewee

from engine.store.db import db, is_sqlite

Fetch = Callable[[peewee.Query], list[tuple]]


def on_loop(query: peewee.Query) -> list[tuple]:
    """The rows of `query` through the bound (pooled) database."""
    return list(query.tuples())


def run(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args, fetch=...)`, where `fetch(query)` gives a query's rows as tuples (see the docstring)."""
    if not is_sqlite():
        return fn(*args, fetch=on_loop)
    path = db.obj.database

    def in_thread() -> Any:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, check_same_thread=True)
        try:
            return fn(*args, fetch=lambda query: conn.execute(*query.sql()).fetchall())
        finally:
            conn.close()

    return gevent.get_hub().threadpool.apply(in_thread)
