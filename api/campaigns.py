"""Dialer campaigns (/api/campaign): lists, mode, window, retries; start/pause/stop; attempts, dispositions,
live figures and preview mode (engine/dialer). Guarded by the `campaigns` permission; an agent without it
may work its own preview leads and set the disposition of its own calls."""
from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal

from flask import Blueprint, current_app
from pydantic import BeforeValidator, Field, field_validator

from api.auth import Principal, require_permission
from api.envelope import APIError, fail, ok
from api.spec import Flag, Id, Schema, endpoint, split_list
from engine.calls import originate as calls
from engine.dialer import campaigns as service
from engine.store.models import Campaign

bp = Blueprint("campaigns", __name__, url_prefix="/api/campaign")

Name = Annotated[str, Field(min_length=1, max_length=200)]
Mode = Literal["preview", "progressive", "predictive"]
Delay = Annotated[int, Field(ge=0, le=30 * 86400)]
Ids = Annotated[list[Id], BeforeValidator(split_list), Field(max_length=50)]
HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")


def _minutes(value: Any) -> Any:
    if isinstance(value, str):
        match = HHMM.match(value.strip())
        if not match:
            raise ValueError("a time HH:MM")
        hours, minutes = value.strip().split(":")
        return int(hours) * 60 + int(minutes)
    return value


LocalTime = Annotated[int, BeforeValidator(_minutes), Field(ge=0, le=24 * 60)]


class Retry(Schema):
    no_answer: Delay | None = None
    busy: Delay | None = None
    failed: Delay | None = None
    machine: Delay | None = None


class CampaignFields(Schema):
    name: Name | None = None
    queue_id: Id | None = Field(None, description="the queue whose agents take the calls")
    list_ids: Ids | None = Field(None, description="phone lists whose leads are dialled (one or more)")
    dnc_list_ids: Ids | None = Field(None, description="do-not-call lists for this campaign; the account's lists "
                                                       "of type `dnc` always apply as well")
    mode: Mode | None = Field(None, description="preview (the agent sees the lead, then calls or skips), "
                                                "progressive (one call per free agent), predictive (dials ahead "
                                                "from the measured answer rate, under the abandon cap)")
    cid_num: Annotated[str, Field(pattern=r"^\+?[0-9]{1,32}$")] | None = Field(None, description="caller id "
                                                                                         "the lead sees")
    cid_name: Annotated[str, Field(max_length=100)] | None = None
    timegroup_id: Id | None = Field(None, description="calling window of the campaign (null: always)")
    local_start: LocalTime | None = Field(None, description="HH:MM at the lead's number; default 08:00")
    local_end: LocalTime | None = Field(None, description="HH:MM at the lead's number; default 21:00")
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    retry: Retry | None = Field(None, description="seconds before the next try per outcome")
    ring_timeout: Annotated[int, Field(ge=5, le=300)] | None = None
    call_script: Annotated[str, Field(max_length=100)] | None = None
    amd: Flag | None = Field(None, description="1: answering-machine detection with mod_avmd (a beep hangs up)")
    abandon_cap: Annotated[float, Field(ge=0.1, le=50)] | None = Field(None, description="percent, default 3")
    max_ratio: Annotated[float, Field(ge=1, le=10)] | None = Field(None, description="predictive: lines per agent")

    @field_validator("cid_name", "call_script")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is not None and any(c in value for c in "\t\r\n"):
            raise ValueError("line breaks and tabs are not allowed")
        return value


class CampaignCreate(CampaignFields):
    name: Name
    queue_id: Id
    list_ids: Ids


NULLABLE = {"cid_num", "cid_name", "timegroup_id", "call_script", "dnc_list_ids"}


def _fields(body: CampaignFields) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name not in NULLABLE:
            raise APIError(400, f"{name}: may not be null")
        if name == "retry":
            for outcome, delay in value.model_dump(exclude_none=True).items():
                fields[f"retry_{outcome}"] = delay
        elif name == "amd":
            fields[name] = bool(value)
        else:
            fields[name] = value
    return fields


def _dialer() -> Any:
    engine = current_app.config.get("ENGINE")
    return getattr(engine, "dialer", None)


@endpoint(bp, "", ["GET"], summary="List campaigns", tag="campaigns", permission="campaigns")
def list_campaigns(principal: Principal):
    return ok([service.record(c) for c in Campaign.of(principal.account_id).order_by(Campaign.id)])


