"""Agent activity for the statistics: the open segment per agent and its seconds in the history.

The agent state the engine already follows (check-in, pause, wrap-up, mod_callcenter's
reports) is reported as agent:status; `on_emit` hears each one inside its transaction
(engine.events.outbox.on_emit), so a pause set through the API and a call reported by
FreeSWITCH are counted the same way and commit with the change. mod_callcenter's
`agent-state-change` tells ringing (Receiving) from talking (In a queue call), which
agent:status reports as one activity.

When an activity ends, its seconds are split over the 15-minute intervals it spans.
"""
from __future__ import annotations

import logging
from typing import Any

import peewee

from engine.stats import counters, hub
from engine.store import fastq
from engine.store.db import db
from engine.store.models import AgentActivity

log = logging.getLogger("switchdesk.stats")

CHECKED_OUT, AVAILABLE, RINGING, ON_CALL, WRAP_UP, PAUSED = (
    "checked_out", "available", "ringing", "on_call", "wrap_up", "paused")
ACTIVITIES = (AVAILABLE, RINGING, ON_CALL, WRAP_UP, PAUSED, CHECKED_OUT)
# agent:status activity_id (engine.callcenter.agent_state) -> ours; on a call starts as ringing
_BY_ACTIVITY_ID = {0: CHECKED_OUT, 1: AVAILABLE, 2: RINGING, 3: WRAP_UP, 4: PAUSED}
SECONDS_COLUMN = {AVAILABLE: "available_sec", RINGING: "ringing_sec", ON_CALL: "talk_sec", WRAP_UP: "wrapup_sec",
                  PAUSED: "pause_sec"}


def _row(user_id: int) -> AgentActivity | None:
    rows = fastq.select("stats.activity", lambda u: AgentActivity.select().where(AgentActivity.user == u), user_id)
    return fastq.make(AgentActivity, rows[0]) if rows else None


def _close(row: AgentActivity, end: int) -> None:
    """Put the seconds of the row's open segment [since, end) into the history."""
    column = SECONDS_COLUMN.get(row.activity)
    if column is None or end <= row.since:
        return
    for start, seconds in counters.split(row.since, end):
        counters.add_agent(row.account_id, row.user_id, start, checked_in_sec=seconds, **{column: seconds})
        if row.activity == PAUSED and row.pause_id:
            counters.add_pause(row.account_id, row.user_id, start, row.pause_id, seconds)
    if row.activity == WRAP_UP and row.queue_id:
        counters.add_queue(row.account_id, row.queue_id, row.since, wrapup_sum=end - row.since, wrapup_count=1)


def change(account_id: int, user_id: int, activity: str, at: int, *, pause_id: int | None = None,
           queue_id: int | None = None) -> bool:
    """The agent's activity is `activity` from `at` on; inside the caller's transaction. True when it changed."""
    row = _row(user_id)
    if row is None:
        checked_in = None if activity == CHECKED_OUT else at
        AgentActivity.insert(user=user_id, account=account_id, activity=activity, since=at, pause_id=pause_id,
                             checked_in_since=checked_in, queue_id=queue_id).on_conflict_ignore().execute()
        _after_commit(account_id, user_id)
        return True
    if row.activity == activity and row.pause_id == pause_id and (queue_id is None or queue_id == row.queue_id):
        return False
    at = max(at, row.since)
    moved = row.activity != activity or row.pause_id != pause_id
    if moved:
        _close(row, at)
    since = at if moved else row.since
    kept = row.checked_in_since if row.checked_in_since is not None else at
    checked_in = None if activity == CHECKED_OUT else kept
    sql, _ = fastq.compiled("stats.activity_set", lambda: AgentActivity.update({
        AgentActivity.activity: "", AgentActivity.since: 0, AgentActivity.pause_id: 0,
        AgentActivity.checked_in_since: 0, AgentActivity.queue_id: 0}).where(AgentActivity.user == 0))
    db.obj.execute_sql(sql, (activity, since, pause_id, checked_in, queue_id or row.queue_id, user_id)).close()
    _after_commit(account_id, user_id)
    return True


def on_emit(account_id: int, event: str, data: dict[str, Any], ts: int) -> None:
    """outbox listener: agent:status changes the agent's activity (inside the event's transaction)."""
    if event != "agent:status":
        return
    user_id = data.get("user_id")
    activity = _BY_ACTIVITY_ID.get(data.get("activity_id"))  # type: ignore[arg-type]
    if not isinstance(user_id, int) or activity is None:
        return
    pause_id = data.get("pause_id") or None if activity == PAUSED else None
    try:
        with db.atomic():  # a savepoint: what goes wrong here must not undo the change the event reports
            if activity == RINGING:
                current = _row(user_id)
                if current is not None and current.activity == ON_CALL:
                    return  # already talking: a repeated report (a forced one) changes nothing
            change(account_id, user_id, activity, ts, pause_id=pause_id)
    except peewee.DatabaseError as exc:
        log.warning("statistics: agent:status of user %s not counted: %s", user_id, exc)


def refine_call(account_id: int, user_id: int, talking: bool, at: int, queue_id: int | None = None) -> None:
    """mod_callcenter says the agent rings (Receiving) or talks (In a queue call): tell the two apart."""
    row = _row(user_id)
    if row is None or row.activity not in (RINGING, ON_CALL):
        return
    change(account_id, user_id, ON_CALL if talking else RINGING, at, queue_id=queue_id)


def _after_commit(account_id: int, user_id: int) -> None:
    """Tell the streams once committed: the agent changed (its queues' tiles too: the stream looks them up)."""
    if db.obj.in_transaction():
        db.after_commit(lambda: hub.touch(account_id, (), (user_id,)))
    else:
        hub.touch(account_id, (), (user_id,))


def _register() -> None:
    from engine.events import outbox

    if on_emit not in outbox._emit_listeners:
        outbox.on_emit(on_emit)


_register()
