"""Queues (vendor doc: Queues) and queue membership, from the queue side and from the user side.

The logic lives in `engine.callcenter.queues`; the views parse, call it and shape the records.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, WithJsonSchema

from api import users as users_api
from api.auth import Principal
from api.envelope import ok
from api.membership import MemberRows, QueueRows, memberships
from api.spec import Flag, Id, IdList, Page, Schema, endpoint, submitted_fields
from engine.callcenter import queues as service
from engine.directory import extensions
from engine.store.models import Queue, Tier

bp = Blueprint("queues", __name__, url_prefix="/api")

Strategy = Literal[service.STRATEGIES]  # type: ignore[valid-type]
DEFAULT_TIME_BASE_SCORE = "system"


def _empty_is_default(value: Any) -> Any:
    """The vendor document shows `"time_base_score": ""`: empty means unset, i.e. the default (`system`)."""
    return DEFAULT_TIME_BASE_SCORE if isinstance(value, str) and not value.strip() else value


TimeBaseScore = Annotated[Literal[service.TIME_BASE_SCORES],  # type: ignore[valid-type]
                          BeforeValidator(_empty_is_default,
                                          json_schema_input_type=Literal[(*service.TIME_BASE_SCORES, "")])]
STRATEGY_DOC = (
    "ring-all / longest-idle-agent / round-robin / top-down / agent-with-least-talk-time / "
    "agent-with-fewest-calls / sequentially-by-agent-order / sequentially-by-next-agent-order / random / "
    "ring-progressively. sequentially-by-next-agent-order behaves exactly as round-robin (mod_callcenter's "
    "round-robin is 'the next position after the last-offered agent on the same level, then wrap around'); "
    "the queue keeps the name given."
)
_JSON_MAX_BYTES = 64 * 1024
_JSON_MAX_DEPTH = 20
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _json_object_text(value: Any) -> Any:
    """A JSON object may arrive as JSON text in a form field; null means empty."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError("not a JSON object") from None
    return value


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > _JSON_MAX_DEPTH:
        raise ValueError(f"nested deeper than {_JSON_MAX_DEPTH} levels")
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise ValueError("control characters are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, depth + 1)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value)
    if len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()) > _JSON_MAX_BYTES:
        raise ValueError(f"larger than {_JSON_MAX_BYTES} bytes")
    return value


JsonObject = Annotated[dict[str, Any], BeforeValidator(_json_object_text), AfterValidator(_bounded_json)]
# Free text as in the vendor document ("#1e90ff", "red", "rgb(30,144,255)"): one line, bounded.
def _one_line(value: str) -> str:
    if any(ord(c) < 0x20 for c in value):  # the Schema already refuses the others; tabs and line breaks too
        raise ValueError("control characters are not allowed")
    return value


Color = Annotated[str, Field(max_length=64, description="a colour for the TV wallboard, e.g. #RRGGBB or a CSS "
                                                        "colour name; free text up to 64 characters, one line"),
                  AfterValidator(_one_line)]
Wait = Annotated[int, Field(ge=0, le=86400, description="seconds, 0..86400")]
MediaId = Annotated[Id, Field(description="a media id of the account (GET /api/media); 400 when it has none")]
_EXIT = {"type": "object", "required": ["type"], "additionalProperties": False, "properties": {
    "type": {"enum": ["queue", "extension", "voicemail", "number", "hangup"]},
    "target": {"type": ["integer", "string"], "description": "queue: a queue id; extension: a number of the "
               "account; voicemail: a user id (its voicemail box); number: an outside number (digits, optional "
               "leading +) dialled through the outbound gateway; hangup: none"}}}
