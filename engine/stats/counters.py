"""Adding to the counters: per event one INSERT ... ON CONFLICT DO UPDATE into the 15-minute row and one
into the local-day row (engine.stats.days), compiled once (fastq).

Every event adds deltas to the rows of its interval and day; a row is created by the first event that
needs it. The statements are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from collections.abc import Iterator

import peewee

from engine.stats.days import local_day
from engine.store import fastq
from engine.store.models import (
    INTERVAL,
    AgentDay,
    AgentInterval,
    AgentPauseDay,
    AgentPauseInterval,
    QueueDay,
    QueueInterval,
)

QUEUE_COUNTERS = ("offered", "answered", "answered_sla", "abandoned", "short_abandoned", "timed_out", "lost",
                  "wait_sum", "abandon_wait_sum", "talk_sum", "talk_count", "wrapup_sum", "wrapup_count")
AGENT_COUNTERS = ("offered", "answered", "missed", "checked_in_sec", "available_sec", "ringing_sec", "talk_sec",
                  "wrapup_sec", "pause_sec")


def interval_of(ts: int) -> int:
    """The start of the 15-minute interval holding `ts` (epoch seconds)."""
    return ts - ts % INTERVAL


def split(start: int, end: int) -> Iterator[tuple[int, int]]:
    """(interval start, seconds) for each interval the span [start, end) covers."""
    t = start
    while t < end:
        edge = interval_of(t) + INTERVAL
        stop = min(edge, end)
        yield interval_of(t), stop - t
        t = stop


def _upsert(model: type[peewee.Model], keys: tuple[str, ...], counters: tuple[str, ...],
            maxes: tuple[str, ...]) -> object:
    """A builder for fastq: INSERT the row of `keys`, or add `counters` and raise `maxes` on the existing one."""
    def build(*args: int) -> peewee.Query:
        names = (*keys, *maxes, *counters)
        row = {getattr(model, n): v for n, v in zip(names, args, strict=True)}
        update: dict = {getattr(model, n): getattr(model, n) + getattr(peewee.EXCLUDED, n) for n in counters}
        for n in maxes:
            field, new = getattr(model, n), getattr(peewee.EXCLUDED, n)
            update[field] = peewee.Case(None, [(new > field, new)], field)
        conflict = [getattr(model, n) for n in keys if n != "account"]
        return model.insert(row).on_conflict(conflict_target=conflict, update=update)
    return build


_QUEUE_INTERVAL = _upsert(QueueInterval, ("account", "queue", "start"), QUEUE_COUNTERS, ("wait_max",))
_QUEUE_DAY = _upsert(QueueDay, ("account", "queue", "day"), QUEUE_COUNTERS, ("wait_max",))
_AGENT_INTERVAL = _upsert(AgentInterval, ("account", "user", "start"), AGENT_COUNTERS, ())
_AGENT_DAY = _upsert(AgentDay, ("account", "user", "day"), AGENT_COUNTERS, ())
_PAUSE_INTERVAL = _upsert(AgentPauseInterval, ("account", "user", "start", "pause_id"), ("seconds",), ())
_PAUSE_DAY = _upsert(AgentPauseDay, ("account", "user", "day", "pause_id"), ("seconds",), ())


def add_queue(account_id: int, queue_id: int, start: int, *, wait_max: int = 0, **deltas: int) -> None:
    """Add `deltas` (names from QUEUE_COUNTERS) to the queue's rows of the interval and day of `start`."""
    values = [deltas.pop(name, 0) for name in QUEUE_COUNTERS]
    if deltas:
        raise ValueError(f"unknown queue counters {sorted(deltas)}")
    interval = interval_of(start)
    fastq.execute("stats.queue_interval", _QUEUE_INTERVAL, account_id, queue_id, interval, wait_max, *values)
    fastq.execute("stats.queue_day", _QUEUE_DAY, account_id, queue_id, local_day(account_id, interval), wait_max,
                  *values)


def add_agent(account_id: int, user_id: int, start: int, **deltas: int) -> None:
    """Add `deltas` (names from AGENT_COUNTERS) to the agent's rows of the interval and day of `start`."""
    values = [deltas.pop(name, 0) for name in AGENT_COUNTERS]
    if deltas:
        raise ValueError(f"unknown agent counters {sorted(deltas)}")
    interval = interval_of(start)
    fastq.execute("stats.agent_interval", _AGENT_INTERVAL, account_id, user_id, interval, *values)
    fastq.execute("stats.agent_day", _AGENT_DAY, account_id, user_id, local_day(account_id, interval), *values)


def add_pause(account_id: int, user_id: int, start: int, pause_id: int, seconds: int) -> None:
    interval = interval_of(start)
    fastq.execute("stats.pause_interval", _PAUSE_INTERVAL, account_id, user_id, interval, pause_id, seconds)
    fastq.execute("stats.pause_day", _PAUSE_DAY, account_id, user_id, local_day(account_id, interval), pause_id,
                  seconds)
