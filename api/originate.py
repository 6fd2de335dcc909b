"""Originate a call (click-to-call): ring the agent's phone, then dial the destination (engine/calls/originate.py)."""
from __future__ import annotations

from typing import Annotated

from flask import Blueprint, current_app
from pydantic import AfterValidator, BeforeValidator, Field

from api.auth import Principal
from api.envelope import APIError, fail, ok
from api.spec import Flag, Id, Schema, endpoint, split_list
from engine.calls import originate as calls
from engine.dialer import campaigns

# Shares /api/cc_agent with the agent-state blueprint (api/agents.py); blueprint names differ.
bp = Blueprint("originate", __name__, url_prefix="/api/cc_agent")


def _single_line(value: str) -> str:
    # These reach SIP headers and channel variables: a tab or line break there is an injection.
    if any(c in value for c in "\t\n\r"):
        raise ValueError("line breaks and tabs are not allowed")
    return value


def _flag(value: object) -> object:
    """sip_auto_answer may come as true/false from JSON clients."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return int(value.lower() == "true")
    return value


def _number_as_text(value: object) -> object:
    """JSON clients send phone numbers and lead ids as numbers too."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


AsText = BeforeValidator(_number_as_text)
Number = Annotated[str, AsText, Field(pattern=r"^\+?[0-9*#]{1,32}$")]
Text = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_single_line)]
Tag = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_single_line)]


class OriginateQuery(Schema):
    destination: Number = Field(description="the number to call: digits with an optional leading +, or an "
                                            "extension / feature code with * and #")
    device_id: Id | None = Field(None, description="the phone to ring first")
    user_id: Id | None = Field(None, description="the agent: the phone it is checked in with, else its first device")
    extension: Annotated[str, AsText, Field(pattern=r"^[0-9*#]{1,32}$")] | None = Field(
        None, description="an extension that routes to a device or a user")
    cid: Number | None = Field(None, description="caller id number the destination sees (default the device's)")
    cnam: Text | None = Field(None, description="caller id name the destination sees (default the device's)")
    display_cid: Number | None = Field(None, description="caller id number the agent's phone shows "
                                                         "(default the destination)")
    display_cnam: Text | None = Field(None, description="caller id name the agent's phone shows")
    lead_id: Annotated[str, AsText, Field(min_length=1, max_length=64), AfterValidator(_single_line)] | None = Field(
        None, description="the lead being called; passed to the call events")
    tags: Annotated[list[Tag], BeforeValidator(split_list), Field(max_length=20)] | None = Field(
        None, description="array or comma separated list; passed to the call events")
    sip_auto_answer: Annotated[Flag, BeforeValidator(_flag)] = Field(
        0, description="1: ask the agent's phone to answer by itself (Call-Info answer-after=0)")
    campaign_id: Id | None = Field(None, description="the dialer campaign the call belongs to; passed to the "
                                                     "call events; its DNC lists and calling window apply")
    force: Annotated[Flag, BeforeValidator(_flag)] = Field(
        0, description="1: place the call although the number is on a DNC list or outside its calling window "
                       "(needs the `campaigns` permission)")


_RESPONSE = {"type": "object", "properties": {"uuid": {"type": "string", "description": "the agent's call leg"}}}


@endpoint(bp, "/originate", ["GET"], summary="Click-to-call: ring the agent, then dial the destination",
          engine=True, tag="agents", query=OriginateQuery, response=_RESPONSE)
def originate(principal: Principal, query: OriginateQuery):
    """Rings the agent's phone (device_id, else user_id's checked-in phone or first device, else the
    extension's target, else the caller's own phone); when the agent answers, the phone's call goes on to
    `destination` in the account's dialplan (extensions locally, other numbers through the account's
    outbound gateway). The reply comes once the agent answered: `uuid` (at the top level as in the vendor
    doc, and as `data.uuid`) is the agent's call leg. When the agent's leg fails the reply is HTTP 200 with
    `success: false`, FreeSWITCH's hang-up cause in `msg` (`NO_ANSWER`, `USER_BUSY`,
    `USER_NOT_REGISTERED`...) and the leg's uuid in `data`: a 5xx could make a proxy place the call twice.
    `503 FreeSWITCH is not connected` means nothing was dialled. Another user's phone needs the `agents`
    permission."""
    return _originate(principal, query)


@endpoint(bp, "/originate", ["POST"], summary="Click-to-call with the parameters in a JSON or form body",
          engine=True, tag="agents", body=OriginateQuery, response=_RESPONSE)
def originate_post(principal: Principal, body: OriginateQuery):
    """As `GET /api/cc_agent/originate`; query parameters are accepted as body fields too."""
    return _originate(principal, body)


def _originate(principal: Principal, params: OriginateQuery):
    engine = current_app.config.get("ENGINE")
    variables: tuple[tuple[str, str], ...] = ()
    if params.lead_id is not None or params.campaign_id is not None:
        # a lead's call: the DNC lists and the calling window apply (engine/dialer/campaigns.py)
        reason = campaigns.call_check(principal.account_id, params.destination, lead_id=params.lead_id,
                                      campaign_id=params.campaign_id)
        if reason and not (params.force and principal.can("campaigns")):
            raise APIError(409, f"refused: {reason}" + ("" if params.force else
                                                        "; force=1 with the campaigns permission overrides"))
        if params.campaign_id is not None:
            variables = (("switchdesk_campaign_id", str(params.campaign_id)),)
    request = calls.CallRequest(
        destination=params.destination, device_id=params.device_id, user_id=params.user_id,
        extension=params.extension, cid=params.cid, cnam=params.cnam, display_cid=params.display_cid,
        display_cnam=params.display_cnam, lead_id=params.lead_id, tags=tuple(params.tags or ()),
        sip_auto_answer=bool(params.sip_auto_answer), variables=variables,
    )
    result = calls.originate(
        principal.account_id, request, acting_user_id=principal.user.id,
        commands=getattr(engine, "commands", None), may_act_for_others=principal.can("agents"),
    )
    if not result.ok:
        return fail(200, result.cause or "FAILED", {"uuid": result.uuid})
    return ok({"uuid": result.uuid}, uuid=result.uuid)