EXITS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "description": "where a caller goes when the queue gives up: `max_wait` (waited max_wait_time), `no_agent` "
                   "(no agent for max_wait_time_with_no_agent; else max_wait applies), `keys` (the caller "
                   "pressed one of these keys while waiting). Without an exit the caller is hung up. "
                   "Targets must exist in the account when saved.",
    "properties": {"max_wait": _EXIT, "no_agent": _EXIT,
                   "keys": {"type": "object", "propertyNames": {"pattern": "^[0-9*#]$"},
                            "additionalProperties": _EXIT}},
}
PLAYBACK_SCHEMA = {
    "type": "object",
    "description": "`playlist`: media ids played in order as the hold music, then again (overrides moh_id)",
    "properties": {"playlist": {"type": "array", "maxItems": 50, "items": {"type": "integer", "minimum": 1}}},
}
QueueName = Annotated[str, Field(min_length=1, max_length=200)]


class QueueFields(Schema):
    """Writable queue fields (vendor doc: Queue Properties). On PUT only the submitted ones change."""

    name: QueueName | None = None
    tv_name: Annotated[str, Field(max_length=100, description="short name for the TV wallboard")] | None = None
    site_id: Annotated[Id, Field(description="a site of the account (GET /api/site): the site of the queue's call "
                                            "events")] | None = None
    strategy: Annotated[Strategy, Field(description=STRATEGY_DOC)] | None = None
    record: Annotated[Flag, Field(description="override recording flag, 0 or 1")] | None = None
    time_base_score: Annotated[TimeBaseScore, Field(
        description="system: a caller's score counts from entering the system; queue: from entering this queue; "
                    "empty: the default, system",
    )] | None = None
    max_wait_time: Wait | None = None
    max_wait_time_with_no_agent: Wait | None = None
    max_wait_time_with_no_agent_time_reached: Wait | None = None
    tier_rules_apply: bool | None = None
    tier_rule_wait_second: Wait | None = None
    tier_rule_no_agent_no_wait: bool | None = None
    discard_abandoned_after: Wait | None = None
    abandoned_resume_allowed: bool | None = None
    tier_rule_wait_multiply_level: bool | None = None
    announce_id: Annotated[MediaId, Field(description="media played to waiting callers every announce_frequency "
                                                      "seconds")] | None = None
    announce_frequency: Annotated[int, Field(ge=0, le=86400, description="seconds between announcements "
                                                                         "(0: none)")] | None = None
    moh_id: Annotated[MediaId, Field(description="hold music (a media id); null: the music that ships with "
                                                 "switchdesk")] | None = None
    sla_strategy: Annotated[int, Field(ge=0, le=1000, description="service-level agreement strategy")] | None = None
    sla_answer_time: Wait | None = None
    auto_answer: Annotated[bool, Field(description="the agent's phone answers by itself (sip_auto_answer, "
                                                   "Call-Info answer-after=0)")] | None = None
    pre_bridge_announce: Annotated[MediaId, Field(description="media played to the agent once it answers, "
                                                              "before the caller is put through")] | None = None
    join_announce: Annotated[MediaId, Field(description="media played to the caller on entering the "
                                                        "queue")] | None = None
    exits: Annotated[JsonObject, WithJsonSchema(EXITS_SCHEMA)] | None = None
    ring_timeout: Annotated[int, Field(ge=0, le=3600, description="seconds an offer of this queue's calls rings "
                                                                  "the agent, 0..3600 (0: the device's own "
                                                                  "timeout); the device's timeout still "
                                                                  "ends it when shorter")] | None = None
    background_color: Color | None = None
    font_color: Color | None = None
    labels: Annotated[IdList, Field(max_length=1000, description="label ids (stored, not checked)")] | None = None
    avg_wait_range: Wait | None = None
    audio_playback: Annotated[JsonObject, WithJsonSchema(PLAYBACK_SCHEMA)] | None = None
    music_advanced: bool | None = None
    users: Annotated[MemberRows, Field(description="(POST/PUT) replaces the queue's agents")] | None = None


class QueueCreate(QueueFields):
    name: QueueName
    strategy: Annotated[Strategy, Field(description=STRATEGY_DOC)]
    time_base_score: TimeBaseScore


