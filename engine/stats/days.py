"""Local days: the day rows (QueueDay, AgentDay, AgentPauseDay) are keyed by the date in the account's time
zone, as days since 1970-01-01, so reports by day, week and month read one row per queue (or agent) and day.

The zone of each account is kept here (read once, dropped by the `account` change notice). When an
account's time zone changes, its day rows no longer match: `check_zones()` (the engine plugin runs it at
start and after each account notice) rebuilds them from the 15-minute rows, off the event loop, and
records the zone they were built in (StatsZone). The 15-minute rows never depend on the zone. The long
sum runs off the event loop (engine.stats.offloop).
"""
from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Iterator

import peewee

from engine.stats import offloop
from engine.stats.offloop import Fetch
from engine.store import changes, fastq
from engine.store.db import db
from engine.store.models import (
    Account,
    AgentDay,
    AgentInterval,
    AgentPauseDay,
    AgentPauseInterval,
    QueueDay,
    QueueInterval,
    StatsZone,
    now,
)

log = logging.getLogger("switchdesk.stats")

EPOCH = dt.date(1970, 1, 1)
_zones: dict[int, tuple[str, dt.tzinfo]] = {}
_days: dict[tuple[int, int], int] = {}
MAX_DAYS_CACHED = 20_000


def zone_named(name: str | None) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def zone_of(account_id: int) -> tuple[str, dt.tzinfo]:
    hit = _zones.get(account_id)
    if hit is None:
        rows = fastq.select("stats.zone", lambda a: Account.select(Account.timezone).where(Account.id == a),
                            account_id)
        name = (rows[0][0] if rows else None) or "UTC"
        if rows:  # the zone this process writes day rows in, unless one is recorded already (check_zones)
            StatsZone.insert(account=account_id, timezone=name).on_conflict_ignore().execute()
        hit = _zones[account_id] = (name, zone_named(name))
    return hit


def day_number(date: dt.date) -> int:
    return (date - EPOCH).days


def date_of(day: int) -> dt.date:
    return EPOCH + dt.timedelta(days=day)


def local_day(account_id: int, ts: int) -> int:
    """The local date of `ts` in the account's zone, as days since 1970-01-01."""
    key = (account_id, ts)
    day = _days.get(key)
    if day is None:
        if len(_days) > MAX_DAYS_CACHED:
            _days.clear()
        day = _days[key] = day_number(dt.datetime.fromtimestamp(ts, zone_of(account_id)[1]).date())
    return day


def forget(account_id: int | None = None) -> None:
    """Drop what is kept of one account's zone (or of all)."""
    if account_id is None:
        _zones.clear()
        _days.clear()
        return
    _zones.pop(account_id, None)
    for key in [k for k in _days if k[0] == account_id]:
        del _days[key]


def _on_change(kind: str, account_id: int, _ids: list[int]) -> None:
    if kind == "account":
        forget(account_id)


changes.listen(_on_change)


# --- rebuilding the day rows of an account ---


def _runs(tz: dt.tzinfo, lo: int, hi: int) -> Iterator[tuple[int, int, int | None]]:
    """(utc start, utc end, offset) covering [lo, hi) in runs of local days with one UTC offset and 24
    hours; a 23- or 25-hour day (a daylight-saving change) is a run of its own with offset None."""
    day = dt.datetime.fromtimestamp(lo, tz).date()
    last = dt.datetime.fromtimestamp(hi, tz).date()
    run_start = run_end = None
    run_offset: int | None = None
    while day <= last:
        start = int(dt.datetime.combine(day, dt.time(), tz).timestamp())
        end = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).timestamp())
        offset = int((dt.datetime.combine(day, dt.time()) - dt.datetime(1970, 1, 1)).total_seconds()) - start
        if end - start != 86400:
            if run_start is not None:
                yield run_start, run_end, run_offset  # type: ignore[misc]
                run_start = None
            yield start, end, None
        elif run_start is not None and offset == run_offset:
            run_end = end
        else:
            if run_start is not None:
                yield run_start, run_end, run_offset  # type: ignore[misc]
            run_start, run_end, run_offset = start, end, offset
        day += dt.timedelta(days=1)
    if run_start is not None:
        yield run_start, run_end, run_offset  # type: ignore[misc]


_TARGETS: tuple = ()  # (source, target, keys, sums, maxes), filled below (the counters import this module)


def _targets() -> tuple:
    global _TARGETS
    if not _TARGETS:
        from engine.stats.counters import AGENT_COUNTERS, QUEUE_COUNTERS

        _TARGETS = (
            (QueueInterval, QueueDay, ("queue",), QUEUE_COUNTERS, ("wait_max",)),
            (AgentInterval, AgentDay, ("user",), AGENT_COUNTERS, ()),
            (AgentPauseInterval, AgentPauseDay, ("user", "pause_id"), ("seconds",), ()),
        )
    return _TARGETS


