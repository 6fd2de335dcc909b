"""CheckIn: a one-time code the agent dials from the phone to check in with it (engine/callcenter/checkin.py)."""
from __future__ import annotations

from flask import Blueprint
from pydantic import Field

from api.auth import Principal, require_permission
from api.envelope import ok
from api.spec import Flag, Id, Schema, endpoint
from engine.callcenter import checkin as service

# Shares /api/cc_agent with the agent-state blueprint (api/agents.py); blueprint names differ.
bp = Blueprint("checkin", __name__, url_prefix="/api/cc_agent")


class CheckInQuery(Schema):
    user_id: Id | None = Field(None, description="the agent; default the caller (API key's or session user). "
                                                 "Another user needs the `agents` permission")
    forceCheckOut: Flag = Field(0, description="1: the check-in takes the phone from whoever is checked in "
                                               "with it (needs the `agents` permission); 0: a busy phone "
                                               "refuses the check-in")


@endpoint(bp, "/checkIn", ["GET", "POST"], summary="Get a one-time check-in code to dial from the phone",
          tag="agents", body=CheckInQuery, response={"type": "string", "example": "***482913"})
def check_in(principal: Principal, body: CheckInQuery):
    """`data` is the number to dial (`***` and at least 6 digits) from the phone the agent checks in with.
    The code works once, for 5 minutes, only from a phone of this account; a new code for the same user
    replaces the previous one. The phone hears a short high tone when the check-in is done and three low
    beeps when the code is wrong, used or expired (or the phone is busy without `forceCheckOut`, or has
    dialled 5 wrong codes in 15 minutes)."""
    user_id = body.user_id or principal.user.id
    if user_id != principal.user.id or body.forceCheckOut:
        # forceCheckOut acts only on another agent: whoever holds the phone the code is dialled from
        require_permission(principal, "agents")
    return ok(service.issue_code(principal.account_id, user_id, force_checkout=bool(body.forceCheckOut)))
