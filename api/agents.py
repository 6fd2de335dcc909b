"""Agents (vendor doc: Agents): checkInDevice, checkOut, setPause, wrapup, setQueues.

`user_id` defaults to the caller (the API key's user or the session user);
acting on yourself needs no permission beyond authentication, acting on
another user needs the `agents` permission, and another account's user is a
404. Every call commits the desired state and answers at once, also while
FreeSWITCH is down: the engine applies it (now, or on reconnect).
"""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint
from pydantic import Field

from api import users as users_api
from api.auth import Principal
from api.envelope import APIError, ok
from api.queues import QUEUE_RECORD_SCHEMA, queue_records
from api.spec import Flag, Id, IdList, Schema, endpoint
from engine.callcenter import agent_state
from engine.callcenter import agents as service
from engine.store.models import Queue, Tier

bp = Blueprint("agents", __name__, url_prefix="/api/cc_agent")

UserId = Annotated[Id | None, Field(description="the agent; default: the caller")]


class AgentQuery(Schema):
    user_id: UserId = None


class CheckInDeviceQuery(AgentQuery):
    device_id: Id
    forceCheckOut: Flag = Field(0, description="1: check the agent out of its current device and whoever "
                                               "holds the target device out of it first")


class PauseQuery(AgentQuery):
    id: Annotated[int, Field(ge=0, le=2**53, description="a pause reason id, or 0: available")]


class WrapupQuery(AgentQuery):
    seconds: Annotated[int, Field(ge=0, le=86400)] | None = Field(
        None, description="wrap-up from now; omitted: the user's wrap_up_time; 0 ends wrap-up now")


class QueuesQuery(AgentQuery):
    queue_ids: IdList = Field(description="array or comma-separated queue ids: the queues to be joined to")


def _target(principal: Principal, user_id: int | None) -> int:
    if user_id is None or user_id == principal.user.id:
        return principal.user.id
    if not principal.can("agents"):
        raise APIError(403, "Permission denied: agents")
    return user_id


_METHODS = ["GET", "POST"]


@endpoint(bp, "/checkInDevice", _METHODS, summary="Check an agent in with a device", tag="agents",
          body=CheckInDeviceQuery)
def check_in_device(principal: Principal, body: CheckInDeviceQuery):
    """No action from the agent. A device in use by another agent, or an agent checked in on another
    device, is 409 unless `forceCheckOut=1`. The agent joins its queues with tier mode 2 or 4. Checking
    another agent out of the device (`forceCheckOut=1` on a device in use) needs `agents` (403)."""
    service.check_in_device(principal.account_id, _target(principal, body.user_id), body.device_id,
                            bool(body.forceCheckOut), may_act_for_others=principal.can("agents"))
    return ok()


@endpoint(bp, "/checkOut", _METHODS, summary="Check an agent out", tag="agents", body=AgentQuery)
def check_out(principal: Principal, body: AgentQuery):
    """Releases the device and leaves every queue; an agent that is not checked in stays so (200)."""
    service.check_out(principal.account_id, _target(principal, body.user_id))
    return ok()


@endpoint(bp, "/setPause", _METHODS, summary="Pause an agent, or make it available (id=0)", tag="agents",
          body=PauseQuery)
def set_pause(principal: Principal, body: PauseQuery):
    """A reason's max_duration ends the pause by itself; the id already in force extends it by
    max_duration from now, at most max_snooze times (409 after). The agent stays Available in
    mod_callcenter with ready_time at the pause's end, so fair strategies keep its counters."""
    service.set_pause(principal.account_id, _target(principal, body.user_id), body.id)
    return ok()


@endpoint(bp, "/wrapup", _METHODS, summary="Wrap-up for a number of seconds from now", tag="agents",
          body=WrapupQuery)
def wrapup(principal: Principal, body: WrapupQuery):
    """No queue calls until it ends. `seconds=0` ends it now, also mod_callcenter's own wrap-up after
    the last queue call."""
    service.wrapup(principal.account_id, _target(principal, body.user_id), body.seconds)
    return ok()


def membership_queues(account_id: int, tiers: list[Tier]) -> list[dict[str, Any]]:
    """The agent's queues as the vendor document's setQueues example shows them: queue records (`id`,
    `account_id`, `site_id`, `name`, `tv_name`, `strategy`, `record`, ..., `users` as 7-item rows), in the
    order of the memberships, each with `joined`: whether this agent is joined to it now."""
    by_id = {q.id: q for q in Queue.select().where(Queue.id.in_([t.queue_id for t in tiers]))} if tiers else {}
    records = queue_records(account_id, [by_id[t.queue_id] for t in tiers if t.queue_id in by_id])
    joined = {t.queue_id: t.joined for t in tiers}
    return [{**record, "joined": joined[record["id"]]} for record in records]


@endpoint(bp, "/setQueues", _METHODS, summary="Set the queues an agent is joined to", tag="agents",
          body=QueuesQuery, response={"type": "array", "items": {"allOf": [QUEUE_RECORD_SCHEMA, {
              "type": "object", "required": ["joined"], "properties": {"joined": {"type": "boolean"}}}]}})
def set_queues(principal: Principal, body: QueuesQuery):
    """`queue_ids` becomes the set of joined queues among the agent's memberships (others: 400 naming
    them). Only tiers with mode flag 1 are joined or left; locked (4) and auto-join-only (2) tiers keep
    their state, and listing one that is not joined is 400. Needs a checked-in agent (409).

    `data`: the agent's queues (every membership, joined or not) as queue objects, as in the vendor
    document's example (`id`, `account_id`, `site_id`, `name`, `tv_name`, `strategy`, `record`, ...,
    `users`: rows `[user_id, mode, position, level, name, timegroup_id, joined]`), each with `joined`:
    whether this agent is joined to it now."""
    user_id = _target(principal, body.user_id)
    tiers = service.set_queues(principal.account_id, user_id, body.queue_ids)
    return ok(membership_queues(principal.account_id, tiers))


def _user_agent_fields(user_ids: list[int]) -> dict[int, dict[str, Any]]:
    return agent_state.user_fields(user_ids) if user_ids else {}


if _user_agent_fields.__name__ not in {getattr(p, "__name__", "") for p in users_api.EXTRA_PROVIDERS}:
    users_api.EXTRA_PROVIDERS.append(_user_agent_fields)