class QueueQuery(Page):
    name: Annotated[str, Field(max_length=200, description="exact name")] | None = None
    strategy: Strategy | None = None
    time_base_score: Literal[service.TIME_BASE_SCORES] | None = None  # type: ignore[valid-type]


class MembersBody(Schema):
    users: MemberRows


class UserQueuesBody(Schema):
    queues: QueueRows = Field(validation_alias=AliasChoices("queues", "queue_perms", "users"))


class IdsBody(Schema):
    ids: Annotated[IdList, Field(min_length=1, max_length=100000)]


_NULLABLE = {"tv_name", "site_id", "announce_id", "moh_id", "pre_bridge_announce", "join_announce",
             "background_color", "font_color"}
_DEFAULT_WHEN_NULL = {"labels": [], "exits": {}, "audio_playback": {}}


def _submitted(body: QueueFields) -> tuple[dict[str, Any], list[service.Membership] | None]:
    fields = submitted_fields(body, _NULLABLE | {"users"}, _DEFAULT_WHEN_NULL)
    members = memberships(fields.pop("users")) if "users" in fields else None
    return fields, members


# --- records -------------------------------------------------------------------------------------

_QUEUE_FIELDS = (
    "site_id", "name", "tv_name", "strategy", "record", "time_base_score", "max_wait_time",
    "max_wait_time_with_no_agent", "max_wait_time_with_no_agent_time_reached", "tier_rules_apply",
    "tier_rule_wait_second", "tier_rule_no_agent_no_wait", "discard_abandoned_after", "abandoned_resume_allowed",
    "tier_rule_wait_multiply_level", "announce_id", "announce_frequency", "moh_id", "sla_strategy",
    "sla_answer_time", "auto_answer", "pre_bridge_announce", "join_announce", "exits", "ring_timeout",
    "background_color", "font_color", "labels", "avg_wait_range", "audio_playback", "music_advanced",
)


def _input_row(tier: Tier, first: int) -> list[Any]:
    return [first, tier.mode, tier.position, tier.level, tier.timegroup_id]


def _member_row(tier: Tier) -> list[Any]:
    return [tier.user_id, tier.mode, tier.position, tier.level, tier.user.name, tier.timegroup_id, tier.joined]


MEMBER_ROW_SCHEMA = {
    "type": "array", "minItems": 7, "maxItems": 7, "items": {"type": ["integer", "string", "boolean", "null"]},
    "description": "[user_id, mode, position, level, name, timegroup_id, joined]",
}
QUEUE_RECORD_SCHEMA = {
    "type": "object",
    "required": ["id", "account_id", "site_id", "name", "tv_name", "strategy", "record", "time_base_score",
                 "user_ids", "extensions", "users"],
    "properties": {
        "id": {"type": "integer"}, "account_id": {"type": "integer"}, "site_id": {"type": ["integer", "null"]},
        "name": {"type": "string"}, "tv_name": {"type": ["string", "null"]}, "strategy": {"type": "string"},
        "record": {"type": "integer"}, "time_base_score": {"type": "string"},
        "user_ids": {"type": "array", "items": {"type": "integer"}}, "extensions": {"type": "string"},
        "users": {"type": "array", "items": MEMBER_ROW_SCHEMA},
    },
}


def queue_records(account_id: int, queues: list[Queue]) -> list[dict[str, Any]]:
    """Queues as the API returns them, in a constant number of queries whatever their number."""
    ids = [q.id for q in queues]
    tiers = service.tiers_of_queues(ids) if ids else {}
    numbers = extensions.numbers_for("queue", ids) if ids else {}
    out = []
    for queue in queues:
        record: dict[str, Any] = {"id": queue.id, "account_id": queue.account_id}
        for name in _QUEUE_FIELDS:
            record[name] = getattr(queue, name)
        members = sorted(tiers.get(queue.id, []), key=lambda t: t.user_id)
        record["labels"] = queue.labels or []
        record["exits"] = queue.exits or {}
        record["audio_playback"] = queue.audio_playback or {}
        record["user_ids"] = [t.user_id for t in members]
        record["extensions"] = ",".join(numbers.get(queue.id, []))
        # As in the vendor document (and GET /cc_queue/{id}/users); written back, such rows are accepted too.
        record["users"] = member_rows(members)
        record["ts"] = queue.ts
        out.append(record)
    return out


