"""Who is watching an account's figures: the SSE streams wait here, the writers ring after their commit.

In-process only and cheap: a version number and a gevent Event per watched account.
A writer calls `touch(account_id)` once its transaction has committed; a stream
waits on `wait(account_id, version, timeout)` holding no database connection.
Figures changed by another process (another box on PostgreSQL) are picked up by
the streams' periodic refresh (api.stats.REFRESH).
"""
from __future__ import annotations

import threading

import gevent.event

_versions: dict[int, int] = {}
_events: dict[int, gevent.event.Event] = {}
_lock = threading.Lock()


def version(account_id: int) -> int:
    return _versions.get(account_id, 0)


def touch(account_id: int) -> None:
    """The account's figures changed (call after the commit)."""
    with _lock:
        _versions[account_id] = _versions.get(account_id, 0) + 1
        event = _events.pop(account_id, None)
    if event is not None:
        event.set()


def wait(account_id: int, seen: int, timeout: float) -> int:
    """Wait until the account's version differs from `seen` (or `timeout`); returns the version now."""
    with _lock:
        current = _versions.get(account_id, 0)
        if current != seen:
            return current
        event = _events.get(account_id)
        if event is None:
            event = _events[account_id] = gevent.event.Event()
    event.wait(timeout)
    return _versions.get(account_id, 0)
