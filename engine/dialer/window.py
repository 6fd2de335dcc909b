"""Calling windows: the campaign's time group, and the lead's own local time from its number.

A number's time zones come from `phonenumbers`' geographic data (a US number
by its area code, most countries have one zone). A number that may be in
several zones is called only when the local time is inside the window in every
one of them: "no call before 08:00 there" must hold wherever "there" is. A
number with no known zone is judged in the account's time zone.
"""
from __future__ import annotations

import datetime as dt
import zoneinfo
from functools import lru_cache

import phonenumbers
from phonenumbers import timezone as pn_timezone

from engine.callcenter import timegroups

UNKNOWN = "Etc/Unknown"


@lru_cache(maxsize=65536)
def zones_of(phone_key: str, fallback: str) -> tuple[str, ...]:
    """The IANA zones a canonical number (E.164 or digits) may ring in; `fallback` when unknown."""
    zones: tuple[str, ...] = ()
    if phone_key.startswith("+"):
        try:
            parsed = phonenumbers.parse(phone_key, None)
            zones = tuple(z for z in pn_timezone.time_zones_for_number(parsed) if z != UNKNOWN)
        except phonenumbers.NumberParseException:
            zones = ()
    valid = []
    for name in zones or (fallback,):
        try:
            zoneinfo.ZoneInfo(name)
            valid.append(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
    return tuple(valid) or ("UTC",)


def local_minutes(zone: str, at: dt.datetime) -> int:
    local = at.astimezone(zoneinfo.ZoneInfo(zone))
    return local.hour * 60 + local.minute


def lead_window_reason(phone_key: str, fallback_zone: str, start: int, end: int, at: dt.datetime) -> str | None:
    """None when every zone of the number is inside [start, end) local minutes; else why not."""
    for zone in zones_of(phone_key, fallback_zone):
        minutes = local_minutes(zone, at)
        inside = start <= minutes < end if start <= end else (minutes >= start or minutes < end)
        if not inside:
            return (f"outside the calling window: {minutes // 60:02d}:{minutes % 60:02d} in {zone} "
                    f"(calls {start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d})")
    return None


def next_local_open(phone_key: str, fallback_zone: str, start: int, end: int, at: dt.datetime) -> dt.datetime:
    """A moment to look at the lead again: the next local window start in its latest zone (at most a day)."""
    best = at + dt.timedelta(minutes=15)
    for zone in zones_of(phone_key, fallback_zone):
        local = at.astimezone(zoneinfo.ZoneInfo(zone))
        opening = local.replace(hour=start // 60, minute=start % 60, second=0, microsecond=0)
        if opening <= local:
            opening += dt.timedelta(days=1)
        best = max(best, opening.astimezone(dt.UTC))
    return min(best, at + dt.timedelta(days=1))


def timegroup_reason(group: object | None, at: dt.datetime) -> str | None:
    """None when the campaign has no time group or it is open now."""
    if group is None:
        return None
    if timegroups.is_open(group, at):
        return None
    return f"time group {group.id} is closed"  # type: ignore[attr-defined]