def member_rows(tiers: list[Tier]) -> list[list[Any]]:
    """`[user_id, mode, position, level, name, timegroup_id, joined]`, as in the vendor doc's example."""
    return [_member_row(t) for t in tiers]


def user_queue_rows(tiers: list[Tier]) -> list[list[Any]]:
    """`[queue_id, mode, position, level, timegroup_id]`: the format written, so GET then PUT round-trips."""
    return [_input_row(t, t.queue_id) for t in tiers]


def _user_queue_fields(user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The user record's `queue_perms` (memberships) and `queues` (joined queue ids), in one query."""
    if not user_ids:
        return {}
    tiers = service.tiers_of_users(user_ids)
    return {
        user_id: {"queue_perms": user_queue_rows(rows), "queues": [t.queue_id for t in rows if t.joined]}
        for user_id, rows in tiers.items()
    }


if _user_queue_fields.__name__ not in {getattr(p, "__name__", "") for p in users_api.EXTRA_PROVIDERS}:
    users_api.EXTRA_PROVIDERS.append(_user_queue_fields)


# --- queues --------------------------------------------------------------------------------------


@endpoint(bp, "/cc_queue", ["GET"], summary="List queues", tag="queues", permission="queues", query=QueueQuery,
          response={"type": "array", "items": QUEUE_RECORD_SCHEMA})
def list_queues(principal: Principal, query: QueueQuery):
    """`name` (exact), `strategy` and `time_base_score` filter the list."""
    queues = service.list_queues(
        principal.account_id, name=query.name, strategy=query.strategy, time_base_score=query.time_base_score,
        limit=query.limit, offset=query.offset,
    )
    return ok(queue_records(principal.account_id, queues))


@endpoint(bp, "/cc_queue/<int:queue_id>", ["GET"], summary="Get a queue", tag="queues", permission="queues",
          response=QUEUE_RECORD_SCHEMA)
def get_queue(principal: Principal, queue_id: int):
    return ok(queue_records(principal.account_id, [service.get_queue(principal.account_id, queue_id)])[0])


@endpoint(bp, "/cc_queue", ["POST"], summary="Create a queue", tag="queues", permission="queues", body=QueueCreate,
          errors={409: "the name is taken, or the memberships changed concurrently"})
def create_queue(principal: Principal, body: QueueCreate):
    """`name`, `strategy` and `time_base_score` are required; names are unique in the account (409).

    `users` (rows `[user_id, mode, position, level, timegroup_id]`) sets the queue's agents.
    """
    fields, members = _submitted(body)
    queue = service.create_queue(principal.account_id, fields, members)
    return ok(queue_records(principal.account_id, [queue])[0])


@endpoint(bp, "/cc_queue/<int:queue_id>", ["PUT"], summary="Update a queue (only submitted fields)",
          tag="queues", permission="queues", body=QueueFields,
          errors={409: "the name is taken, or the memberships changed concurrently"})
def update_queue(principal: Principal, queue_id: int, body: QueueFields):
    """`users`, when submitted, replaces the queue's agents."""
    fields, members = _submitted(body)
    queue = service.update_queue(principal.account_id, queue_id, fields, members)
    return ok(queue_records(principal.account_id, [queue])[0])


@endpoint(bp, "/cc_queue/<int:queue_id>", ["DELETE"], summary="Delete a queue with its memberships",
          tag="queues", permission="queues")
def delete_queue(principal: Principal, queue_id: int):
    """The queue's memberships and the extensions and DIDs that route to it go with it."""
    service.delete_queue(principal.account_id, queue_id)
    return ok()


# --- membership: the queue side ------------------------------------------------------------------


@endpoint(bp, "/cc_queue/<int:queue_id>/users", ["GET"], summary="List a queue's agents", tag="queues",
          permission="queues", response={"type": "array", "items": MEMBER_ROW_SCHEMA})
def list_queue_users(principal: Principal, queue_id: int):
    """Rows `[user_id, mode, position, level, name, timegroup_id, joined]`; `joined` is live state (read-only)."""
    return ok(member_rows(service.queue_members(principal.account_id, queue_id)))


@endpoint(bp, "/cc_queue/<int:queue_id>/users", ["POST"], summary="Add or update a queue's agents",
          tag="queues", permission="queues", body=MembersBody,
          errors={409: "the memberships changed concurrently: try again"})
def add_queue_users(principal: Principal, queue_id: int, body: MembersBody):
    """`users`: rows `[user_id, mode, position, level, timegroup_id]`; listed agents are added or updated."""
    tiers = service.set_queue_members(principal.account_id, queue_id, memberships(body.users), replace=False)
    return ok(member_rows(tiers))


@endpoint(bp, "/cc_queue/<int:queue_id>/users", ["PUT"], summary="Replace a queue's agents", tag="queues",
          permission="queues", body=MembersBody,
          errors={409: "the memberships changed concurrently: try again"})
def replace_queue_users(principal: Principal, queue_id: int, body: MembersBody):
    """`users`: the complete list; agents not listed leave the queue."""
    tiers = service.set_queue_members(principal.account_id, queue_id, memberships(body.users), replace=True)
    return ok(member_rows(tiers))


@endpoint(bp, "/cc_queue/<int:queue_id>/users", ["DELETE"], summary="Remove agents from a queue", tag="queues",
          permission="queues", body=IdsBody,
          errors={409: "the memberships changed concurrently: try again"})
def remove_queue_users(principal: Principal, queue_id: int, body: IdsBody):
    """`ids`: user ids (array or comma-separated). Users that are not members are ignored."""
    return ok(member_rows(service.remove_queue_members(principal.account_id, queue_id, body.ids)))


# --- membership: the user side -------------------------------------------------------------------


@endpoint(bp, "/user/<int:user_id>/queues", ["GET"], summary="List an agent's queues", tag="queues",
          permission="queues")
def list_user_queues(principal: Principal, user_id: int):
    """Rows `[queue_id, mode, position, level, timegroup_id]`."""
    return ok(user_queue_rows(service.user_queues(principal.account_id, user_id)))


@endpoint(bp, "/user/<int:user_id>/queues", ["POST"], summary="Add or update an agent's queues", tag="queues",
          permission="queues", body=UserQueuesBody,
          errors={409: "the memberships changed concurrently: try again"})
def add_user_queues(principal: Principal, user_id: int, body: UserQueuesBody):
    """`queues` (or `queue_perms`): rows `[queue_id, mode, position, level, timegroup_id]`."""
    tiers = service.set_user_queues(principal.account_id, user_id, memberships(body.queues), replace=False)
    return ok(user_queue_rows(tiers))


@endpoint(bp, "/user/<int:user_id>/queues", ["PUT"], summary="Replace an agent's queues", tag="queues",
          permission="queues", body=UserQueuesBody,
          errors={409: "the memberships changed concurrently: try again"})
def replace_user_queues(principal: Principal, user_id: int, body: UserQueuesBody):
    """`queues` (or `queue_perms`): the complete list; queues not listed are left."""
    tiers = service.set_user_queues(principal.account_id, user_id, memberships(body.queues), replace=True)
    return ok(user_queue_rows(tiers))


@endpoint(bp, "/user/<int:user_id>/queues", ["DELETE"], summary="Remove an agent from queues", tag="queues",
          permission="queues", body=IdsBody,
          errors={409: "the memberships changed concurrently: try again"})
def remove_user_queues(principal: Principal, user_id: int, body: IdsBody):
    """`ids`: queue ids (array or comma-separated). Queues the agent is not a member of are ignored."""
    return ok(user_queue_rows(service.remove_user_queues(principal.account_id, user_id, body.ids)))
