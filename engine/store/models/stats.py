"""Statistics: the live part (callers in queues, each agent's activity) and the 15-minute history.

The live rows are what FreeSWITCH reported, kept so that a restart of switchdesk
resumes where it was; after FreeSWITCH was unreachable they are rebuilt from its
own lists (engine.stats.live). The interval rows are counters that each event
adds to (INSERT ... ON CONFLICT DO UPDATE), so "today" and every report are sums
over them; they are kept a year by default (engine.stats.history).
"""
from __future__ import annotations

import peewee

from engine.store.models.account import Account, User
from engine.store.models.base import AccountScoped, now
from engine.store.models.callcenter import Queue

INTERVAL = 900  # seconds: the history's 15 minutes, aligned on the epoch (so on every zone's quarter hours)


class QueueMember(AccountScoped):
    """A caller in a queue now (mod_callcenter's member), from member-queue-start to member-queue-end.

    Its existence is what makes each event count once: member-queue-start counts the offer only when it
    inserts the row, bridge-agent-start the answer only when it sets `answered_at`, member-queue-end the
    outcome only when it deletes the row."""

    uuid = peewee.CharField(max_length=64, primary_key=True)  # CC-Member-UUID
    account = peewee.ForeignKeyField(Account, backref="queue_members", on_delete="CASCADE")
    queue = peewee.ForeignKeyField(Queue, backref="members", on_delete="CASCADE")
    session_uuid = peewee.CharField(max_length=64, default="")
    joined_at = peewee.IntegerField()
    answered_at = peewee.IntegerField(null=True)
    agent_id = peewee.IntegerField(null=True)  # the user that answered
    fs_host = peewee.CharField(max_length=255, default="")

    class Meta:
        indexes = ((("queue", "joined_at"), False),)


class AgentActivity(AccountScoped):
    """An agent's activity now and since when: the open segment whose seconds go to the history when it
    ends. `activity` is one of engine.stats.agents.ACTIVITIES."""

    user = peewee.ForeignKeyField(User, primary_key=True, backref="activity", on_delete="CASCADE")
    account = peewee.ForeignKeyField(Account, backref="agent_activities", on_delete="CASCADE")
    activity = peewee.CharField(max_length=16, default="checked_out")
    since = peewee.IntegerField(default=now)
    pause_id = peewee.IntegerField(null=True)
    checked_in_since = peewee.IntegerField(null=True)
    queue_id = peewee.IntegerField(null=True)  # the queue of the agent's last queue call (its wrap-up counts there)


class _QueueCounters(AccountScoped):
    """A queue's counters over some span (QueueInterval: 15 minutes; QueueDay: a local day): the same columns,
    added to by the same statements (engine.stats.counters). Not a table of its own."""

    offered = peewee.IntegerField(default=0)
    answered = peewee.IntegerField(default=0)
    answered_sla = peewee.IntegerField(default=0)  # answered within the queue's sla_answer_time
    abandoned = peewee.IntegerField(default=0)  # the caller hung up before an agent answered (short ones too)
    short_abandoned = peewee.IntegerField(default=0)  # of those, within the short-abandon threshold
    timed_out = peewee.IntegerField(default=0)  # sent on by the queue (max wait, no agent, exit key)
    lost = peewee.IntegerField(default=0)  # left while switchdesk could not hear; outcome unknown
    wait_sum = peewee.BigIntegerField(default=0)  # seconds waited by answered calls
    wait_max = peewee.IntegerField(default=0)  # longest wait of any call that left the queue
    abandon_wait_sum = peewee.BigIntegerField(default=0)
    talk_sum = peewee.BigIntegerField(default=0)
    talk_count = peewee.IntegerField(default=0)
    wrapup_sum = peewee.BigIntegerField(default=0)
    wrapup_count = peewee.IntegerField(default=0)


