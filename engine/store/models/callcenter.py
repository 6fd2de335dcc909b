"""Call-center configuration: queues, tiers (queue membership), devices, extensions,
pause reasons and time groups. The engine pushes these to FreeSWITCH."""
from __future__ import annotations

import peewee

from engine.store.db import JSONField
from engine.store.models.account import Account, User
from engine.store.models.base import AccountScoped, now


class TimeGroup(AccountScoped):
    """A weekly schedule in an IANA zone plus dated exceptions (see engine.callcenter.timegroups)."""
    label = "Time group"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="timegroups", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    timezone = peewee.CharField(max_length=64, default="UTC")
    ranges = JSONField(default=list)
    exceptions = JSONField(default=list)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "name"), True),)


class PauseReason(AccountScoped):
    """A pause id for setPause; `max_duration` seconds (0: none) ends it by timer.

    `system` marks the reserved reason the engine records for mod_callcenter's
    own On Break (max-no-answer); clients cannot pick or delete it.
    """
    label = "Pause reason"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="pause_reasons", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    max_duration = peewee.IntegerField(default=0)
    system = peewee.BooleanField(default=False)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "name"), True),)


class Queue(AccountScoped):
    label = "Queue"
    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="queues", on_delete="CASCADE")
    site_id = peewee.IntegerField(null=True)
    name = peewee.CharField(max_length=200)
    tv_name = peewee.CharField(max_length=100, null=True)
    strategy = peewee.CharField(max_length=40, default="longest-idle-agent")
    record = peewee.IntegerField(default=0)
    time_base_score = peewee.CharField(max_length=10, default="system")
    max_wait_time = peewee.IntegerField(default=0)
    max_wait_time_with_no_agent = peewee.IntegerField(default=0)
    max_wait_time_with_no_agent_time_reached = peewee.IntegerField(default=5)
    tier_rules_apply = peewee.BooleanField(default=False)
    tier_rule_wait_second = peewee.IntegerField(default=300)
    tier_rule_no_agent_no_wait = peewee.BooleanField(default=False)
    discard_abandoned_after = peewee.IntegerField(default=60)
    abandoned_resume_allowed = peewee.BooleanField(default=False)
    tier_rule_wait_multiply_level = peewee.BooleanField(default=True)
    announce_id = peewee.IntegerField(null=True)
    announce_frequency = peewee.IntegerField(default=0)
    moh_id = peewee.IntegerField(null=True)
    sla_strategy = peewee.IntegerField(default=0)
    sla_answer_time = peewee.IntegerField(default=0)
    auto_answer = peewee.BooleanField(default=False)
    pre_bridge_announce = peewee.IntegerField(null=True)
    join_announce = peewee.IntegerField(null=True)
    exits = JSONField(default=dict)
    ring_timeout = peewee.IntegerField(default=0)
    background_color = peewee.CharField(max_length=64, null=True)
    font_color = peewee.CharField(max_length=64, null=True)
    labels = JSONField(default=list)
    avg_wait_range = peewee.IntegerField(default=0)
    audio_playback = JSONField(default=dict)
    music_advanced = peewee.BooleanField(default=False)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "name"), True),)


class Tier(AccountScoped):
    """An agent's membership of a queue: a mod_callcenter tier when `joined` and the time group is open.

    `mode` is a set of flags (DESIGN.md): 1 setQueues may join/leave it,
    2 joined automatically at check-in, 4 locked (joined whenever checked in).
    """

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="tiers", on_delete="CASCADE")
    queue = peewee.ForeignKeyField(Queue, backref="tiers", on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, backref="tiers", on_delete="CASCADE")
    mode = peewee.IntegerField(default=3)
    position = peewee.IntegerField(default=1)
    level = peewee.IntegerField(default=1)
    timegroup = peewee.ForeignKeyField(TimeGroup, null=True, backref="tiers", on_delete="RESTRICT")
    joined = peewee.BooleanField(default=False)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("queue", "user"), True), (("user",), False))


class Device(AccountScoped):
    """A SIP phone that registers with FreeSWITCH in the account's domain."""
    label = "Device"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="devices", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    sip_username = peewee.CharField(max_length=64)
    # FreeSWITCH a1-hash: md5("user:domain:password"); the password itself is never stored.
    sip_a1_hash = peewee.CharField(max_length=32)
    cid_num = peewee.CharField(max_length=32, null=True)
    cid_name = peewee.CharField(max_length=100, null=True)
    user = peewee.ForeignKeyField(User, null=True, backref="devices", on_delete="SET NULL")
    ring = peewee.IntegerField(default=0)
    delay = peewee.IntegerField(default=0)
    timeout = peewee.IntegerField(default=30)
    # registration status, filled by the engine from sofia::register/unregister/expire
    registered = peewee.BooleanField(default=False)
    reg_contact = peewee.CharField(max_length=500, null=True)
    reg_user_agent = peewee.CharField(max_length=300, null=True)
    reg_network_ip = peewee.CharField(max_length=64, null=True)
    reg_expires = peewee.IntegerField(null=True)
    reg_ts = peewee.IntegerField(null=True)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "sip_username"), True),)


class Extension(AccountScoped):
    """A number dialled inside the account that routes to a user, a device or a queue."""
    label = "Extension"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="extensions", on_delete="CASCADE")
    number = peewee.CharField(max_length=32)
    target_type = peewee.CharField(max_length=10)  # user | device | queue
    target_id = peewee.IntegerField()
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "number"), True), (("target_type", "target_id"), False))


class Did(AccountScoped):
    """An inbound number (DID) of the account that routes to a user or a queue."""
    label = "DID"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="dids", on_delete="CASCADE")
    number = peewee.CharField(max_length=32, unique=True)
    target_type = peewee.CharField(max_length=10)
    target_id = peewee.IntegerField()
    ts = peewee.IntegerField(default=now)
