"""Call records (one per call, with its legs), recordings and how long each account keeps them.

Written by the call path (engine.calls.records, engine.calls.recordings) with SQL compiled once; read by
the API with filters on indexed columns. New tables: created from the models, no migration.
"""
from __future__ import annotations

import peewee

from engine.store.db import JSONField
from engine.store.models.account import Account
from engine.store.models.base import AccountScoped, BaseModel


class CallRecord(AccountScoped):
    """A finished call: written when its first leg (the one whose uuid is the `call_id`) ends."""

    label = "Call record"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="call_records", on_delete="CASCADE")
    call_id = peewee.CharField(max_length=64, unique=True)
    start_ts = peewee.IntegerField()  # epoch seconds the first leg was created
    answer_ts = peewee.IntegerField(null=True)
    end_ts = peewee.IntegerField()
    type = peewee.CharField(max_length=16, null=True)  # the call events' `type` (inbound, outbound, queue...)
    src_num = peewee.CharField(max_length=64, null=True)  # the caller's number (cid_num of the first leg)
    dst_num = peewee.CharField(max_length=64, null=True)
    src_user_id = peewee.IntegerField(null=True)
    dst_user_id = peewee.IntegerField(null=True)
    src_device_id = peewee.IntegerField(null=True)
    dst_device_id = peewee.IntegerField(null=True)
    queue_id = peewee.IntegerField(null=True)
    durationms = peewee.BigIntegerField(null=True)
    billms = peewee.BigIntegerField(null=True)
    hangup_cause = peewee.CharField(max_length=64, null=True)
    data = JSONField(default=dict)  # the first leg's call:end fields (README, Call events)

    class Meta:
        indexes = ((("account", "start_ts"), False), (("account", "id"), False), (("end_ts",), False))


class CallRecordLeg(BaseModel):
    """One FreeSWITCH leg of a finished call, written when the leg ends (before or after its call record)."""

    uuid = peewee.CharField(max_length=64, primary_key=True)
    account = peewee.ForeignKeyField(Account, backref="call_record_legs", on_delete="CASCADE")
    call_id = peewee.CharField(max_length=64, index=True)
    end_ts = peewee.IntegerField(index=True)
    data = JSONField(default=dict)  # the leg's call:end fields


class Recording(AccountScoped):
    """A WAV file FreeSWITCH writes into the recordings folder; offered once `state` is `complete`."""

    label = "Recording"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="recordings", on_delete="CASCADE")
    call_id = peewee.CharField(max_length=64, unique=True)  # one recording per call
    leg_uuid = peewee.CharField(max_length=64)  # the leg the media bug sits on
    path = peewee.CharField(max_length=300, unique=True)  # relative to the recordings folder, built from ids only
    fs_host = peewee.CharField(max_length=255, default="")  # the box that holds the file (DESIGN.md)
    state = peewee.CharField(max_length=16, default="starting")  # starting, recording, complete, failed
    paused = peewee.BooleanField(default=False)
    queue_id = peewee.IntegerField(null=True)
    user_id = peewee.IntegerField(null=True)  # the agent / our user on the call
    src_num = peewee.CharField(max_length=64, null=True)
    dst_num = peewee.CharField(max_length=64, null=True)
    started_at = peewee.IntegerField(index=True)
    ended_at = peewee.IntegerField(null=True)
    duration_ms = peewee.BigIntegerField(null=True)
    size = peewee.BigIntegerField(null=True)

    class Meta:
        indexes = ((("account", "started_at"), False),)


class RetentionSetting(BaseModel):
    """How many days an account keeps call records and recordings; null: the server's default."""

    account = peewee.ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    cdr_days = peewee.IntegerField(null=True)
    recording_days = peewee.IntegerField(null=True)
