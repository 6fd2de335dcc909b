"""emit() records events in the caller's transaction: committed with the change, or not at all."""
from __future__ import annotations

import pytest

from engine.events.outbox import emit
from engine.store.db import db
from engine.store.models import OutboxEvent, User


def test_emit_outside_transaction_refused(tenant):
    with pytest.raises(RuntimeError):
        emit(tenant.account_id, "agent:checkout", {"user_id": tenant.admin_id})


def test_unknown_event_refused(tenant):
    with db.atomic(), pytest.raises(ValueError):
        emit(tenant.account_id, "agent:dance", {})


def test_event_commits_with_change(tenant):
    with db.atomic():
        User.update(is_agent=True).where(User.id == tenant.admin_id).execute()
        event = emit(tenant.account_id, "agent:checkout", {"user_id": tenant.admin_id})
    stored = OutboxEvent.get(OutboxEvent.id == event.id)
    assert stored.data == {"user_id": tenant.admin_id} and stored.status == "pending"
    assert (stored.seq, stored.account_id, stored.ts, stored.attempts) == (event.seq, tenant.account_id, event.ts, 0)
    assert len(stored.id) == 36


def test_event_rolls_back_with_change(tenant):
    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.atomic():
        User.update(is_agent=True).where(User.id == tenant.admin_id).execute()
        emit(tenant.account_id, "agent:checkout", {"user_id": tenant.admin_id})
        raise Boom
    assert OutboxEvent.select().count() == 0
    assert User.get_by_id(tenant.admin_id).is_agent is False


def test_the_recorded_event_is_the_row(tenant):
    """emit() builds its OutboxEvent without peewee's constructor: it must equal the row as read back."""
    with db.atomic():
        event = emit(tenant.account_id, "call:ring", {"call_id": "c1", "n": [1, "é"]}, ts=1700000000)
    row = OutboxEvent.get(OutboxEvent.seq == event.seq)
    for field in OutboxEvent._meta.sorted_fields:
        assert getattr(event, field.name) == getattr(row, field.name), field.name
    assert event.account_id == tenant.account_id and event.data == {"call_id": "c1", "n": [1, "é"]}
