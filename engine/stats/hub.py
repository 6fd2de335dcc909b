"""Who is watching an account's figures: the SSE streams wait here, the writers ring after their commit.

In-process only and cheap: per watched account a version number, the recent changes (which queues and
agents each commit touched) and a gevent Event. A writer calls `touch(account_id, queues, agents)` once
its transaction has committed; a stream waits on `wait(account_id, version, timeout)` holding no
database connection, then asks `since()` what changed, so it re-reads only those queues and agents.
Figures changed by another box (on PostgreSQL) are picked up by the streams' periodic refresh
(api.stats.REFRESH); the processes of one `serve --workers N` tell each other (engine.workers.hub).
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable

import gevent.event

KEEP = 2000  # changes remembered per account; a stream further behind re-reads everything

_versions: dict[int, int] = {}
_events: dict[int, gevent.event.Event] = {}
_log: dict[int, collections.deque] = {}
_lock = threading.Lock()
# told of every touch after it is made (engine.workers.hub: the other processes' streams hear it too)
_touch_listeners: list[Callable[[int, Iterable[int] | None, Iterable[int] | None], None]] = []


def on_touch(listener: Callable[[int, Iterable[int] | None, Iterable[int] | None], None]) -> None:
    """Register `listener(account_id, queues, agents)`; it must not block."""
    if listener not in _touch_listeners:
        _touch_listeners.append(listener)


def unhear_touch(listener: Callable[[int, Iterable[int] | None, Iterable[int] | None], None]) -> None:
    if listener in _touch_listeners:
        _touch_listeners.remove(listener)


def version(account_id: int) -> int:
    return _versions.get(account_id, 0)


def touch(account_id: int, queues: Iterable[int] | None = None, agents: Iterable[int] | None = None) -> None:
    """The account's figures changed (call after the commit): these queues and agents; None for either
    means "any" (a rebuild)."""
    queues = None if queues is None else frozenset(queues)
    agents = None if agents is None else frozenset(agents)
    with _lock:
        current = _versions[account_id] = _versions.get(account_id, 0) + 1
        log = _log.get(account_id)
        if log is None:
            log = _log[account_id] = collections.deque(maxlen=KEEP)
        log.append((current, queues, agents))
        event = _events.pop(account_id, None)
    if event is not None:
        event.set()
    for listener in list(_touch_listeners):
        listener(account_id, queues, agents)


def since(account_id: int, seen: int) -> tuple[int, set[int] | None, set[int] | None]:
    """The version now, and the queues and agents changed after version `seen` (None: any, or too far
    behind to know)."""
    with _lock:
        log = _log.get(account_id)
        current = _versions.get(account_id, 0)
        if current == seen:
            return current, set(), set()
        if not log or log[0][0] > seen + 1:
            return current, None, None
        queues: set[int] | None = set()
        agents: set[int] | None = set()
        for number, q, a in log:
            if number <= seen:
                continue
            queues = None if queues is None or q is None else queues | q
            agents = None if agents is None or a is None else agents | a
        return current, queues, agents


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
