"""Time groups: weekly opening hours in an IANA zone with dated exceptions; tiers follow them."""
from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from flask import Blueprint
from pydantic import BeforeValidator, Field

from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import Schema, endpoint, parse_json_text
from engine.callcenter import timegroup_service as service
from engine.callcenter import timegroups
from engine.store.models import TimeGroup

bp = Blueprint("timegroups", __name__, url_prefix="/api/timegroup")

Name = Annotated[str, Field(min_length=1, max_length=200)]
JsonList = Annotated[list[Any], BeforeValidator(parse_json_text)]


class TimeGroupFields(Schema):
    name: Name | None = Field(None, description="unique in the account")
    timezone: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="IANA zone the times are wall-clock times in; default: the account's")
    ranges: JsonList | None = Field(None, description=(
        'weekly opening: [{"days": ["mon", "tue"] or "mon-fri" or [0..6] (0 = Monday), "start": "09:00", '
        '"end": "17:30"}]; end may be "24:00"; an end before the start runs past midnight'))
    exceptions: JsonList | None = Field(None, description=(
        '[{"date": "2026-12-25", "closed": true}] closes the whole day; [{"date": ..., "start": "10:00", '
        '"end": "14:00"}] adds an open range that day; a closed day\'s own ranges replace the weekly ones'))


class TimeGroupCreate(TimeGroupFields):
    name: Name


def record(group: TimeGroup, at: dt.datetime) -> dict[str, Any]:
    change = timegroups.next_change(group, at)
    return {
        "id": group.id, "account_id": group.account_id, "name": group.name, "timezone": group.timezone,
        "ranges": group.ranges or [], "exceptions": group.exceptions or [],
        "open": timegroups.is_open(group, at),
        "next_change": int(change.timestamp()) if change is not None else None,
        "ts": group.ts,
    }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def submitted(body: TimeGroupFields) -> dict[str, Any]:
    """The submitted fields, normalised; 400 naming the exact item (e.g. `ranges.1.end`)."""
    normalise = {"timezone": timegroups.normalise_timezone, "ranges": timegroups.normalise_ranges,
                 "exceptions": timegroups.normalise_exceptions}
    fields = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name in ("ranges", "exceptions"):
            value = []
        elif value is None:
            raise APIError(400, f"{name}: may not be null")
        if name in normalise:
            try:
                value = normalise[name](value)
            except timegroups.SpecError as exc:
                field, _, reason = str(exc).partition(": ")
                raise APIError(400, str(exc), {"errors": [{"field": field, "reason": reason}]}) from None
        fields[name] = value
    return fields


@endpoint(bp, "", ["GET"], summary="List time groups", tag="timegroups", permission="timegroups")
def list_timegroups(principal: Principal):
    """`open` and `next_change` (epoch seconds, null when it never changes) are computed for now."""
    at = _now()
    return ok([record(g, at) for g in TimeGroup.of(principal.account_id).order_by(TimeGroup.id)])


@endpoint(bp, "/<int:timegroup_id>", ["GET"], summary="Get a time group", tag="timegroups", permission="timegroups")
def get_timegroup(principal: Principal, timegroup_id: int):
    return ok(record(service.get_timegroup(principal.account_id, timegroup_id), _now()))


@endpoint(bp, "", ["POST"], summary="Create a time group", tag="timegroups", permission="timegroups",
          body=TimeGroupCreate, errors={409: "the name is taken"})
def create_timegroup(principal: Principal, body: TimeGroupCreate):
    return ok(record(service.save_timegroup(principal.account_id, None, submitted(body)), _now()))


@endpoint(bp, "/<int:timegroup_id>", ["PUT"], summary="Update a time group (only submitted fields)",
          tag="timegroups", permission="timegroups", body=TimeGroupFields, errors={409: "the name is taken"})
def update_timegroup(principal: Principal, timegroup_id: int, body: TimeGroupFields):
    return ok(record(service.save_timegroup(principal.account_id, timegroup_id, submitted(body)), _now()))


@endpoint(bp, "/<int:timegroup_id>", ["DELETE"], summary="Delete a time group", tag="timegroups",
          permission="timegroups")
def delete_timegroup(principal: Principal, timegroup_id: int):
    """Refused with 409 naming the queues while a tier follows the group."""
    service.delete_timegroup(principal.account_id, timegroup_id)
    return ok()
