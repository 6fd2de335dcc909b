"""Agent runtime state: check-ins, pauses, wrap-up deadlines and check-in codes.

This is the desired state the engine applies to mod_callcenter (DESIGN.md,
When FreeSWITCH is down): the API commits it here and answers at once; the
engine pushes it on change and again after every reconnect, so it survives a
restart of switchdesk or of FreeSWITCH. Timers (pause maximum, wrap-up end)
are deadlines stored as epoch seconds, so after a restart they resume with the
time that is left.
"""
from __future__ import annotations

import peewee

from engine.store.models.account import Account, User
from engine.store.models.base import AccountScoped, now
from engine.store.models.callcenter import Device, PauseReason


class AgentState(AccountScoped):
    """One row per agent that was ever checked in; absent means logged out and not paused."""

    user = peewee.ForeignKeyField(User, primary_key=True, backref="agent_state", on_delete="CASCADE")
    account = peewee.ForeignKeyField(Account, backref="agent_states", on_delete="CASCADE")
    device = peewee.ForeignKeyField(Device, null=True, unique=True, backref="agent_state", on_delete="SET NULL")
    checked_in_at = peewee.IntegerField(null=True)
    pause = peewee.ForeignKeyField(PauseReason, null=True, backref="agent_states", on_delete="SET NULL")
    pause_started = peewee.IntegerField(null=True)
    pause_until = peewee.IntegerField(null=True)  # null with a pause: open-ended
    snoozes = peewee.IntegerField(default=0)
    wrapup_until = peewee.IntegerField(null=True)
    # seconds=0 ends wrap-up now: wrap_up_time 0 is sent until the native window would have passed
    native_wrapup_suppressed_until = peewee.IntegerField(null=True)
    # what FreeSWITCH last told us (callcenter::info); real-time fields of the user
    fs_status = peewee.CharField(max_length=40, null=True)
    fs_state = peewee.CharField(max_length=40, null=True)
    last_bridge_end = peewee.IntegerField(null=True)
    # the activity_id last reported in agent:status, so each change is reported exactly once
    activity = peewee.IntegerField(default=0)
    ts = peewee.IntegerField(default=now)


class CheckinCode(AccountScoped):
    """A one-time `***NNNNNN` code: unique per account (hence per domain), single use, short-lived."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="checkin_codes", on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, backref="checkin_codes", on_delete="CASCADE")
    code = peewee.CharField(max_length=16)
    force_checkout = peewee.BooleanField(default=False)
    expires = peewee.IntegerField(index=True)
    used_at = peewee.IntegerField(null=True)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "code"), True),)


class CheckinFailure(AccountScoped):
    """Wrong codes dialled from a device, counted over a window to stop guessing."""

    device = peewee.ForeignKeyField(Device, primary_key=True, backref="checkin_failures", on_delete="CASCADE")
    account = peewee.ForeignKeyField(Account, backref="checkin_failures", on_delete="CASCADE")
    failures = peewee.IntegerField(default=0)
    first_failure = peewee.IntegerField(default=now)