@endpoint(bp, "/<int:campaign_id>", ["GET"], summary="Get a campaign", tag="campaigns", permission="campaigns")
def get_campaign(principal: Principal, campaign_id: int):
    return ok(service.record(service.get(principal.account_id, campaign_id)))


@endpoint(bp, "", ["POST"], summary="Create a campaign (stopped)", tag="campaigns", permission="campaigns",
          body=CampaignCreate, errors={409: "the name is taken"})
def create_campaign(principal: Principal, body: CampaignCreate):
    return ok(service.record(service.save(principal.account_id, None, _fields(body))))


@endpoint(bp, "/<int:campaign_id>", ["PUT"], summary="Update a campaign (only submitted fields)",
          tag="campaigns", permission="campaigns", body=CampaignFields, errors={409: "the name is taken"})
def update_campaign(principal: Principal, campaign_id: int, body: CampaignFields):
    return ok(service.record(service.save(principal.account_id, campaign_id, _fields(body))))


@endpoint(bp, "/<int:campaign_id>", ["DELETE"], summary="Delete a campaign", tag="campaigns",
          permission="campaigns", errors={409: "calls of the campaign are in progress"})
def delete_campaign(principal: Principal, campaign_id: int):
    service.delete(principal.account_id, campaign_id)
    return ok()


def _status_view(status: str, summary: str) -> Any:
    def view(principal: Principal, campaign_id: int):
        campaign = service.set_status(principal.account_id, campaign_id, status)
        dialer = _dialer()
        if dialer is not None:
            dialer.wake()
        return ok(service.record(campaign))
    view.__name__ = f"campaign_{status}"
    view.__doc__ = ("start: the dialer takes leads (progressive/predictive) or agents may preview them; pause and "
                    "stop dial no new lead, calls up go on; a stopped campaign keeps its leads' state.")
    return view


for _verb, _status in (("start", "running"), ("pause", "paused"), ("stop", "stopped")):
    endpoint(bp, f"/<int:campaign_id>/{_verb}", ["POST"], summary=f"{_verb.capitalize()} the campaign",
             tag="campaigns", permission="campaigns", errors={409: "the campaign has no queue"}, engine=True)(
        _status_view(_status, _verb))


class AttemptQuery(Schema):
    after_id: Annotated[int, Field(ge=0, le=2 ** 62)] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    outcome: Annotated[str, Field(max_length=12)] | None = None


@endpoint(bp, "/<int:campaign_id>/attempts", ["GET"], summary="The campaign's calls and their outcomes",
          tag="campaigns", permission="campaigns", query=AttemptQuery)
def list_attempts(principal: Principal, campaign_id: int, query: AttemptQuery):
    """Oldest first; page with `after_id` (the last id seen). `outcome`: answered, abandoned, hangup (hung up
    within 2 s of answering, no agent), no_answer, busy, failed, machine, lost (ended while switchdesk was not
    following; the lead is tried again without counting), skipped (preview)."""
    return ok(service.attempts(principal.account_id, campaign_id, after_id=query.after_id, limit=query.limit,
                               outcome=query.outcome))


@endpoint(bp, "/<int:campaign_id>/skips", ["GET"], summary="Why leads were not dialled", tag="campaigns",
          permission="campaigns", query=AttemptQuery)
def list_skips(principal: Principal, campaign_id: int, query: AttemptQuery):
    """DNC hits, calling-window waits, leads gone from the lists, leads skipped in preview; oldest first."""
    return ok(service.skips(principal.account_id, campaign_id, query.limit, query.after_id))


class Disposition(Schema):
    disposition: Annotated[str, Field(min_length=1, max_length=100)]


@endpoint(bp, "/<int:campaign_id>/attempts/<int:attempt_id>/disposition", ["POST", "PUT"],
          summary="Set the disposition of a call", tag="campaigns", body=Disposition)
def set_disposition(principal: Principal, campaign_id: int, attempt_id: int, body: Disposition):
    """The agent that took the call, or a user with the `campaigns` permission."""
    return ok(service.set_disposition(principal.account_id, campaign_id, attempt_id, body.disposition,
                                      principal.user.id, any_agent=principal.can("campaigns")))