class _AgentCounters(AccountScoped):
    """An agent's counters and seconds per activity over some span (AgentInterval, AgentDay). Not a table."""

    offered = peewee.IntegerField(default=0)  # queue calls that rang the agent
    answered = peewee.IntegerField(default=0)
    missed = peewee.IntegerField(default=0)  # rang and not answered (the caller hanging up first is not a miss)
    checked_in_sec = peewee.IntegerField(default=0)
    available_sec = peewee.IntegerField(default=0)
    ringing_sec = peewee.IntegerField(default=0)
    talk_sec = peewee.IntegerField(default=0)
    wrapup_sec = peewee.IntegerField(default=0)
    pause_sec = peewee.IntegerField(default=0)


class _PauseSeconds(AccountScoped):
    """Seconds an agent spent paused with one reason over some span (AgentPauseInterval, AgentPauseDay)."""

    pause_id = peewee.IntegerField()
    seconds = peewee.IntegerField(default=0)


class QueueInterval(_QueueCounters):
    """A queue's counters for one 15-minute interval. Calls count in the interval they joined the queue in."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="queue_intervals", on_delete="CASCADE")
    queue = peewee.ForeignKeyField(Queue, backref="intervals", on_delete="CASCADE")
    start = peewee.IntegerField()  # epoch seconds, a multiple of INTERVAL

    class Meta:
        indexes = ((("queue", "start"), True), (("account", "start"), False))


class AgentInterval(_AgentCounters):
    """An agent's counters and seconds per activity for one 15-minute interval."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="agent_intervals", on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, backref="intervals", on_delete="CASCADE")
    start = peewee.IntegerField()

    class Meta:
        indexes = ((("user", "start"), True), (("account", "start"), False))


class AgentPauseInterval(_PauseSeconds):
    """Seconds an agent spent paused with one reason in one 15-minute interval."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="agent_pause_intervals", on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, backref="pause_intervals", on_delete="CASCADE")
    start = peewee.IntegerField()

    class Meta:
        indexes = ((("user", "start", "pause_id"), True), (("account", "start"), False))


class WallboardLink(AccountScoped):
    """A read-only link for a TV: a random token (stored as its SHA-256) scoped to an account and
    optionally to queues or labels. Revoking sets `revoked_at`; the row stays for the audit."""
    label = "Wallboard link"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="wallboard_links", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    token_hash = peewee.CharField(max_length=64, unique=True)
    queue_ids = peewee.TextField(default="[]")  # JSON list; empty: every queue
    labels = peewee.TextField(default="[]")  # JSON list; empty: no label filter
    created_by = peewee.IntegerField(null=True)
    created_at = peewee.IntegerField(default=now)
    revoked_at = peewee.IntegerField(null=True)
    last_used_at = peewee.IntegerField(null=True)


class QueueDay(_QueueCounters):
    """A queue's counters for one local day of its account's time zone (`day`: days since 1970-01-01),
    kept with the 15-minute rows in the same statements, so reports by day, week and month read a few
    thousand rows for a year. Rebuilt from the 15-minute rows when the account's time zone changes."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="queue_days", on_delete="CASCADE")
    queue = peewee.ForeignKeyField(Queue, backref="days", on_delete="CASCADE")
    day = peewee.IntegerField()

    class Meta:
        indexes = ((("queue", "day"), True), (("account", "day"), False))


class AgentDay(_AgentCounters):
    """An agent's counters for one local day (see QueueDay)."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="agent_days", on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, backref="days", on_delete="CASCADE")
    day = peewee.IntegerField()

    class Meta:
        indexes = ((("user", "day"), True), (("account", "day"), False))


class AgentPauseDay(_PauseSeconds):
    """Seconds an agent spent paused with one reason in one local day (see QueueDay)."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="agent_pause_days", on_delete="CASCADE")
    user = peewee.ForeignKeyField(User, backref="pause_days", on_delete="CASCADE")
    day = peewee.IntegerField()

    class Meta:
        indexes = ((("user", "day", "pause_id"), True), (("account", "day"), False))


class StatsZone(AccountScoped):
    """The time zone the account's day rows were built in: when Account.timezone differs (changed), the
    day rows are rebuilt from the 15-minute rows (engine.stats.days)."""

    account = peewee.ForeignKeyField(Account, primary_key=True, backref="stats_zone", on_delete="CASCADE")
    timezone = peewee.CharField(max_length=64)
