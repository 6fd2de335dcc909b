"""The API's service for pushed events: one event of the account, and its redelivery.

What the API may do to an account's outbox changes with the API, apart from
how the deliverer sends (`engine.events.delivery`), which only notices a
redelivered event through the commit announcement.
"""
from __future__ import annotations

import time

from engine.errors import ServiceError
from engine.events import outbox as events
from engine.events.outbox import PENDING
from engine.store.db import db
from engine.store.models import OutboxEvent


def get_event(account_id: int, event_id: str) -> OutboxEvent:
    event = OutboxEvent.of(account_id).where(OutboxEvent.id == event_id).first()
    if event is None:
        raise ServiceError(404, f"Event {event_id} not found")
    return event


def redeliver(account_id: int, event_id: str) -> OutboxEvent:
    """Queue the event again now: pending, attempts reset.

    It keeps its `id` (receivers that already have it drop it), its `ts` and
    its `seq`, so it goes out before the account's later pending events; the
    24 hours of retries still count from `ts`, so an older event gets one
    attempt.
    """
    with db.atomic():
        event = get_event(account_id, event_id)
        now = int(time.time())
        OutboxEvent.update(status=PENDING, attempts=0, next_attempt=now, last_error=None, delivered_at=None).where(
            OutboxEvent.seq == event.seq).execute()
        db.after_commit(lambda: events.announce(account_id))
    return get_event(account_id, event_id)
