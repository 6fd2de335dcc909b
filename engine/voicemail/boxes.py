"""Voicemail boxes: create, rename, change the PIN, delete (409 while a user's vm_id names it)."""
from __future__ import annotations

import hashlib
import re
from typing import Any

import peewee

from engine.errors import ServiceError
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Account, User, VoicemailBox

PIN = re.compile(r"^[0-9]{4,12}$")
BOX_USER = re.compile(r"^vm-([0-9]{1,16})$")


def box_user(box_id: int) -> str:
    """The directory user (mod_voicemail's box id) of a box."""
    return f"vm-{int(box_id)}"


def a1_hash(box_id: int, domain: str, pin: str) -> str:
    """mod_voicemail's `vm-a1-hash`: md5 of `<box>:<domain>:<pin>`."""
    return hashlib.md5(f"{box_user(box_id)}:{domain}:{pin}".encode(), usedforsecurity=False).hexdigest()


def get(account_id: int, box_id: int) -> VoicemailBox:
    return VoicemailBox.owned(account_id, box_id)


def list_boxes(account_id: int, *, limit: int | None = None, offset: int = 0) -> list[VoicemailBox]:
    rows = VoicemailBox.of(account_id).order_by(VoicemailBox.id)
    if limit:
        rows = rows.limit(limit)
    if offset:
        rows = rows.offset(offset)
    return list(rows)


def names_of(box_ids: list[int]) -> dict[int, str]:
    """box id -> name, for the users' read-only `vm_name`."""
    ids = sorted({i for i in box_ids if i})
    if not ids:
        return {}
    return {b.id: b.name for b in VoicemailBox.select(VoicemailBox.id, VoicemailBox.name)
            .where(VoicemailBox.id.in_(ids))}


def check_id(account_id: int, box_id: int | None) -> None:
    """400 unless the account has this box (inside the transaction that stores the id)."""
    if box_id and not VoicemailBox.select(VoicemailBox.id).where(
            (VoicemailBox.account == account_id) & (VoicemailBox.id == box_id)).exists():
        raise ServiceError(400, f"vm_id: no voicemail box with id {box_id}")


def _domain(account_id: int) -> str:
    return Account.select(Account.domain).where(Account.id == account_id).get().domain


def _check_pin(pin: str) -> None:
    if not PIN.match(pin or ""):
        raise ServiceError(400, "pin: 4 to 12 digits")


def _save(box: VoicemailBox, insert: bool) -> None:
    try:
        with db.atomic():
            box.save(force_insert=insert)
    except peewee.IntegrityError:
        raise ServiceError(409, f"name: a voicemail box named {box.name!r} already exists") from None


def save(account_id: int, box_id: int | None, fields: dict[str, Any]) -> VoicemailBox:
    """Create (`box_id` None: `name` and `pin` required) or change a box."""
    pending = Pending()
    with db.atomic():
        box = VoicemailBox(account=account_id) if box_id is None else get(account_id, box_id)
        if "name" in fields:
            if VoicemailBox.name_taken(account_id, fields["name"], box.id):
                raise ServiceError(409, f"name: a voicemail box named {fields['name']!r} already exists")
            box.name = fields["name"]
        if "pin" in fields:
            _check_pin(fields["pin"])
        if "greeting_id" in fields:
            from engine.media import library

            library.check_ids(account_id, {"greeting_id": fields["greeting_id"]})
            box.greeting_id = fields["greeting_id"]
        _save(box, insert=box_id is None)
        if "pin" in fields:
            box.pin_a1_hash = a1_hash(box.id, _domain(account_id), fields["pin"])
            box.save()
        pending.add("voicemail", account_id, [box.id])
    pending.send()
    return box


def delete(account_id: int, box_id: int) -> None:
    pending = Pending()
    with db.atomic():
        box = get(account_id, box_id)
        users = [u.id for u in User.select(User.id).where((User.account == account_id) & (User.vm_id == box.id))]
        if users:
            raise ServiceError(409, f"voicemail box {box.id} is the box of user {', '.join(map(str, users))}",
                               {"user_ids": users})
        box.delete_instance()
        pending.add("voicemail", account_id, [box_id])
    pending.send()
