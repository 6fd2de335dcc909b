"""Push events: recorded in the outbox inside the caller's transaction.

Writing the event in the same transaction as the state change that causes it
is what makes delivery lossless: either both are committed or neither is.
"""
from __future__ import annotations

import uuid
from typing import Any

from engine.db import db
from engine.models import OutboxEvent, now

# The documented event names (vendor doc, Events).
EVENT_NAMES = frozenset({
    "agent:checkin", "agent:checkout", "agent:status", "queue:join", "queue:leave",
    "call:start", "call:ring", "call:answer", "call:end",
})


def emit(account_id: int, event: str, data: dict[str, Any], *, ts: int | None = None) -> OutboxEvent:
    """Record `event` for delivery to the account's webhook.

    Must be called inside the transaction of the change it reports.
    """
    if event not in EVENT_NAMES:
        raise ValueError(f"unknown event {event!r}")
    if not db.obj.in_transaction():
        raise RuntimeError("emit() must run inside the transaction of the change it reports")
    return OutboxEvent.create(
        id=str(uuid.uuid4()), account=account_id, event=event, ts=ts or now(), data=data,
    )
