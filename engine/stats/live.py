"""Rebuilding the live figures after FreeSWITCH was unreachable (or switchdesk restarted).

ESL has no replay. After each (re)connect of the event connection — once events are heard again —
FreeSWITCH's own lists say what is true now: `callcenter_config queue list members <queue>` for each
of our queues and `callcenter_config agent list` (read once, outside any transaction):

* a caller FreeSWITCH lists that we do not know joined while we could not hear: it is recorded and
  offered (and answered, with its wait, when FreeSWITCH says an agent has it: bridge_epoch);
* a caller we know that FreeSWITCH no longer lists left while we could not hear: answered ones are
  done; unanswered ones count as `lost` (the outcome is unknown, so it is neither an answer nor an
  abandon);
* an agent FreeSWITCH lists as Receiving or In a queue call rings or talks. Their check-in, pause
  and wrap-up state is reconciled by the agent runtime (engine.callcenter.agent_runtime), whose
  agent:status reports reach the statistics like any other.

Only callers recorded before the lists were read are candidates for "left": one that joins meanwhile
is heard as an event. This runs once per reconnect, never in a loop.
"""
from __future__ import annotations

import logging
from typing import Any

from engine.callcenter import fsconfig, sync
from engine.esl.errors import ESLError
from engine.stats import agents, hub, queues
from engine.store.db import connection, db
from engine.store.models import Account, Queue, QueueMember, now

log = logging.getLogger("switchdesk.stats")

GONE_STATES = frozenset({"Abandoned"})


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def rebuild(client: Any, account_ids: list[int] | None) -> dict[str, int]:
    """Bring the live rows in step with FreeSWITCH's lists; returns what changed (for the log and tests)."""
    with connection():
        query = Queue.select(Queue.id, Account.id, Account.domain).join(Account)
        if account_ids is not None:
            query = query.where(Queue.account.in_(account_ids))
        ours = [(q.id, q.account.id, q.account.domain) for q in query]
    if not ours:
        return {"joined": 0, "answered": 0, "left": 0}
    listed_at = now()
    commands = [f"callcenter_config queue list members {fsconfig.queue_name(q, d)}" for q, _a, d in ours]
    commands.append("callcenter_config agent list")
    replies = client.api_many(commands, timeout=60)
    for reply in replies:
        if isinstance(reply, ESLError):
            raise reply
    counts = {"joined": 0, "answered": 0, "left": 0}
    touched: set[int] = set()
    with connection():
        for (queue_id, account_id, _domain), reply in zip(ours, replies, strict=False):
            listed = {row["uuid"]: row for row in sync.parse_table(reply)
                      if row.get("uuid") and row.get("state") not in GONE_STATES}
            with db.atomic():
                known = {m.uuid: m for m in QueueMember.select().where(QueueMember.queue == queue_id)}
                for uuid, row in listed.items():
                    joined_at = _int(row.get("joined_epoch")) or listed_at
                    if queues.joined(account_id, queue_id, uuid, row.get("session_uuid") or "", joined_at):
                        counts["joined"] += 1
                    bridged = _int(row.get("bridge_epoch"))
                    if bridged:
                        member = known.get(uuid) or QueueMember.get_or_none(QueueMember.uuid == uuid)
                        agent_id = queues.agent_of(row.get("serving_agent") or "", account_id)
                        if member is not None and queues.answered(member, bridged, agent_id):
                            counts["answered"] += 1
                for uuid, member in known.items():
                    gone = uuid not in listed and member.joined_at < listed_at
                    if gone and queues.left(member, listed_at, abandoned=None):
                        counts["left"] += 1
            if any(counts.values()):
                touched.add(account_id)
        for row in sync.parse_table(replies[-1]):
            parsed = fsconfig.parse_name(row.get("name", ""))
            if parsed is None or row.get("state") not in ("Receiving", "In a queue call"):
                continue
            account = Account.get_or_none(Account.domain == parsed[1])
            if account is None or (account_ids is not None and account.id not in account_ids):
                continue
            with db.atomic():
                agents.refine_call(account.id, parsed[0], row["state"] == "In a queue call", listed_at)
    for account_id in touched:
        hub.touch(account_id)
    if any(counts.values()):
        log.info("statistics rebuilt from FreeSWITCH's lists: %s", counts)
    return counts
