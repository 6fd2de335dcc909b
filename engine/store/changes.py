"""Configuration-changed notifications: the one place the engine hooks to follow the API's writes.

A listener learns that something of a `kind` changed for an account and
re-reads the database itself, so it must only hear of a change once it is
committed: services collect their changes in a `Pending` while the
transaction runs and send them after `with db.atomic()` has exited.

Kinds and their ids:

* `queue`   — queue ids created, updated or deleted;
* `tier`    — user ids whose queue membership (tiers) changed;
* `account` — the account id, when its settings changed;
* `agent`   — user ids whose runtime state changed (engine.callcenter.agents: check-in, pause, wrap-up,
  joined tiers): push the agent (contact, status, ready_time, wrap_up_time) and its tiers;
* `device`, `extension`, `did` — ids created, updated or deleted (engine.directory); `user` — user ids
  deleted (their devices lose their user, their numbers go); `routing` — user ids whose call routing
  changed (follow-me, voicemail box, caller-ID overrides, intercept groups);
* `media`, `voicemail` — media and voicemail box ids created, changed or deleted (engine.media,
  engine.voicemail). `routing`, `media` and `voicemail` concern only the xml_curl answers.

Besides the engine, the in-memory views of the call path (engine.directory.views) listen: they may
only keep anything while this process hears every box's changes, which `hearing_epoch` tells.

On PostgreSQL several boxes share the database (DESIGN.md, Scale-out) and the
account a change is for may be served by another box: `notify` also sends it
with NOTIFY on `CHANNEL`, and engine.store.pgnotify hands what other processes sent
to this process's listeners. The periodic full sync remains the safety net.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import peewee

from engine.store.db import connection, db

log = logging.getLogger("switchdesk.changes")

Listener = Callable[[str, int, list[int]], None]

_listeners: list[Listener] = []

CHANNEL = "switchdesk_changes"
# tells a process its own notifications apart from other processes' (several pooled connections per process)
ORIGIN = uuid.uuid4().hex
MAX_PAYLOAD = 7900  # PostgreSQL refuses a payload of 8000 bytes or more; leave a margin


_hearing: set[object] = set()  # engine.store.pgnotify listeners of this process that LISTEN right now
_hearing_epoch = 0
_hearing_callbacks: list[Callable[[], None]] = []


def hearing(listener: object, on: bool) -> None:
    """engine.store.pgnotify: `listener` started (or stopped) hearing other processes' changes."""
    global _hearing_epoch
    if on:
        _hearing.add(listener)
    else:
        _hearing.discard(listener)
    _hearing_epoch += 1
    for callback in list(_hearing_callbacks):
        try:
            callback()
        except Exception:
            log.exception("hearing callback %r failed", callback)


def on_hearing(callback: Callable[[], None]) -> None:
    """Call `callback()` whenever `hearing_epoch()` changes (what a cache kept may be stale)."""
    if callback not in _hearing_callbacks:
        _hearing_callbacks.append(callback)


def unhear(callback: Callable[[], None]) -> None:
    if callback in _hearing_callbacks:
        _hearing_callbacks.remove(callback)


_others_write = False


def others_write(on: bool) -> None:
    """Other processes commit to this database (engine.workers on SQLite too): what a cache keeps is only
    current while this process hears them (`hearing_epoch`)."""
    global _others_write
    _others_write = on


def must_hear() -> bool:
    """Whether a cache of what the database holds may only be used while `hearing_epoch()` is not None."""
    return _others_write or isinstance(db.obj, peewee.PostgresqlDatabase)


def hearing_epoch() -> int | None:
    """None while no listener of this process hears other processes' changes; else a number that
    changes whenever one starts or stops (changes may have been missed in between)."""
    return _hearing_epoch if _hearing else None


def listen(listener: Listener) -> None:
    """Register `listener(kind, account_id, ids)`; registering the same function twice is a no-op."""
    if listener not in _listeners:
        _listeners.append(listener)


def unlisten(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def notify(kind: str, account_id: int, ids: list[int]) -> None:
    """Tell every listener, on PostgreSQL other processes' too; only after the commit, so a
    listener never reads uncommitted state.

    A failing listener is logged and does not fail the request: the change is
    already committed and the engine reconciles on its own after a reconnect.
    """
    if db.obj is not None and db.obj.in_transaction():
        raise RuntimeError("changes.notify() must run after the transaction commits")
    if not ids:
        return
    deliver(kind, account_id, ids)
    if isinstance(db.obj, peewee.PostgresqlDatabase):
        _publish(kind, account_id, ids)


def deliver(kind: str, account_id: int, ids: list[int]) -> None:
    """This process's listeners only: for what another process already committed and sent (engine.store.pgnotify)."""
    for listener in list(_listeners):
        try:
            listener(kind, account_id, list(ids))
        except Exception:
            log.exception("change listener %r failed for %s %s", listener, kind, ids)


def _publish(kind: str, account_id: int, ids: list[int]) -> None:
    """NOTIFY the other processes; outside a transaction (peewee runs in autocommit) it is sent at once.

    A failure is logged, never raised: the change is committed and the request
    must succeed; the serving box picks the change up at its next full sync.
    """
    messages = list(payloads(kind, account_id, ids))
    sql = "SELECT " + ", ".join(["pg_notify(%s, %s)"] * len(messages))
    params = [value for message in messages for value in (CHANNEL, message)]
    try:
        with connection():
            db.execute_sql(sql, params)
    except Exception:
        log.exception("NOTIFY of %s %s for account %s failed; other boxes see it at their next full sync",
                      kind, ids if len(ids) <= 20 else f"{len(ids)} ids", account_id)


def payloads(kind: str, account_id: int, ids: list[int], limit: int = MAX_PAYLOAD) -> Iterator[str]:
    """JSON payloads of at most `limit` bytes, the ids split between as many as needed.

    All but the last carry `"more": true`, so the listener hands the list over
    whole: the pieces leave in one statement, hence in order and together.
    """
    room = limit - len(_payload(kind, account_id, [], more=True).encode())
    chunks: list[list[int]] = [[]]
    size = 0
    for value in ids:
        width = len(str(value)) + (1 if chunks[-1] else 0)  # the comma before it
        if chunks[-1] and size + width > room:
            chunks.append([])
            size, width = 0, width - 1
        chunks[-1].append(value)
        size += width
    for index, chunk in enumerate(chunks):
        yield _payload(kind, account_id, chunk, more=index < len(chunks) - 1)


def _payload(kind: str, account_id: int, ids: list[int], *, more: bool = False) -> str:
    data: dict[str, Any] = {"origin": ORIGIN, "kind": kind, "account_id": account_id, "ids": ids}
    if more:
        data["more"] = True
    return json.dumps(data, separators=(",", ":"))


def parse_payload(text: str) -> tuple[str, str, int, list[int], bool] | None:
    """(origin, kind, account_id, ids, more) of a payload `payloads` made, None for anything else."""
    try:
        data: Any = json.loads(text)
        origin, kind, account_id, ids = data["origin"], data["kind"], data["account_id"], data["ids"]
        more = data.get("more", False)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not (isinstance(origin, str) and isinstance(kind, str) and type(account_id) is int
            and isinstance(ids, list) and all(type(i) is int for i in ids) and isinstance(more, bool)):
        return None
    return origin, kind, account_id, ids, more


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
