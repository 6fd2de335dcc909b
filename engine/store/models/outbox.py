"""The durable outbox of push events (DESIGN.md: `emit` writes in the caller's transaction)."""
from __future__ import annotations

import peewee

from engine.store.db import JSONField
from engine.store.models.account import Account
from engine.store.models.base import AccountScoped, BaseModel, now


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
    # The account's own number of the event (1, 2, 3, ... per account, no gaps), given by the deliverer
    # holding the account's lease just before the event's first attempt, in `seq` order; sent with the
    # event so a receiver can restore the account's order (engine.events.delivery). None until then,
    # and for events never sent (skipped).
    account_seq = peewee.BigIntegerField(null=True)

    class Meta:
        indexes = ((("account", "status", "seq"), False),)


class WebhookLease(BaseModel):
    """Which deliverer sends an account's events until `until` (epoch seconds).

    Several switchdesk processes may share one database: the lease makes one
    of them the account's only sender at a time, which keeps per-account order
    and avoids double delivery. A crashed holder's lease simply runs out.
    """

    account = peewee.ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    owner = peewee.CharField(max_length=64)
    until = peewee.IntegerField()
    last_seq = peewee.BigIntegerField(default=0)  # the last `OutboxEvent.account_seq` given out for the account
