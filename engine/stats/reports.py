"""Reports over the history: per queue and per agent, by interval, day, week or month, in the account's
time zone.

By interval they read the 15-minute rows; by day, week and month the local-day rows (engine.stats.days),
so a year over 50 queues reads 18,250 rows, not 1.75 million; days are summed into ISO weeks (starting
Monday) or months here. Agents with `in_reports` false are left out of the agent report.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from engine.errors import ServiceError
from engine.stats.counters import AGENT_COUNTERS, QUEUE_COUNTERS
from engine.stats.days import date_of, day_number
from engine.stats.offloop import Fetch, on_loop
from engine.stats.snapshot import queue_figures, zone
from engine.store.models import (
    INTERVAL,
    Account,
    AgentDay,
    AgentInterval,
    AgentPauseDay,
    AgentPauseInterval,
    Queue,
    QueueDay,
    QueueInterval,
    User,
)

GROUPS = ("interval", "day", "week", "month")
MAX_DAYS = 400  # a year and a bit, for day/week/month
MAX_INTERVAL_DAYS = 31  # by interval: 96 rows a day per queue


def _local_days(account: Account, first: dt.date, last: dt.date) -> tuple[int, int]:
    """The UTC bounds [start, end) of the local dates first..last."""
    tz = zone(account.timezone)
    start = int(dt.datetime.combine(first, dt.time(), tz).timestamp())
    end = int(dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tz).timestamp())
    return start, end


def _period(date: dt.date, group: str) -> dt.date:
    if group == "week":
        return date - dt.timedelta(days=date.weekday())
    if group == "month":
        return date.replace(day=1)
    return date


def _label(date: dt.date, group: str) -> str:
    return date.strftime("%Y-%m") if group == "month" else date.isoformat()


def check_range(first: dt.date, last: dt.date, group: str) -> None:
    if group not in GROUPS:
        raise ServiceError(400, f"group: one of {', '.join(GROUPS)}")
    if last < first:
        raise ServiceError(400, "to: before from")
    days = (last - first).days + 1
    limit = MAX_INTERVAL_DAYS if group == "interval" else MAX_DAYS
    if days > limit:
        raise ServiceError(400, f"from/to: at most {limit} days grouped by {group}")


def _epoch_of(date: dt.date, account: Account) -> int:
    return int(dt.datetime.combine(date, dt.time(), zone(account.timezone)).timestamp())


def _interval_label(start: int, account: Account) -> str:
    return dt.datetime.fromtimestamp(start, zone(account.timezone)).isoformat(timespec="minutes")


def queues(account: Account, first: dt.date, last: dt.date, group: str = "day",
           queue_ids: list[int] | None = None, *, fetch: Fetch = on_loop) -> list[dict[str, Any]]:
    """One row per queue and period with traffic: the queue figures of engine.stats.snapshot. `fetch` runs
    the queries (engine.stats.offloop)."""
    check_range(first, last, group)
    query = Queue.select(Queue.id, Queue.name, Queue.sla_strategy).where(Queue.account == account.id)
    if queue_ids:
        query = query.where(Queue.id.in_(queue_ids))
    by_id = {q_id: Queue(id=q_id, name=name, sla_strategy=sla) for q_id, name, sla in fetch(query)}
    if not by_id:
        return []
    buckets: dict[tuple[int, Any], list[int]] = {}
    if group == "interval":
        lo, hi = _local_days(account, first, last)
        sums = [getattr(QueueInterval, n) for n in QUEUE_COUNTERS]
        rows = fetch(QueueInterval.select(QueueInterval.queue, QueueInterval.start, *sums, QueueInterval.wait_max)
                     .where((QueueInterval.account == account.id) & QueueInterval.queue.in_(list(by_id))
                            & (QueueInterval.start >= lo) & (QueueInterval.start < hi)))
        for queue_id, start, *values in rows:
            buckets[(queue_id, start)] = list(values)
    else:
        sums = [getattr(QueueDay, n) for n in QUEUE_COUNTERS]
        rows = fetch(QueueDay.select(QueueDay.queue, QueueDay.day, *sums, QueueDay.wait_max)
                     .where((QueueDay.account == account.id) & QueueDay.queue.in_(list(by_id))
                            & (QueueDay.day >= day_number(first)) & (QueueDay.day <= day_number(last))))
        for queue_id, day, *values in rows:
            slot = buckets.setdefault((queue_id, _period(date_of(day), group)), [0] * (len(sums) + 1))
            for i, v in enumerate(values[:-1]):
                slot[i] += v
            slot[-1] = max(slot[-1], values[-1])
    out = []
    for (queue_id, period), values in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        queue = by_id[queue_id]
        totals = dict(zip(QUEUE_COUNTERS, values[:-1], strict=True))
        if group == "interval":
            label, start = _interval_label(period, account), period
        else:
            label, start = _label(period, group), _epoch_of(period, account)
        out.append({"period": label, "start": start, "queue_id": queue_id, "queue_name": queue.name,
                    **queue_figures(queue, totals, values[-1])})
    return out


_AGENT_OUT = {"offered": "offered", "answered": "answered", "missed": "missed", "talk_sec": "talk_time",
              "ringing_sec": "ringing_time", "wrapup_sec": "wrapup_time", "available_sec": "available_time",
              "pause_sec": "pause_time", "checked_in_sec": "checked_in_time"}


def agents(account: Account, first: dt.date, last: dt.date, group: str = "day",
           user_ids: list[int] | None = None, *, fetch: Fetch = on_loop) -> list[dict[str, Any]]:
    """One row per agent (in_reports only) and period with activity; seconds per activity and pause reason."""
    check_range(first, last, group)
    query = User.select(User.id, User.name).where((User.account == account.id) & (User.in_reports == True))  # noqa: E712
    if user_ids:
        query = query.where(User.id.in_(user_ids))
    by_id = {u_id: name for u_id, name in fetch(query)}
    if not by_id:
        return []
    ids = list(by_id)
    buckets: dict[tuple[int, Any], list[int]] = {}
    pauses: dict[tuple[int, Any], dict[str, int]] = defaultdict(dict)
    lo, hi = _local_days(account, first, last)
    if group == "interval":
        sums = [getattr(AgentInterval, n) for n in AGENT_COUNTERS]
        for user_id, start, *values in fetch(AgentInterval.select(AgentInterval.user, AgentInterval.start, *sums)
                                             .where((AgentInterval.account == account.id) & AgentInterval.user.in_(ids)
                                                    & (AgentInterval.start >= lo) & (AgentInterval.start < hi))):
            buckets[(user_id, start)] = list(values)
        for user_id, start, pause_id, seconds in fetch(
                AgentPauseInterval.select(AgentPauseInterval.user, AgentPauseInterval.start,
                                          AgentPauseInterval.pause_id, AgentPauseInterval.seconds)
                .where((AgentPauseInterval.account == account.id) & AgentPauseInterval.user.in_(ids)
                       & (AgentPauseInterval.start >= lo) & (AgentPauseInterval.start < hi))):
            pauses[(user_id, start)][str(pause_id)] = seconds
    else:
        sums = [getattr(AgentDay, n) for n in AGENT_COUNTERS]
        span = (day_number(first), day_number(last))
        for user_id, day, *values in fetch(AgentDay.select(AgentDay.user, AgentDay.day, *sums)
                                           .where((AgentDay.account == account.id) & AgentDay.user.in_(ids)
                                                  & AgentDay.day.between(*span))):
            slot = buckets.setdefault((user_id, _period(date_of(day), group)), [0] * len(sums))
            for i, v in enumerate(values):
                slot[i] += v
        for user_id, day, pause_id, seconds in fetch(
                AgentPauseDay.select(AgentPauseDay.user, AgentPauseDay.day, AgentPauseDay.pause_id,
                                     AgentPauseDay.seconds)
                .where((AgentPauseDay.account == account.id) & AgentPauseDay.user.in_(ids)
                       & AgentPauseDay.day.between(*span))):
            slot = pauses[(user_id, _period(date_of(day), group))]
            slot[str(pause_id)] = slot.get(str(pause_id), 0) + seconds
    out = []
    for (user_id, period), values in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if group == "interval":
            label, start = _interval_label(period, account), period
        else:
            label, start = _label(period, group), _epoch_of(period, account)
        figures = {_AGENT_OUT[n]: v for n, v in zip(AGENT_COUNTERS, values, strict=True)}
        out.append({"period": label, "start": start, "user_id": user_id, "name": by_id[user_id], **figures,
                    "pause_time_by_reason": pauses.get((user_id, period), {})})
    return out


CSV_QUEUE_COLUMNS = ("period", "start", "queue_id", "queue_name", "offered", "answered", "abandoned",
                     "short_abandoned", "timed_out", "lost", "answered_within_sla", "service_level", "avg_wait",
                     "max_wait", "avg_abandon_wait", "avg_talk", "avg_wrapup")
CSV_AGENT_COLUMNS = ("period", "start", "user_id", "name", "offered", "answered", "missed", "talk_time",
                     "ringing_time", "wrapup_time", "available_time", "pause_time", "checked_in_time",
                     "pause_time_by_reason")
assert INTERVAL == 900  # interval labels assume quarter hours
