"""Adding to the 15-minute counters: one INSERT ... ON CONFLICT DO UPDATE per change, compiled once (fastq).

Every event adds deltas to the row of its interval; a row is created by the first
event of its interval. The statements are the same on SQLite and PostgreSQL.
"""
from __future__ import annotations

from collections.abc import Iterator

import peewee

from engine.store import fastq
from engine.store.models import INTERVAL, AgentInterval, AgentPauseInterval, QueueInterval

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


def _greater(model: type[peewee.Model], name: str) -> peewee.Node:
    field, new = getattr(model, name), getattr(peewee.EXCLUDED, name)
    return peewee.Case(None, [(new > field, new)], field)


def add_queue(account_id: int, queue_id: int, start: int, *, wait_max: int = 0, **deltas: int) -> None:
    """Add `deltas` (names from QUEUE_COUNTERS) to the queue's interval row at `start`; raise wait_max."""
    values = [deltas.pop(name, 0) for name in QUEUE_COUNTERS]
    if deltas:
        raise ValueError(f"unknown queue counters {sorted(deltas)}")

    def build(a: int, q: int, s: int, m: int, *counts: int) -> peewee.Query:
        row = {QueueInterval.account: a, QueueInterval.queue: q, QueueInterval.start: s, QueueInterval.wait_max: m}
        row.update({getattr(QueueInterval, n): v for n, v in zip(QUEUE_COUNTERS, counts, strict=True)})
        update = {getattr(QueueInterval, n): getattr(QueueInterval, n) + getattr(peewee.EXCLUDED, n)
                  for n in QUEUE_COUNTERS}
        update[QueueInterval.wait_max] = _greater(QueueInterval, "wait_max")
        return QueueInterval.insert(row).on_conflict(
            conflict_target=[QueueInterval.queue, QueueInterval.start], update=update)

    fastq.execute("stats.queue_add", build, account_id, queue_id, interval_of(start), wait_max, *values)


def add_agent(account_id: int, user_id: int, start: int, **deltas: int) -> None:
    """Add `deltas` (names from AGENT_COUNTERS) to the agent's interval row at `start`."""
    values = [deltas.pop(name, 0) for name in AGENT_COUNTERS]
    if deltas:
        raise ValueError(f"unknown agent counters {sorted(deltas)}")

    def build(a: int, u: int, s: int, *counts: int) -> peewee.Query:
        row = {AgentInterval.account: a, AgentInterval.user: u, AgentInterval.start: s}
        row.update({getattr(AgentInterval, n): v for n, v in zip(AGENT_COUNTERS, counts, strict=True)})
        update = {getattr(AgentInterval, n): getattr(AgentInterval, n) + getattr(peewee.EXCLUDED, n)
                  for n in AGENT_COUNTERS}
        return AgentInterval.insert(row).on_conflict(
            conflict_target=[AgentInterval.user, AgentInterval.start], update=update)

    fastq.execute("stats.agent_add", build, account_id, user_id, interval_of(start), *values)


def add_pause(account_id: int, user_id: int, start: int, pause_id: int, seconds: int) -> None:
    def build(a: int, u: int, s: int, p: int, n: int) -> peewee.Query:
        return AgentPauseInterval.insert({
            AgentPauseInterval.account: a, AgentPauseInterval.user: u, AgentPauseInterval.start: s,
            AgentPauseInterval.pause_id: p, AgentPauseInterval.seconds: n,
        }).on_conflict(conflict_target=[AgentPauseInterval.user, AgentPauseInterval.start, AgentPauseInterval.pause_id],
                       update={AgentPauseInterval.seconds: AgentPauseInterval.seconds + peewee.EXCLUDED.seconds})

    fastq.execute("stats.pause_add", build, account_id, user_id, interval_of(start), pause_id, seconds)
