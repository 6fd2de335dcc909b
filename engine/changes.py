"""Configuration-changed notifications: the one place the engine hooks to follow the API's writes.

A listener learns that something of a `kind` changed for an account and
re-reads the database itself, so it must only hear of a change once it is
committed: services collect their changes in a `Pending` while the
transaction runs and send them after `with db.atomic()` has exited.

Kinds and their ids:

* `queue`   — queue ids created, updated or deleted;
* `tier`    — user ids whose queue membership (tiers) changed;
* `account` — the account id, when its settings changed;
* `agent`   — user ids whose runtime state changed (engine.agents: check-in, pause, wrap-up,
  joined tiers): push the agent (contact, status, ready_time, wrap_up_time) and its tiers.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from engine.db import db

log = logging.getLogger("switchdesk.changes")

Listener = Callable[[str, int, list[int]], None]

_listeners: list[Listener] = []


def listen(listener: Listener) -> None:
    """Register `listener(kind, account_id, ids)`; registering the same function twice is a no-op."""
    if listener not in _listeners:
        _listeners.append(listener)


def unlisten(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def notify(kind: str, account_id: int, ids: list[int]) -> None:
    """Tell every listener; only after the commit, so a listener never reads uncommitted state.

    A failing listener is logged and does not fail the request: the change is
    already committed and the engine reconciles on its own after a reconnect.
    """
    if db.obj is not None and db.obj.in_transaction():
        raise RuntimeError("changes.notify() must run after the transaction commits")
    if not ids:
        return
    for listener in list(_listeners):
        try:
            listener(kind, account_id, list(ids))
        except Exception:
            log.exception("change listener %r failed for %s %s", listener, kind, ids)


class Pending:
    """Changes collected inside a transaction, sent once it has committed."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, int], set[int]] = {}

    def add(self, kind: str, account_id: int, ids: list[int] | set[int]) -> None:
        self._items.setdefault((kind, account_id), set()).update(ids)

    def send(self) -> None:
        items, self._items = self._items, {}
        for (kind, account_id), ids in items.items():
            notify(kind, account_id, sorted(ids))
