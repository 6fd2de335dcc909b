"""Push events: recorded in the outbox inside the caller's transaction.

Writing the event in the same transaction as the state change that causes it
is what makes delivery lossless: either both are committed or neither is.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from engine.store.db import db, is_sqlite
from engine.store.fastq import json_text
from engine.store.models import OutboxEvent, now

# The documented event names (vendor doc, Events).
EVENT_NAMES = frozenset({
    "agent:checkin", "agent:checkout", "agent:status", "queue:join", "queue:leave",
    "call:start", "call:ring", "call:answer", "call:end",
})

CALL_EVENTS = frozenset({"call:start", "call:ring", "call:answer", "call:end"})

# An event's delivery status (engine.events.delivery): `pending` (waiting or retrying), `delivered` (2xx),
# `failed` (refused for good, or 24 hours of retries), `skipped` (no Event Push URL when its turn came).
PENDING, DELIVERED, FAILED, SKIPPED = "pending", "delivered", "failed", "skipped"
STATUSES = (PENDING, DELIVERED, FAILED, SKIPPED)

# Told the account id once a transaction that recorded its event has committed: the webhook
# deliverer's wake-up, so a new event goes out at once instead of at the next poll.
_commit_listeners: list[Callable[[int], None]] = []


def on_commit(listener: Callable[[int], None]) -> Callable[[], None]:
    """Register `listener` (it must not block); returns the function that removes it."""
    _commit_listeners.append(listener)
    return lambda: _commit_listeners.remove(listener) if listener in _commit_listeners else None


# Told every event as it is recorded, inside its transaction (engine.stats follows agent:status this way, so
# its figures commit or roll back with the state change that the event reports). Must not block.
_emit_listeners: list[Callable[[int, str, dict[str, Any], int], None]] = []


def on_emit(listener: Callable[[int, str, dict[str, Any], int], None]) -> Callable[[], None]:
    """Register `listener(account_id, event, data, ts)`; returns the function that removes it."""
    _emit_listeners.append(listener)
    return lambda: _emit_listeners.remove(listener) if listener in _emit_listeners else None


def announce(account_id: int) -> None:
    """Tell the listeners that `account_id` has new pending events (call after the commit)."""
    for listener in list(_commit_listeners):
        listener(account_id)


def emit(account_id: int, event: str, data: dict[str, Any], *, ts: int | None = None) -> OutboxEvent:
    """Record `event` for delivery to the account's webhook.

    Must be called inside the transaction of the change it reports.
    """
    if event not in EVENT_NAMES:
        raise ValueError(f"unknown event {event!r}")
    if not db.obj.in_transaction():
        raise RuntimeError("emit() must run inside the transaction of the change it reports")
    at = now()
    # call:* payloads are the call fields (text, ints, null; no floats): msgspec gives the field's exact text
    text = json_text(data) if event in CALL_EVENTS else OutboxEvent.data.db_value(data)
    values = (str(uuid.uuid4()), account_id, event, ts or at, text, PENDING, 0, at)
    cursor = db.obj.execute_sql(_insert_sql(), values)
    seq = cursor.lastrowid if is_sqlite() else cursor.fetchone()[0]
    # What OutboxEvent(seq=..., ...) gives, without peewee's setattr per field (a tenth of this function)
    recorded = OutboxEvent.__new__(OutboxEvent)
    recorded.__data__ = {"seq": seq, "id": values[0], "account": account_id, "event": event, "ts": values[3],
                         "data": data, "status": PENDING, "attempts": 0, "next_attempt": at, "last_error": None,
                         "delivered_at": None}
    recorded._dirty = set(recorded.__data__)
    recorded.__rel__ = {}
    for listener in _emit_listeners:
        listener(account_id, event, data, values[3])
    if _commit_listeners:
        db.after_commit(lambda: announce(account_id))
    return recorded


_INSERT_COLUMNS = ("id", "account", "event", "ts", "data", "status", "attempts", "next_attempt")
_insert_cache: dict[tuple, str] = {}


def _insert_sql() -> str:
    """The outbox INSERT, its text built once per database: peewee would build it anew for every event
    (about a quarter of a millisecond, more than the insert itself costs the process)."""
    key = (type(db.obj), db.obj.param)
    sql = _insert_cache.get(key)
    if sql is None:
        columns = ", ".join(f'"{OutboxEvent._meta.fields[name].column_name}"' for name in _INSERT_COLUMNS)
        marks = ", ".join([db.obj.param] * len(_INSERT_COLUMNS))
        # names from the model definition only; every value is a bound parameter
        sql = f'INSERT INTO "{OutboxEvent._meta.table_name}" ({columns}) VALUES ({marks})'  # noqa: S608
        if not is_sqlite():
            sql += ' RETURNING "seq"'
        sql = _insert_cache[key] = sql
    return sql
