"""Time groups: whether a weekly schedule with dated exceptions is open, and when that next changes.

Pure: no database and no clock, so the engine's timers and the tests ask the
same questions with any instant. Times are wall-clock times in the group's
IANA zone, which makes daylight-saving days the hard part. One rule maps a
wall-clock time to an instant everywhere: a time in a skipped hour is the first
valid instant after the gap, a time in a repeated hour is its first occurrence.
That mapping never goes backwards, so adjacent ranges stay adjacent on DST days.

A spec is a mapping (or an object, e.g. the TimeGroup row) with `timezone`,
`ranges` and `exceptions`, in the normalised form `normalise_*` return:

* ranges: `[{"days": ["mon", ...], "start": "09:00", "end": "17:30"}]` — `end`
  may be "24:00"; an end before the start runs past midnight into the next day;
* exceptions: `[{"date": "2026-12-25", "closed": true}]` closes exactly that
  calendar day, 00:00 to 24:00 (also a weekly range running into it from the
  day before; a range it would have started that runs into the next day still
  opens the next day's small hours), and
  `[{"date": ..., "start": ..., "end": ...}]` adds an open range that day. A
  closed day's own ranges replace the weekly ones.
"""
from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RANGES = 100
MAX_EXCEPTIONS = 1000
# Exception dates stay well inside datetime's range so day arithmetic never overflows.
MIN_YEAR, MAX_YEAR = 2000, 2200

_TIME = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")
_DAY_MINUTES = 24 * 60


class SpecError(ValueError):
    """A malformed schedule; the message starts with the offending field's path."""


# --- validation and normalisation --------------------------------------------------------------


def _minutes(value: Any, where: str, *, allow_24: bool) -> int:
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise SpecError(f"{where}: expected a time as HH:MM")
    minutes = int(match.group(1)) * 60 + int(match.group(2))
    if minutes > _DAY_MINUTES or (minutes == _DAY_MINUTES and not allow_24):
        raise SpecError(f"{where}: {value} is not a time of day" + (" (24:00 only as an end)" if allow_24 else ""))
    return minutes


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


_DAY_NAMES = {name: i for i, name in enumerate(DAYS)} | {
    name: i for i, name in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
}


def _day_index(value: Any, where: str) -> list[int]:
    """Day numbers of one item of `days`: a name, a number (0 = Monday) or a span such as "mon-fri"."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 6:
            return [value]
        raise SpecError(f"{where}: day numbers run from 0 (Monday) to 6 (Sunday)")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _DAY_NAMES:
            return [_DAY_NAMES[text]]
        first, dash, last = text.partition("-")
        if dash and first.strip() in _DAY_NAMES and last.strip() in _DAY_NAMES:
            # "mon-fri"; "fri-mon" wraps over the weekend
            a, b = _DAY_NAMES[first.strip()], _DAY_NAMES[last.strip()]
            return [(a + i) % 7 for i in range((b - a) % 7 + 1)]
    raise SpecError(f"{where}: {value!r} is not a day (mon..sun, mon-fri, or 0..6 with 0 = Monday)")


def _start_end(item: Mapping[str, Any], where: str) -> tuple[int, int]:
    start = _minutes(item.get("start"), f"{where}.start", allow_24=False)
    end = _minutes(item.get("end"), f"{where}.end", allow_24=True)
    if end == start:
        raise SpecError(f"{where}.end: must differ from start (use 00:00 to 24:00 for a whole day)")
    return start, end


def normalise_ranges(value: Any) -> list[dict[str, Any]]:
    """Weekly ranges in their stored form: day names in week order, times as HH:MM."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError("ranges: expected a list of {days, start, end}")
    if len(value) > MAX_RANGES:
        raise SpecError(f"ranges: at most {MAX_RANGES} ranges")
    out = []
    for i, item in enumerate(value):
        where = f"ranges.{i}"
        if not isinstance(item, Mapping):
            raise SpecError(f"{where}: expected an object with days, start and end")
        days = item.get("days")
        if isinstance(days, str):
            days = [part for part in days.split(",") if part.strip()]
        if not isinstance(days, list) or not days:
            raise SpecError(f"{where}.days: expected a non-empty list of days")
        indexes: set[int] = set()
        for day in days:
            indexes.update(_day_index(day, f"{where}.days"))
        start, end = _start_end(item, where)
        out.append({"days": [DAYS[d] for d in sorted(indexes)], "start": _hhmm(start), "end": _hhmm(end)})
    return out


