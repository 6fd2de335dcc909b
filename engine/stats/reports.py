"""Reports over the 15-minute history: per queue and per agent, by interval, day, week or month, in the
account's time zone.

Grouping is done in SQL, so a year over 50 queues reads a few thousand sums, not 1.75 million rows:
the range is cut into runs of local days of 24 hours with one UTC offset (a zone's daylight-saving days,
23 or 25 hours, are a run of their own), and each run groups its rows by `(start + offset) / 86400`,
the local day; days are then summed into ISO weeks (starting Monday) or months in Python.
Agents with `in_reports` false are left out of the agent report.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import peewee

from engine.errors import ServiceError
from engine.stats.counters import AGENT_COUNTERS, QUEUE_COUNTERS
from engine.stats.snapshot import queue_figures, zone
from engine.store.models import (
    INTERVAL,
    Account,
    AgentInterval,
    AgentPauseInterval,
    Queue,
    QueueInterval,
    User,
)

GROUPS = ("interval", "day", "week", "month")
MAX_DAYS = 400  # a year and a bit, for day/week/month
MAX_INTERVAL_DAYS = 31  # by interval: 96 rows a day per queue


def _local_days(account: Account, first: dt.date, last: dt.date) -> list[tuple[dt.date, int, int]]:
    tz = zone(account.timezone)
    out = []
    day = first
    while day <= last:
        start = int(dt.datetime.combine(day, dt.time(), tz).timestamp())
        end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).timestamp())
        out.append((day, start, end))
        day += dt.timedelta(days=1)
    return out


def _offset(date: dt.date, start: int) -> int:
    """The zone's UTC offset at the local midnight `start` of `date` (seconds east)."""
    return int((dt.datetime.combine(date, dt.time()) - dt.datetime(1970, 1, 1)).total_seconds()) - start


def _runs(days: list[tuple[dt.date, int, int]]) -> Iterator[tuple[int, int, int | None, dt.date]]:
    """(utc start, utc end, offset, first day) of runs of 24-hour days with one offset; a 23- or 25-hour
    day (daylight saving changes) is a run of its own with offset None: it is one bucket."""
    run: list[tuple[dt.date, int, int]] = []
    for date, start, end in days:
        if end - start != 86400:
            if run:
                yield _run(run)
                run = []
            yield start, end, None, date
            continue
        if run and _offset(run[0][0], run[0][1]) != _offset(date, start):
            yield _run(run)
            run = []
        run.append((date, start, end))
    if run:
        yield _run(run)


def _run(days: list[tuple[dt.date, int, int]]) -> tuple[int, int, int | None, dt.date]:
    first, start, _end = days[0]
    return start, days[-1][2], _offset(first, start), first


_EPOCH = dt.date(1970, 1, 1)


