"""Queue calls for the statistics, from mod_callcenter's callcenter::info events.

* member-queue-start: a caller joined a queue — offered (counted once: only the event that inserts its
  QueueMember row counts it);
* agent-offering / bridge-agent-fail: an agent was rung / did not answer (missed, unless the caller
  hung up first: ORIGINATOR_CANCEL);
* bridge-agent-start: answered, with its wait (CC-Agent-Answered-Time - CC-Member-Joined-Time), within
  the queue's `sla_answer_time` or not;
* bridge-agent-end: the talk time (CC-Bridge-Terminated-Time - CC-Agent-Answered-Time);
* member-queue-end without an answer: CC-Cause Cancel with CC-Cancel-Reason BREAK_OUT or NONE is the
  caller hanging up — abandoned (a short abandon when it waited less than SHORT_ABANDON seconds);
  any other end (TIMEOUT, NO_AGENT_TIMEOUT, EXIT_WITH_KEY) is `timed_out`.

A call counts in the 15-minute interval it joined the queue in, so every figure of an interval refers to
the same calls (the service level of 10:00-10:15 is that of the calls that came in then).
Handlers run on the ESL dispatcher; each is a few statements compiled once (fastq).
"""
from __future__ import annotations

import os
from typing import Any

from engine.callcenter import fsconfig
from engine.directory import views
from engine.stats import agents, counters, hub
from engine.store import fastq
from engine.store.db import connection, db
from engine.store.models import Queue, QueueMember, now

# Abandons after less than this many seconds are counted apart (short_abandoned): a caller who hangs up
# at once is rarely one the call center could have served.
SHORT_ABANDON = int(os.environ.get("SWITCHDESK_SHORT_ABANDON", "5") or 5)
ABANDON_REASONS = frozenset({"BREAK_OUT", "NONE", ""})


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str(event: Any, name: str) -> str:
    value = event.get(name)
    if isinstance(value, list):
        value = value[0] if value else ""
    return (value or "").strip()


def queue_of(name: str) -> tuple[int, int] | None:
    """(account id, queue id) of a mod_callcenter queue name `<queue_id>@<domain>` of ours, else None."""
    parsed = fsconfig.parse_name(name)
    if parsed is None:
        return None
    account = views.account_by_domain(parsed[1])
    if account is None or views.queue(account.id, parsed[0]) is None:
        return None
    return account.id, parsed[0]


def agent_of(name: str, account_id: int) -> int | None:
    parsed = fsconfig.parse_name(name)
    if parsed is None:
        return None
    account = views.account_by_domain(parsed[1])
    return parsed[0] if account is not None and account.id == account_id else None


def sla_answer_time(queue_id: int) -> int:
    rows = fastq.select("stats.sla_time", lambda q: Queue.select(Queue.sla_answer_time).where(Queue.id == q), queue_id)
    return rows[0][0] or 0 if rows else 0


def _member(uuid: str) -> QueueMember | None:
    rows = fastq.select("stats.member", lambda u: QueueMember.select().where(QueueMember.uuid == u), uuid)
    return fastq.make(QueueMember, rows[0]) if rows else None


# --- counting, shared by the event handlers and the rebuild after an outage (engine.stats.live) ---


def joined(account_id: int, queue_id: int, uuid: str, session_uuid: str, joined_at: int, fs_host: str = "") -> bool:
    """A caller joined: True (and offered counted) when it was not known yet."""
    sql, _ = fastq.compiled("stats.member_add", lambda: QueueMember.insert({
        QueueMember.uuid: "", QueueMember.account: 0, QueueMember.queue: 0, QueueMember.session_uuid: "",
        QueueMember.joined_at: 0, QueueMember.fs_host: ""}).on_conflict_ignore())
    cursor = db.obj.execute_sql(sql, (uuid, account_id, queue_id, session_uuid, joined_at, fs_host))
    added = cursor.rowcount == 1
    cursor.close()
    if added:
        counters.add_queue(account_id, queue_id, joined_at, offered=1)
    return added


def answered(member: QueueMember, at: int, agent_id: int | None) -> bool:
    """The member's call was answered at `at` by `agent_id`: counted once."""
    changed = fastq.execute("stats.member_answer", lambda u, t, g: QueueMember.update({
        QueueMember.answered_at: t, QueueMember.agent_id: g}).where(
        (QueueMember.uuid == u) & QueueMember.answered_at.is_null()), member.uuid, at, agent_id or 0)
    if changed != 1:
        return False
    wait = max(0, at - member.joined_at)
    sla = sla_answer_time(member.queue_id)
    counters.add_queue(member.account_id, member.queue_id, member.joined_at, answered=1,
                       answered_sla=1 if wait <= sla else 0, wait_sum=wait, wait_max=wait)
    if agent_id:
        counters.add_agent(member.account_id, agent_id, at, answered=1)
    return True