def _date(value: Any, where: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    except ValueError:
        day = None
    if day is None:
        raise SpecError(f"{where}: expected a date as YYYY-MM-DD")
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise SpecError(f"{where}: the year must be between {MIN_YEAR} and {MAX_YEAR}")
    return day


# JSON booleans, and the 0/1 and "true"/"false" that form bodies carry
_FLAGS: dict[Any, bool] = {True: True, False: False, "1": True, "0": False, "true": True, "false": False}


def normalise_exceptions(value: Any) -> list[dict[str, Any]]:
    """Dated exceptions in their stored form; each closes the day, adds a range, or both."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise SpecError("exceptions: expected a list of {date, closed} or {date, start, end}")
    if len(value) > MAX_EXCEPTIONS:
        raise SpecError(f"exceptions: at most {MAX_EXCEPTIONS} exceptions")
    out = []
    for i, item in enumerate(value):
        where = f"exceptions.{i}"
        if not isinstance(item, Mapping):
            raise SpecError(f"{where}: expected an object with a date")
        day = _date(item.get("date"), f"{where}.date")
        closed = item.get("closed", False)
        closed = _FLAGS.get(closed) if isinstance(closed, bool | int | str) else None
        if closed is None:
            raise SpecError(f"{where}.closed: expected true or false")
        entry: dict[str, Any] = {"date": day.isoformat()}
        if closed:
            entry["closed"] = True
        if "start" in item or "end" in item:
            start, end = _start_end(item, where)
            entry.update(start=_hhmm(start), end=_hhmm(end))
        elif not closed:
            raise SpecError(f"{where}: give closed: true, or start and end of an extra open range")
        out.append(entry)
    return out


def normalise_timezone(value: Any) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise SpecError(f"timezone: unknown time zone {value!r} (use an IANA name such as 'Europe/Berlin')") from None
    return value


# --- the schedule --------------------------------------------------------------------------------


@dataclass
class Schedule:
    """A spec compiled for repeated questions: ranges as minutes, exceptions by date."""

    zone: zoneinfo.ZoneInfo
    weekly: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    closed: frozenset[dt.date] = frozenset()
    extra: dict[dt.date, list[tuple[int, int]]] = field(default_factory=dict)
    exception_dates: tuple[dt.date, ...] = ()


def _get(spec: Any, name: str) -> Any:
    return spec.get(name) if isinstance(spec, Mapping) else getattr(spec, name, None)


def _span(start: int, end: int) -> tuple[int, int]:
    """Minutes from the start day's midnight; an end before the start is on the next day."""
    return (start, end + _DAY_MINUTES) if end < start else (start, end)


def compile_spec(spec: Any) -> Schedule:
    """Validate and compile a spec (mapping or row); raises SpecError when it is malformed."""
    if isinstance(spec, Schedule):
        return spec
    zone = zoneinfo.ZoneInfo(normalise_timezone(_get(spec, "timezone") or "UTC"))
    schedule = Schedule(zone=zone)
    for item in normalise_ranges(_get(spec, "ranges")):
        span = _span(_minutes(item["start"], "", allow_24=False), _minutes(item["end"], "", allow_24=True))
        for day in item["days"]:
            schedule.weekly.setdefault(DAYS.index(day), []).append(span)
    closed = set()
    for item in normalise_exceptions(_get(spec, "exceptions")):
        day = dt.date.fromisoformat(item["date"])
        if item.get("closed"):
            closed.add(day)
        if "start" in item:
            span = _span(_minutes(item["start"], "", allow_24=False), _minutes(item["end"], "", allow_24=True))
            schedule.extra.setdefault(day, []).append(span)
    schedule.closed = frozenset(closed)
    schedule.exception_dates = tuple(sorted(closed | set(schedule.extra)))
    return schedule


def _instant(zone: zoneinfo.ZoneInfo, day: dt.date, minutes: int) -> int:
    """Epoch seconds of a wall-clock time: in a gap the first valid instant after it, in an overlap the first."""
    day = day + dt.timedelta(days=minutes // _DAY_MINUTES)
    minutes %= _DAY_MINUTES
    wall = dt.datetime(day.year, day.month, day.day, minutes // 60, minutes % 60)
    first = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    if dt.datetime.fromtimestamp(first, zone).replace(tzinfo=None) == wall:
        return first
    # A skipped time: fold=0 reads it with the offset before the gap (an instant after the
    # gap), fold=1 with the offset after it (an instant before). The gap ends in between.
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    hi = first
    if lo >= hi:
        return first
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def _merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _subtract(intervals: list[tuple[int, int]], holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for start, end in intervals:
        pieces = [(start, end)]
        for h_start, h_end in holes:
            pieces = [p for s, e in pieces for p in ((s, min(e, h_start)), (max(s, h_end), e)) if p[1] > p[0]]
        out.extend(pieces)
    return out


def _open_intervals(schedule: Schedule, first: dt.date, last: dt.date) -> list[tuple[int, int]]:
    """Merged open intervals (epoch seconds, half-open) of the ranges that begin on days first..last.

    Exact from the start of day first+1 to the start of day last+1; ranges
    beginning outside the days asked for are not seen.
    """
    zone = schedule.zone
    weekly: list[tuple[int, int]] = []
    extra: list[tuple[int, int]] = []
    day = first
    while day <= last:
        for start, end in schedule.weekly.get(day.weekday(), ()):
            weekly.append((_instant(zone, day, start), _instant(zone, day, end)))
        for start, end in schedule.extra.get(day, ()):
            extra.append((_instant(zone, day, start), _instant(zone, day, end)))
        day += dt.timedelta(days=1)
    holes = [
        (_instant(zone, d, 0), _instant(zone, d, _DAY_MINUTES))
        for d in schedule.closed
        if first <= d <= last + dt.timedelta(days=1)
    ]
    return _merge(_subtract(weekly, holes) + extra)


def _timestamp(moment: dt.datetime, name: str) -> float:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return moment.timestamp()


def is_open(tg_spec: Any, at: dt.datetime) -> bool:
    """Whether the time group is open at the instant `at` (timezone-aware)."""
    schedule = compile_spec(tg_spec)
    t = _timestamp(at, "at")
    day = at.astimezone(schedule.zone).date()
    intervals = _open_intervals(schedule, day - dt.timedelta(days=2), day + dt.timedelta(days=1))
    return any(start <= t < end for start, end in intervals)


_WINDOW = 15  # days looked at per step: each weekday twice, so a DST-shortened day cannot hide a range


def next_change(tg_spec: Any, after: dt.datetime) -> dt.datetime | None:
    """The first instant after `after` at which `is_open` changes, or None when it never does.

    Returned in UTC: an aware datetime of a zone's repeated hour never compares equal
    to one of another zone (PEP 495), which would surprise callers. `is_open` is
    constant on [after, result).
    """
    schedule = compile_spec(tg_spec)
    t = _timestamp(after, "after")
    one = dt.timedelta(days=1)
    scan = after.astimezone(schedule.zone).date()
    try:
        while True:
            first, last = scan - one, scan + _WINDOW * one
            # Only boundaries strictly inside the part computed exactly are real changes.
            exact_from = max(t, _instant(schedule.zone, first, 0))
            exact_until = _instant(schedule.zone, last + one, 0)
            for start, end in _open_intervals(schedule, first - one, last):
                for boundary in (start, end):
                    if exact_from < boundary < exact_until:
                        return dt.datetime.fromtimestamp(boundary, dt.UTC)
            if any(first - one <= d <= last + one for d in schedule.exception_dates):
                scan += (_WINDOW - 1) * one
                continue
            # No exception and no change for two weeks: the weekly ranges alone are constant
            # (none, or the whole week), so only a later exception can change anything.
            later = [d for d in schedule.exception_dates if d > last]
            if not later:
                return None
            scan = later[0] - one
    except OverflowError:
        return None