@endpoint(bp, "/<int:campaign_id>/stats", ["GET"], summary="Live figures of the campaign", engine=True, tag="campaigns",
          permission="campaigns")
def campaign_stats(principal: Principal, campaign_id: int):
    """leads_left (new + retry), dialled, answered, abandoned (answered with no agent within 2 s: hung up, or
    `taken_late` by an agent after more than 2 s) and abandon_rate (percent of answered), the queue's agents
    busy/free, and `live` (this box: calls ringing, waiting for an agent, the rolling window the
    predictive pacing uses, whether it predicts or falls back to progressive)."""
    return ok(service.figures(principal.account_id, campaign_id, _dialer()))


# -- preview --


class PreviewQuery(Schema):
    user_id: Id | None = Field(None, description="the agent (default: the caller); another agent needs "
                                                 "the `campaigns` permission")


def _agent(principal: Principal, user_id: int | None) -> int:
    if user_id is None or user_id == principal.user.id:
        return principal.user.id
    require_permission(principal, "campaigns")
    return user_id


@endpoint(bp, "/<int:campaign_id>/preview", ["GET"], summary="Preview: the next lead for the agent",
          engine=True, tag="campaigns", query=PreviewQuery)
def preview_next(principal: Principal, campaign_id: int, query: PreviewQuery):
    """The lead held for the agent (the same one until it calls or skips): name, tags, ext_api_vars,
    call_script. `data` null when no lead is due."""
    dialer = _dialer()
    owner = dialer.owner if dialer is not None else "api"
    return ok(service.preview_next(principal.account_id, campaign_id, _agent(principal, query.user_id), owner))


class PreviewCall(Schema):
    sip_auto_answer: Flag = 0


@endpoint(bp, "/<int:campaign_id>/preview/<int:attempt_id>/call", ["POST"], summary="Preview: call the lead",
          engine=True, tag="campaigns", body=PreviewCall, errors={503: "FreeSWITCH is not connected"})
def preview_call(principal: Principal, campaign_id: int, attempt_id: int, body: PreviewCall):
    """Rings the agent's phone first (like click-to-call); when the agent answers the lead is dialled. A failed
    agent leg is HTTP 200 with success false and the cause; the lead stays held for the agent."""
    campaign, attempt = service.preview_attempt(principal.account_id, campaign_id, attempt_id, principal.user.id)
    reason = service.call_check(principal.account_id, attempt.phone, lead_id=attempt.lead_ref, campaign_id=campaign.id)
    if reason:
        raise APIError(409, reason)
    engine = current_app.config.get("ENGINE")
    variables = [("switchdesk_campaign_id", str(campaign.id)), ("switchdesk_dialer_id", str(attempt.id))]
    if campaign.call_script:
        variables.append(("switchdesk_call_script", campaign.call_script))
    preview = service.preview_next(principal.account_id, campaign_id, principal.user.id, attempt.owner) or {}
    if preview.get("name"):
        variables.append(("switchdesk_lead_name", preview["name"]))
    request = calls.CallRequest(destination=attempt.phone, user_id=principal.user.id, lead_id=attempt.lead_ref,
                                cid=campaign.cid_num, cnam=campaign.cid_name, display_cnam=preview.get("name"),
                                sip_auto_answer=bool(body.sip_auto_answer), variables=tuple(variables))
    dialer = _dialer()
    call_uuid = str(uuid.uuid4())
    if dialer is not None:
        dialer.follow_preview(attempt, call_uuid)
    result = calls.originate(principal.account_id, request, acting_user_id=principal.user.id,
                             commands=getattr(engine, "commands", None), may_act_for_others=False,
                             call_uuid=call_uuid)
    if not result.ok:
        if dialer is not None:
            dialer.unfollow_preview(call_uuid)
        return fail(200, result.cause or "FAILED", {"uuid": result.uuid})
    return ok({"uuid": result.uuid, "attempt_id": attempt.id}, uuid=result.uuid)


@endpoint(bp, "/<int:campaign_id>/preview/<int:attempt_id>/skip", ["POST"], summary="Preview: skip the lead",
          tag="campaigns")
def preview_skip(principal: Principal, campaign_id: int, attempt_id: int):
    """The lead is not called in this campaign again; the reason is recorded."""
    return ok(service.preview_skip(principal.account_id, campaign_id, attempt_id, principal.user.id))