def left(member: QueueMember, at: int, *, abandoned: bool | None) -> bool:
    """The member left the queue at `at`: abandoned (True), sent on by the queue (False) or unknown (None,
    it left while we could not hear). Nothing more is counted for an answered call. Counted once."""
    if fastq.execute("stats.member_del", lambda u: QueueMember.delete().where(QueueMember.uuid == u), member.uuid) != 1:
        return False
    if member.answered_at is not None:
        return True
    wait = max(0, at - member.joined_at)
    if abandoned is None:
        counters.add_queue(member.account_id, member.queue_id, member.joined_at, lost=1)
    elif abandoned:
        counters.add_queue(member.account_id, member.queue_id, member.joined_at, abandoned=1,
                           short_abandoned=1 if wait < SHORT_ABANDON else 0, abandon_wait_sum=wait, wait_max=wait)
    else:
        counters.add_queue(member.account_id, member.queue_id, member.joined_at, timed_out=1, wait_max=wait)
    return True


# --- the event handler ---


def on_callcenter(event: Any) -> None:
    """callcenter::info: count what it says about a queue call (see the module docstring)."""
    action = _str(event, "CC-Action")
    if action not in _ACTIONS:
        return
    target = queue_of(_str(event, "CC-Queue"))
    if target is None:
        return
    account_id, queue_id = target
    agent_id = agent_of(_str(event, "CC-Agent"), account_id)
    with connection(), db.atomic():
        _ACTIONS[action](event, account_id, queue_id)
        db.after_commit(lambda: hub.touch(account_id, (queue_id,), () if agent_id is None else (agent_id,)))


def _member_start(event: Any, account_id: int, queue_id: int) -> None:
    joined(account_id, queue_id, _str(event, "CC-Member-UUID"), _str(event, "CC-Member-Session-UUID"),
           _int(_str(event, "CC-Member-Joined-Time"), now()), _str(event, "FreeSWITCH-Hostname")[:255])


def _offering(event: Any, account_id: int, queue_id: int) -> None:
    agent_id = agent_of(_str(event, "CC-Agent"), account_id)
    if agent_id is not None:
        counters.add_agent(account_id, agent_id, now(), offered=1)


def _bridge_start(event: Any, account_id: int, queue_id: int) -> None:
    member = _member(_str(event, "CC-Member-UUID"))
    agent_id = agent_of(_str(event, "CC-Agent"), account_id)
    at = _int(_str(event, "CC-Agent-Answered-Time"), now())
    if member is not None:
        answered(member, at, agent_id)
    if agent_id is not None:
        agents.refine_call(account_id, agent_id, True, at, queue_id)


def _bridge_fail(event: Any, account_id: int, queue_id: int) -> None:
    agent_id = agent_of(_str(event, "CC-Agent"), account_id)
    if agent_id is not None and _str(event, "CC-Hangup-Cause") != "ORIGINATOR_CANCEL":
        counters.add_agent(account_id, agent_id, now(), missed=1)


def _bridge_end(event: Any, account_id: int, queue_id: int) -> None:
    answered_at = _int(_str(event, "CC-Agent-Answered-Time"))
    ended = _int(_str(event, "CC-Bridge-Terminated-Time"), now())
    joined_at = _int(_str(event, "CC-Member-Joined-Time"), answered_at)
    if answered_at:
        counters.add_queue(account_id, queue_id, joined_at, talk_sum=max(0, ended - answered_at), talk_count=1)


def _member_end(event: Any, account_id: int, queue_id: int) -> None:
    member = _member(_str(event, "CC-Member-UUID"))
    if member is None:
        return
    at = _int(_str(event, "CC-Member-Leaving-Time"), now())
    if member.answered_at is None and _str(event, "CC-Cause") == "Terminated" and _str(event, "CC-Agent-Answered-Time"):
        # bridge-agent-start was not heard: the end still says it was answered
        answered(member, _int(_str(event, "CC-Agent-Answered-Time"), at), agent_of(_str(event, "CC-Agent"), account_id))
        member = _member(member.uuid) or member
    abandoned = _str(event, "CC-Cause") == "Cancel" and _str(event, "CC-Cancel-Reason") in ABANDON_REASONS
    left(member, at, abandoned=abandoned)


def _agent_state(event: Any, account_id: int, queue_id: int) -> None:
    state = _str(event, "CC-Agent-State")
    agent_id = agent_of(_str(event, "CC-Agent"), account_id)
    if agent_id is not None and state in ("Receiving", "In a queue call"):
        agents.refine_call(account_id, agent_id, state == "In a queue call", now(), queue_id)


_ACTIONS = {
    "member-queue-start": _member_start,
    "agent-offering": _offering,
    "bridge-agent-start": _bridge_start,
    "bridge-agent-fail": _bridge_fail,
    "bridge-agent-end": _bridge_end,
    "member-queue-end": _member_end,
    "agent-state-change": _agent_state,
}
