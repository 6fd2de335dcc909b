"""The durable outbox of push events (DESIGN.md: `emit` writes in the caller's transaction)."""
from __future__ import annotations

import peewee

from engine.db import JSONField
from engine.models.account import Account
from engine.models.base import AccountScoped, now


class OutboxEvent(AccountScoped):
    """One push event; `id` is stable across retries so receivers can drop duplicates."""

    seq = peewee.BigAutoField()
    id = peewee.CharField(max_length=36, unique=True)
    account = peewee.ForeignKeyField(Account, backref="events", on_delete="CASCADE")
    event = peewee.CharField(max_length=40)
    ts = peewee.IntegerField(default=now)
    data = JSONField()
    status = peewee.CharField(max_length=12, default="pending", index=True)
    attempts = peewee.IntegerField(default=0)
    next_attempt = peewee.IntegerField(default=now)
    last_error = peewee.TextField(null=True)
    delivered_at = peewee.IntegerField(null=True)

    class Meta:
        indexes = ((("account", "status", "seq"), False),)
