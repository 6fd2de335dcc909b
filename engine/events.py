"""Push events: recorded in the outbox inside the caller's transaction.

Writing the event in the same transaction as the state change that causes it
is what makes delivery lossless: either both are committed or neither is.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from engine.db import db
from engine.models import OutboxEvent, now

# The documented event names (vendor doc, Events).
EVENT_NAMES = frozenset({
    "agent:checkin", "agent:checkout", "agent:status", "queue:join", "queue:leave",
    "call:start", "call:ring", "call:answer", "call:end",
})

# Told the account id once a transaction that recorded its event has committed: the webhook
# deliverer's wake-up, so a new event goes out at once instead of at the next poll.
_commit_listeners: list[Callable[[int], None]] = []


def on_commit(listener: Callable[[int], None]) -> Callable[[], None]:
    """Register `listener` (it must not block); returns the function that removes it."""
    _commit_listeners.append(listener)
    return lambda: _commit_listeners.remove(listener) if listener in _commit_listeners else None


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
    recorded = OutboxEvent.create(
        id=str(uuid.uuid4()), account=account_id, event=event, ts=ts or now(), data=data,
    )
    if _commit_listeners:
        db.after_commit(lambda: announce(account_id))
    return recorded
