"""Pause reasons: the ids setPause takes (`id=0` there means available)."""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint
from pydantic import Field

from api.auth import Principal
from api.envelope import ok
from api.spec import Schema, endpoint, submitted_fields
from engine.callcenter import pauses as service
from engine.store.models import PauseReason

bp = Blueprint("pauses", __name__, url_prefix="/api/pause")

Name = Annotated[str, Field(min_length=1, max_length=200)]
MaxDuration = Annotated[int, Field(ge=0, le=86400)]


class PauseFields(Schema):
    name: Name | None = Field(None, description="unique in the account; 'On Break' is reserved")
    max_duration: MaxDuration | None = Field(
        None, description="seconds after which the pause ends by itself; 0: no limit")


class PauseCreate(PauseFields):
    name: Name


def record(reason: PauseReason) -> dict[str, Any]:
    return {"id": reason.id, "account_id": reason.account_id, "name": reason.name,
            "max_duration": reason.max_duration, "system": reason.system, "ts": reason.ts}


def submitted(body: PauseFields) -> dict[str, Any]:
    return submitted_fields(body)


@endpoint(bp, "", ["GET"], summary="List pause reasons", tag="pauses", permission="pauses")
def list_pauses(principal: Principal):
    """Includes the account's reserved `system: true` reason (mod_callcenter's own On Break), so
    clients can recognise its id in `agent:status` events."""
    service.system_reason(principal.account_id)
    return ok([record(r) for r in PauseReason.of(principal.account_id).order_by(PauseReason.id)])


@endpoint(bp, "/<int:pause_id>", ["GET"], summary="Get a pause reason", tag="pauses", permission="pauses")
def get_pause(principal: Principal, pause_id: int):
    return ok(record(service.get_reason(principal.account_id, pause_id)))


@endpoint(bp, "", ["POST"], summary="Create a pause reason", tag="pauses", permission="pauses", body=PauseCreate,
          errors={409: "the name is taken"})
def create_pause(principal: Principal, body: PauseCreate):
    return ok(record(service.save_reason(principal.account_id, None, submitted(body))))


@endpoint(bp, "/<int:pause_id>", ["PUT"], summary="Update a pause reason (only submitted fields)", tag="pauses",
          permission="pauses", body=PauseFields, errors={409: "the name is taken"})
def update_pause(principal: Principal, pause_id: int, body: PauseFields):
    """The system reason cannot be changed (400)."""
    return ok(record(service.save_reason(principal.account_id, pause_id, submitted(body))))


@endpoint(bp, "/<int:pause_id>", ["DELETE"], summary="Delete a pause reason", tag="pauses", permission="pauses",
          errors={409: "an agent is paused with it"})
def delete_pause(principal: Principal, pause_id: int):
    """The system reason cannot be deleted (400)."""
    service.delete_reason(principal.account_id, pause_id)
    return ok()
