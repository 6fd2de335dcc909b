"""Voicemail boxes (`/api/voicemail`, permission module `voicemail`) and their messages.

A user's `vm_id` names its box; `vm_name` (read-only on the user) is the box's name. Calls to the user
that nobody answers within its `call_timeout` reach the box (mod_voicemail); its messages are listed,
downloaded and deleted here.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from flask import Blueprint, current_app, send_file
from pydantic import Field

from api import users as users_api
from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import Id, Page, Schema, endpoint, submitted_fields
from engine.store.models import Account, User, VoicemailBox
from engine.voicemail import boxes, messages

bp = Blueprint("voicemail", __name__, url_prefix="/api/voicemail")

Name = Annotated[str, Field(min_length=1, max_length=200, description="unique in the account")]
Pin = Annotated[str, Field(pattern=r"^[0-9]{4,12}$", description="4 to 12 digits; stored only as mod_voicemail's "
                                                                 "vm-a1-hash, never returned")]
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")


class BoxFields(Schema):
    name: Name | None = None
    pin: Pin | None = None
    greeting_id: Annotated[Id, Field(description="a media (GET /api/media) played as the box's greeting instead "
                                                 "of mod_voicemail's spoken one; null: the spoken one")] | None = None


class BoxCreate(BoxFields):
    name: Name
    pin: Pin


BOX_SCHEMA = {"type": "object", "required": ["id", "account_id", "name", "box"], "properties": {
    "id": {"type": "integer"}, "account_id": {"type": "integer"}, "name": {"type": "string"},
    "box": {"type": "string", "description": "mod_voicemail's box id in the account's domain (vm-<id>)"},
    "greeting_id": {"type": ["integer", "null"]},
    "user_ids": {"type": "array", "items": {"type": "integer"}}, "ts": {"type": "integer"}}}
MESSAGE_SCHEMA = {"type": "object", "properties": {
    "uuid": {"type": "string"}, "created": {"type": "integer"}, "read": {"type": "integer", "description": "0: new"},
    "folder": {"type": "string"}, "cid_name": {"type": "string"}, "cid_number": {"type": "string"},
    "seconds": {"type": "integer", "description": "length of the message"}}}


def record(box: VoicemailBox) -> dict[str, Any]:
    users = [u.id for u in User.select(User.id).where(User.vm_id == box.id).order_by(User.id)]
    return {"id": box.id, "account_id": box.account_id, "name": box.name, "box": boxes.box_user(box.id),
            "greeting_id": box.greeting_id, "user_ids": users, "ts": box.ts}


def _vm_names(user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The user record's read-only `vm_name`: the name of the box its vm_id names."""
    rows = list(User.select(User.id, User.vm_id).where(User.id.in_(user_ids) & User.vm_id.is_null(False)))
    names = boxes.names_of([u.vm_id for u in rows])
    return {u.id: {"vm_name": names.get(u.vm_id)} for u in rows}


if _vm_names.__name__ not in {getattr(p, "__name__", "") for p in users_api.EXTRA_PROVIDERS}:
    users_api.EXTRA_PROVIDERS.append(_vm_names)


@endpoint(bp, "", ["GET"], summary="List voicemail boxes", tag="voicemail", permission="voicemail", query=Page,
          response={"type": "array", "items": BOX_SCHEMA})
def list_boxes(principal: Principal, query: Page):
    return ok([record(b) for b in boxes.list_boxes(principal.account_id, limit=query.limit, offset=query.offset)])


@endpoint(bp, "/<int:box_id>", ["GET"], summary="Get a voicemail box", tag="voicemail", permission="voicemail",
          response=BOX_SCHEMA)
def get_box(principal: Principal, box_id: int):
    return ok(record(boxes.get(principal.account_id, box_id)))


@endpoint(bp, "", ["POST"], summary="Create a voicemail box", tag="voicemail", permission="voicemail",
          body=BoxCreate, response=BOX_SCHEMA, errors={409: "the name is taken"})
def create_box(principal: Principal, body: BoxCreate):
    """`name` and `pin` (the box owner's code on the phone) are required; give a user the box with `vm_id`."""
    return ok(record(boxes.save(principal.account_id, None, submitted_fields(body, {"greeting_id"}))))


@endpoint(bp, "/<int:box_id>", ["PUT"], summary="Rename a voicemail box or change its PIN", tag="voicemail",
          permission="voicemail", body=BoxFields, response=BOX_SCHEMA, errors={409: "the name is taken"})
def update_box(principal: Principal, box_id: int, body: BoxFields):
    fields = submitted_fields(body, {"greeting_id"})
    return ok(record(boxes.save(principal.account_id, box_id, fields)))


@endpoint(bp, "/<int:box_id>", ["DELETE"], summary="Delete a voicemail box", tag="voicemail",
          permission="voicemail", errors={409: "a user's vm_id names it (`data.user_ids`)"})
def delete_box(principal: Principal, box_id: int):
    boxes.delete(principal.account_id, box_id)
    return ok()


def _box_and_domain(principal: Principal, box_id: int) -> tuple[VoicemailBox, str]:
    box = boxes.get(principal.account_id, box_id)
    return box, Account.get_by_id(principal.account_id).domain


def _commands() -> Any:
    return getattr(current_app.config.get("ENGINE"), "commands", None)


@endpoint(bp, "/<int:box_id>/messages", ["GET"], summary="List a box's messages", engine=True, tag="voicemail",
          permission="voicemail", response={"type": "array", "items": MESSAGE_SCHEMA},
          errors={503: "FreeSWITCH is not connected (mod_voicemail keeps the messages)"})
def list_messages(principal: Principal, box_id: int):
    """Newest first, as mod_voicemail has them."""
    box, domain = _box_and_domain(principal, box_id)
    return ok([m.record() for m in messages.list_messages(_commands(), box.id, domain)])


def _uuid(value: str) -> str:
    if not _UUID.match(value):
        raise APIError(404, f"Message {value[:40]} not found")
    return value


@endpoint(bp, "/<int:box_id>/messages/<uuid>/file", ["GET"], summary="Download a message", engine=True, tag="voicemail",
          permission="voicemail", media_type="audio/wav", response={"type": "string", "format": "binary"},
          errors={503: "FreeSWITCH is not connected"})
def download_message(principal: Principal, box_id: int, uuid: str):
    box, domain = _box_and_domain(principal, box_id)
    message = messages.find(_commands(), box.id, domain, _uuid(uuid))
    path = Path(message.path)
    # only a recording of mod_voicemail's storage, never another file
    if path.suffix.lower() not in (".wav", ".mp3") or "voicemail" not in path.parts or not path.is_file():
        raise APIError(404, f"Message {uuid} has no file on this box")
    return send_file(path, mimetype="audio/mpeg" if path.suffix.lower() == ".mp3" else "audio/wav",
                     as_attachment=True, download_name=f"voicemail-{box.id}-{message.uuid}{path.suffix}", max_age=0)


@endpoint(bp, "/<int:box_id>/messages/<uuid>", ["DELETE"], summary="Delete a message", engine=True, tag="voicemail",
          permission="voicemail", errors={503: "FreeSWITCH is not connected"})
def delete_message(principal: Principal, box_id: int, uuid: str):
    box, domain = _box_and_domain(principal, box_id)
    messages.delete(_commands(), box.id, domain, _uuid(uuid))
    return ok()
