"""Calls in progress, one row per FreeSWITCH leg, as the call events saw them.

ESL has no replay (DESIGN.md, Events across outages): after a reconnect or a
restart of switchdesk, the legs recorded here that FreeSWITCH no longer has get
their `call:end` reconstructed. The row outlives the leg for a while
(`ended_at` set) so that a repeated event cannot emit a second `call:end`.
"""
from __future__ import annotations

import peewee

from engine.store.db import JSONField
from engine.store.models.account import Account
from engine.store.models.base import AccountScoped


class ActiveCall(AccountScoped):
    """A leg: its FreeSWITCH Unique-ID, the call fields known so far and which events went out."""

    uuid = peewee.CharField(max_length=64, primary_key=True)
    account = peewee.ForeignKeyField(Account, backref="active_calls", on_delete="CASCADE")
    call_id = peewee.CharField(max_length=64, index=True)
    # FreeSWITCH-Hostname of the box that has the leg: only that box's channel list can end it
    fs_host = peewee.CharField(max_length=255, default="")
    seen_ms = peewee.BigIntegerField()  # when we first recorded it, epoch milliseconds
    data = JSONField(default=dict)  # the sticky call fields (everything but per-event timings)
    rang = peewee.BooleanField(default=False)
    answered = peewee.BooleanField(default=False)
    started = peewee.BooleanField(default=False)
    ended_at = peewee.IntegerField(null=True, index=True)