def _sum_by_day(model: type[peewee.Model], key: peewee.Field, sums: list[peewee.Field], maxes: list[peewee.Field],
                where: peewee.Expression, days: list[tuple[dt.date, int, int]],
                extra_key: peewee.Field | None = None) -> dict[tuple, list[int]]:
    """{(key, [extra,] local date): [sums..., maxes...]} over `days`."""
    out: dict[tuple, list[int]] = {}
    for start, end, offset, first in _runs(days):
        cond = where & (model.start >= start) & (model.start < end)
        keys = [key] + ([extra_key] if extra_key is not None else [])
        aggregates = [peewee.fn.SUM(f) for f in sums] + [peewee.fn.MAX(f) for f in maxes]
        if offset is None:
            query = model.select(*keys, *aggregates).where(cond).group_by(*keys)
            for row in query.tuples():
                out[(*row[:len(keys)], first)] = [int(v or 0) for v in row[len(keys):]]
        else:
            # the offset inlined (an int we computed): PostgreSQL matches GROUP BY to the select by text
            local_day = (model.start + peewee.SQL(str(int(offset)))) / peewee.SQL("86400")
            query = model.select(*keys, local_day, *aggregates).where(cond).group_by(*keys, local_day)
            for row in query.tuples():
                date = _EPOCH + dt.timedelta(days=int(row[len(keys)]))
                out[(*row[:len(keys)], date)] = [int(v or 0) for v in row[len(keys) + 1:]]
    return out


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
           queue_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """One row per queue and period with traffic: the queue figures of engine.stats.snapshot."""
    check_range(first, last, group)
    query = Queue.select(Queue.id, Queue.name, Queue.sla_strategy).where(Queue.account == account.id)
    if queue_ids:
        query = query.where(Queue.id.in_(queue_ids))
    by_id = {q.id: q for q in query}
    if not by_id:
        return []
    days = _local_days(account, first, last)
    where = (QueueInterval.account == account.id) & QueueInterval.queue.in_(list(by_id))
    sums = [getattr(QueueInterval, n) for n in QUEUE_COUNTERS]
    buckets: dict[tuple[int, Any], list[int]] = {}
    if group == "interval":
        rows = (QueueInterval.select(QueueInterval.queue, QueueInterval.start, *sums, QueueInterval.wait_max)
                .where(where & (QueueInterval.start >= days[0][1]) & (QueueInterval.start < days[-1][2])).tuples())
        for queue_id, start, *values in rows:
            buckets[(queue_id, start)] = list(values)
    else:
        for (queue_id, date), values in _sum_by_day(QueueInterval, QueueInterval.queue, sums,
                                                    [QueueInterval.wait_max], where, days).items():
            slot = buckets.setdefault((queue_id, _period(date, group)), [0] * (len(sums) + 1))
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
           user_ids: list[int] | None = None) -> list[dict[str, Any]]:
    """One row per agent (in_reports only) and period with activity; seconds per activity and pause reason."""
    check_range(first, last, group)
    query = User.select(User.id, User.name).where((User.account == account.id) & (User.in_reports == True))  # noqa: E712
    if user_ids:
        query = query.where(User.id.in_(user_ids))
    by_id = {u.id: u for u in query}
    if not by_id:
        return []
    days = _local_days(account, first, last)
    ids = list(by_id)
    sums = [getattr(AgentInterval, n) for n in AGENT_COUNTERS]
    buckets: dict[tuple[int, Any], list[int]] = {}
    pauses: dict[tuple[int, Any], dict[str, int]] = defaultdict(dict)
    lo, hi = days[0][1], days[-1][2]
    if group == "interval":
        for user_id, start, *values in (AgentInterval.select(AgentInterval.user, AgentInterval.start, *sums)
                                        .where((AgentInterval.account == account.id) & AgentInterval.user.in_(ids)
                                               & (AgentInterval.start >= lo) & (AgentInterval.start < hi)).tuples()):
            buckets[(user_id, start)] = list(values)
        for user_id, start, pause_id, seconds in (
                AgentPauseInterval.select(AgentPauseInterval.user, AgentPauseInterval.start,
                                          AgentPauseInterval.pause_id, AgentPauseInterval.seconds)
                .where((AgentPauseInterval.account == account.id) & AgentPauseInterval.user.in_(ids)
                       & (AgentPauseInterval.start >= lo) & (AgentPauseInterval.start < hi)).tuples()):
            pauses[(user_id, start)][str(pause_id)] = seconds
    else:
        where = (AgentInterval.account == account.id) & AgentInterval.user.in_(ids)
        for (user_id, date), values in _sum_by_day(AgentInterval, AgentInterval.user, sums, [], where, days).items():
            slot = buckets.setdefault((user_id, _period(date, group)), [0] * len(sums))
            for i, v in enumerate(values):
                slot[i] += v
        pwhere = (AgentPauseInterval.account == account.id) & AgentPauseInterval.user.in_(ids)
        for (user_id, pause_id, date), (seconds,) in _sum_by_day(
                AgentPauseInterval, AgentPauseInterval.user, [AgentPauseInterval.seconds], [], pwhere, days,
                extra_key=AgentPauseInterval.pause_id).items():
            slot = pauses[(user_id, _period(date, group))]
            slot[str(pause_id)] = slot.get(str(pause_id), 0) + seconds
    out = []
    for (user_id, period), values in sorted(buckets.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        if group == "interval":
            label, start = _interval_label(period, account), period
        else:
            label, start = _label(period, group), _epoch_of(period, account)
        figures = {_AGENT_OUT[n]: v for n, v in zip(AGENT_COUNTERS, values, strict=True)}
        out.append({"period": label, "start": start, "user_id": user_id, "name": by_id[user_id].name, **figures,
                    "pause_time_by_reason": pauses.get((user_id, period), {})})
    return out


CSV_QUEUE_COLUMNS = ("period", "start", "queue_id", "queue_name", "offered", "answered", "abandoned",
                     "short_abandoned", "timed_out", "lost", "answered_within_sla", "service_level", "avg_wait",
                     "max_wait", "avg_abandon_wait", "avg_talk", "avg_wrapup")
CSV_AGENT_COLUMNS = ("period", "start", "user_id", "name", "offered", "answered", "missed", "talk_time",
                     "ringing_time", "wrapup_time", "available_time", "pause_time", "checked_in_time",
                     "pause_time_by_reason")
assert INTERVAL == 900  # interval labels assume quarter hours