def _aggregate(account_id: int, tz: dt.tzinfo, lo: int | None, hi: int | None, *, fetch: Fetch) -> dict:
    """{target model: {(keys..., day): [sums..., maxes...]}} of the account's 15-minute rows in [lo, hi)."""
    out: dict = {}
    for source, target, keys, sums, maxes in _targets():
        found = out[target] = {}
        cond = source.account == account_id
        if lo is not None:
            cond &= source.start >= lo
        if hi is not None:
            cond &= source.start < hi
        bounds = fetch(source.select(peewee.fn.MIN(source.start), peewee.fn.MAX(source.start)).where(cond))
        if not bounds or bounds[0][0] is None:
            continue
        key_fields = [getattr(source, k) for k in keys]
        aggregates = [peewee.fn.SUM(getattr(source, n)) for n in sums] + \
            [peewee.fn.MAX(getattr(source, n)) for n in maxes]
        for start, end, offset in _runs(tz, bounds[0][0], bounds[0][1] + 1):
            if offset is None:
                day_expr = peewee.SQL(str(local_day_at(tz, start)))
            else:  # the offset inlined (an int we computed): PostgreSQL matches GROUP BY to the select by text
                day_expr = (source.start + peewee.SQL(str(int(offset)))) / peewee.SQL("86400")
            grouping = key_fields if offset is None else [*key_fields, day_expr]  # a constant is no GROUP BY term
            query = (source.select(*key_fields, day_expr, *aggregates)
                     .where(cond & (source.start >= start) & (source.start < end)).group_by(*grouping))
            for row in fetch(query):
                found[tuple(int(v) for v in row[:len(keys) + 1])] = [int(v or 0) for v in row[len(keys) + 1:]]
    return out


def local_day_at(tz: dt.tzinfo, ts: int) -> int:
    return day_number(dt.datetime.fromtimestamp(ts, tz).date())


RECENT = 86400  # the last day of 15-minute rows is summed again inside the writing transaction


def rebuild(account_id: int) -> int:
    """Rebuild the account's day rows from its 15-minute rows in its current zone; returns the rows written.

    The old history is summed off the event loop (engine.stats.offloop); then, in one transaction, the
    account's day rows are replaced by those sums plus the last day's rows summed there and then (the
    rows still being written to), so nothing counted meanwhile is lost."""
    forget(account_id)
    name, tz = zone_of(account_id)
    split = now() - now() % 900 - RECENT
    old = offloop.run(_aggregate, account_id, tz, None, split)
    written = 0
    with db.atomic():
        recent = _aggregate(account_id, tz, split, None, fetch=offloop.on_loop)
        for _source, target, keys, sums, maxes in _targets():
            merged = old.get(target, {})
            for key, values in recent.get(target, {}).items():
                if key in merged:
                    merged[key] = [a + b for a, b in zip(merged[key][:len(sums)], values[:len(sums)], strict=True)] \
                        + [max(a, b) for a, b in zip(merged[key][len(sums):], values[len(sums):], strict=True)]
                else:
                    merged[key] = values
            target.delete().where(target.account == account_id).execute()
            names = (*keys, "day", *sums, *maxes)
            batch = [{"account": account_id, **dict(zip(names, (*key, *values), strict=True))}
                     for key, values in merged.items()]
            for i in range(0, len(batch), 2000):
                target.insert_many(batch[i:i + 2000]).execute()
            written += len(batch)
        StatsZone.insert(account=account_id, timezone=name).on_conflict(
            conflict_target=[StatsZone.account], update={StatsZone.timezone: name}).execute()
    return written


def check_zones(account_ids: list[int] | None = None) -> list[int]:
    """Rebuild the day rows of the accounts whose time zone is not the one they were built in; returns them.
    An account seen for the first time only records its zone."""
    query = Account.select(Account.id, Account.timezone, StatsZone.timezone.alias("built")).join(
        StatsZone, peewee.JOIN.LEFT_OUTER, on=(StatsZone.account == Account.id))
    if account_ids is not None:
        query = query.where(Account.id.in_(account_ids))
    rebuilt = []
    for account_id, current, built in query.tuples():
        current = current or "UTC"
        if built == current:
            continue
        if built is None:  # its day rows, if any, were written in the zone it has
            StatsZone.insert(account=account_id, timezone=current).on_conflict_ignore().execute()
            continue
        log.info("account %d: time zone %s (day rows were in %s): rebuilding them", account_id, current, built)
        rebuild(account_id)
        rebuilt.append(account_id)
    return rebuilt
