"""The live figures of an account's queues and agents, as the API, the stream and the wallboard show them.

"Today" is since midnight in the account's time zone (Account.timezone): the sums of the 15-minute rows
from there on (a zone's midnight is always on a quarter hour), plus, for agents, the open segment.

Service level (`sla_strategy`, see the README): answered within `sla_answer_time` over

* 0: the calls that left the queue or were answered (answered + abandoned + timed out + lost);
* 1: the answered calls;
* 2: as 0, less the short abandons.

Other values count as 0. Calls still waiting count nowhere until they are answered or leave.
`avg_wait_range` (seconds, 0: today) is the window of the rolling average wait of answered calls; it is
read from whole 15-minute rows, so the window is rounded out to the quarter hour it starts in.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import peewee

from engine.stats import agents as activity
from engine.stats.counters import AGENT_COUNTERS, QUEUE_COUNTERS, interval_of
from engine.stats.days import zone_named
from engine.store.models import (
    Account,
    AgentActivity,
    AgentInterval,
    AgentPauseInterval,
    Queue,
    QueueInterval,
    QueueMember,
    Tier,
    User,
    now,
)

SLA_STRATEGIES = {0: "answered within / (answered + abandoned + timed out + lost)",
                  1: "answered within / answered",
                  2: "answered within / (answered + abandoned + timed out + lost - short abandons)"}


zone = zone_named  # an unknown zone name counts as UTC


def midnight(account: Account, at: int) -> int:
    """Epoch seconds of the start of `at`'s day in the account's time zone."""
    local = dt.datetime.fromtimestamp(at, zone(account.timezone))
    return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp())


def service_level(strategy: int, t: dict[str, int]) -> float | None:
    """Percent, one decimal; None when nothing counts yet."""
    handled = t["answered"] + t["abandoned"] + t["timed_out"] + t["lost"]
    if strategy == 1:
        base = t["answered"]
    elif strategy == 2:
        base = handled - t["short_abandoned"]
    else:
        base = handled
    return round(100.0 * t["answered_sla"] / base, 1) if base > 0 else None


def _avg(total: int, count: int) -> float | None:
    return round(total / count, 1) if count else None


def queue_figures(queue: Queue, totals: dict[str, int], wait_max: int) -> dict[str, Any]:
    t = totals
    return {
        "offered": t["offered"], "answered": t["answered"], "abandoned": t["abandoned"],
        "short_abandoned": t["short_abandoned"], "timed_out": t["timed_out"], "lost": t["lost"],
        "answered_within_sla": t["answered_sla"],
        "service_level": service_level(queue.sla_strategy or 0, t),
        "avg_wait": _avg(t["wait_sum"], t["answered"]), "max_wait": wait_max,
        "avg_abandon_wait": _avg(t["abandon_wait_sum"], t["abandoned"]),
        "avg_talk": _avg(t["talk_sum"], t["talk_count"]), "avg_wrapup": _avg(t["wrapup_sum"], t["wrapup_count"]),
    }


def queues(account: Account, queue_ids: list[int] | None = None, labels: list[int] | None = None,
           at: int | None = None) -> list[dict[str, Any]]:
    """Every queue of the account (or those given, or those carrying one of `labels`), live and today."""
    at = at or now()
    query = Queue.select().where(Queue.account == account.id).order_by(Queue.id)
    if queue_ids:
        query = query.where(Queue.id.in_(queue_ids))
    chosen = [q for q in query if not labels or set(labels) & set(q.labels or [])]
    if not chosen:
        return []
    ids = [q.id for q in chosen]
    day = midnight(account, at)
    ranges = [q.avg_wait_range for q in chosen if q.avg_wait_range]
    since = min([day, *(interval_of(at - r) for r in ranges)])
    totals: dict[int, dict[str, int]] = {q: dict.fromkeys(QUEUE_COUNTERS, 0) for q in ids}
    wait_max: dict[int, int] = dict.fromkeys(ids, 0)
    recent: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    columns = [getattr(QueueInterval, n) for n in QUEUE_COUNTERS]
    for row in (QueueInterval.select(QueueInterval.queue, QueueInterval.start, QueueInterval.wait_max, *columns)
                .where((QueueInterval.account == account.id) & QueueInterval.queue.in_(ids)
                       & (QueueInterval.start >= since)).tuples()):
        queue_id, start, row_max, *values = row
        recent[queue_id].append((start, values[1], values[7]))  # answered, wait_sum
        if start >= day:
            t = totals[queue_id]
            for name, value in zip(QUEUE_COUNTERS, values, strict=True):
                t[name] += value
            wait_max[queue_id] = max(wait_max[queue_id], row_max)
    waiting: dict[int, tuple[int, int]] = {}
    for queue_id, count, oldest in (QueueMember.select(QueueMember.queue, peewee.fn.COUNT(QueueMember.uuid),
                                                       peewee.fn.MIN(QueueMember.joined_at))
                                    .where(QueueMember.queue.in_(ids) & QueueMember.answered_at.is_null())
                                    .group_by(QueueMember.queue).tuples()):
        waiting[queue_id] = (count, oldest)
    by_activity: dict[int, dict[str, Any]] = {
        q: {**dict.fromkeys(activity.ACTIVITIES, 0), "paused_by_reason": {}} for q in ids}
    for queue_id, name, pause_id, count in (
            Tier.select(Tier.queue, AgentActivity.activity, AgentActivity.pause_id, peewee.fn.COUNT(Tier.id))
            .join(AgentActivity, peewee.JOIN.LEFT_OUTER, on=(AgentActivity.user == Tier.user))
            .where(Tier.queue.in_(ids) & (Tier.joined == True))  # noqa: E712 - SQL
            .group_by(Tier.queue, AgentActivity.activity, AgentActivity.pause_id).tuples()):
        name = name or activity.CHECKED_OUT
        slot = by_activity[queue_id]
        slot[name] += count
        if name == activity.PAUSED and pause_id:
            slot["paused_by_reason"][str(pause_id)] = slot["paused_by_reason"].get(str(pause_id), 0) + count
    out = []
    for q in chosen:
        count, oldest = waiting.get(q.id, (0, None))
        figures = queue_figures(q, totals[q.id], wait_max[q.id])
        window = interval_of(at - q.avg_wait_range) if q.avg_wait_range else day
        answered = sum(a for s, a, _w in recent[q.id] if s >= window)
        waited = sum(w for s, _a, w in recent[q.id] if s >= window)
        figures["avg_wait_rolling"] = _avg(waited, answered)
        out.append({
            "id": q.id, "name": q.name, "tv_name": q.tv_name or q.name,
            "background_color": q.background_color, "font_color": q.font_color, "labels": q.labels or [],
            "sla_strategy": q.sla_strategy or 0, "sla_answer_time": q.sla_answer_time or 0,
            "avg_wait_range": q.avg_wait_range or 0,
            "waiting": count, "oldest_joined_at": oldest, "longest_wait": at - oldest if oldest else 0,
            "agents": by_activity[q.id], "today": figures,
        })
    return out


def queues_of_agents(account_id: int, user_ids: list[int]) -> set[int]:
    """The queues whose tiles count these agents (their joined tiers)."""
    if not user_ids:
        return set()
    return {queue_id for (queue_id,) in Tier.select(Tier.queue).where(
        (Tier.account == account_id) & Tier.user.in_(user_ids) & (Tier.joined == True)).tuples()}  # noqa: E712


def agents(account: Account, user_ids: list[int] | None = None, at: int | None = None,
           with_reports_only: bool = False) -> list[dict[str, Any]]:
    """The account's agents (users that were ever checked in), their activity now and today's figures."""
    at = at or now()
    day = midnight(account, at)
    query = (AgentActivity.select(AgentActivity, User.id, User.name, User.in_reports).join(User)
             .where(AgentActivity.account == account.id).order_by(AgentActivity.user))
    if user_ids:
        query = query.where(AgentActivity.user.in_(user_ids))
    rows = list(query)
    if not rows:
        return []
    ids = [r.user_id for r in rows]
    totals: dict[int, dict[str, int]] = {u: dict.fromkeys(AGENT_COUNTERS, 0) for u in ids}
    columns = [getattr(AgentInterval, n) for n in AGENT_COUNTERS]
    for user_id, *values in (AgentInterval.select(AgentInterval.user, *[peewee.fn.SUM(c) for c in columns])
                             .where((AgentInterval.account == account.id) & AgentInterval.user.in_(ids)
                                    & (AgentInterval.start >= day)).group_by(AgentInterval.user).tuples()):
        totals[user_id] = {n: int(v or 0) for n, v in zip(AGENT_COUNTERS, values, strict=True)}
    pauses: dict[int, dict[str, int]] = defaultdict(dict)
    for user_id, pause_id, seconds in (
            AgentPauseInterval.select(AgentPauseInterval.user, AgentPauseInterval.pause_id,
                                      peewee.fn.SUM(AgentPauseInterval.seconds))
            .where((AgentPauseInterval.account == account.id) & AgentPauseInterval.user.in_(ids)
                   & (AgentPauseInterval.start >= day))
            .group_by(AgentPauseInterval.user, AgentPauseInterval.pause_id).tuples()):
        pauses[user_id][str(pause_id)] = int(seconds or 0)
    out = []
    for r in rows:
        t = totals[r.user_id]
        open_seconds = max(0, at - max(r.since, day))
        column = activity.SECONDS_COLUMN.get(r.activity)
        if column:  # the open segment counts too
            t[column] += open_seconds
            t["checked_in_sec"] += open_seconds
            if r.activity == activity.PAUSED and r.pause_id:
                key = str(r.pause_id)
                pauses[r.user_id][key] = pauses[r.user_id].get(key, 0) + open_seconds
        out.append({
            "user_id": r.user_id, "name": r.user.name, "in_reports": r.user.in_reports,
            "activity": r.activity, "since": r.since, "seconds_in_activity": max(0, at - r.since),
            "pause_id": r.pause_id, "checked_in_since": r.checked_in_since,
            "today": {"offered": t["offered"], "answered": t["answered"], "missed": t["missed"],
                      "talk_time": t["talk_sec"], "ringing_time": t["ringing_sec"], "wrapup_time": t["wrapup_sec"],
                      "available_time": t["available_sec"], "pause_time": t["pause_sec"],
                      "pause_time_by_reason": pauses.get(r.user_id, {}), "checked_in_time": t["checked_in_sec"]},
        })
    return out
