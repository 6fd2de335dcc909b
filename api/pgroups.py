"""Permission groups: named sets of module permissions that users join through `pgroup_id`."""
from __future__ import annotations

from typing import Annotated

import peewee
from flask import Blueprint
from pydantic import Field

from api.auth import MODULES, Principal
from api.envelope import APIError, ok
from api.spec import Schema, endpoint
from api.users import Permissions
from engine.store.db import db
from engine.store.models import PermissionGroup, User

bp = Blueprint("pgroups", __name__, url_prefix="/api/pgroup")


class PGroupFields(Schema):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    permissions: Permissions | None = None


class PGroupCreate(PGroupFields):
    name: Annotated[str, Field(min_length=1, max_length=200)]


def _record(group: PermissionGroup) -> dict:
    return {"id": group.id, "account_id": group.account_id, "name": group.name,
            "permissions": {m: bool((group.permissions or {}).get(m)) for m in MODULES}}


def _get(principal: Principal, group_id: int) -> PermissionGroup:
    group = PermissionGroup.get_or_none(
        (PermissionGroup.id == group_id) & (PermissionGroup.account == principal.account_id)
    )
    if group is None:
        raise APIError(404, f"Permission group {group_id} not found")
    return group


def _only_own(principal: Principal, permissions: dict[str, bool] | None) -> None:
    excess = {m for m, on in (permissions or {}).items() if on} - principal.permissions
    if excess and not principal.user.is_admin:
        raise APIError(403, f"You cannot grant permissions you do not have: {', '.join(sorted(excess))}")


def _save(group: PermissionGroup) -> PermissionGroup:
    try:
        with db.atomic():
            group.save()
    except peewee.IntegrityError:
        raise APIError(409, f"name: a permission group named {group.name!r} exists") from None
    return group


@endpoint(bp, "", ["GET"], summary="List permission groups", tag="users", permission="users")
def list_pgroups(principal: Principal):
    return ok([_record(g) for g in PermissionGroup.of(principal.account_id).order_by(PermissionGroup.id)])


@endpoint(bp, "/<int:group_id>", ["GET"], summary="Get a permission group", tag="users", permission="users")
def get_pgroup(principal: Principal, group_id: int):
    return ok(_record(_get(principal, group_id)))


@endpoint(bp, "", ["POST"], summary="Create a permission group", tag="users", permission="users", body=PGroupCreate)
def create_pgroup(principal: Principal, body: PGroupCreate):
    _only_own(principal, body.permissions)
    group = PermissionGroup(account=principal.account_id, name=body.name, permissions=body.permissions or {})
    return ok(_record(_save(group)))


@endpoint(bp, "/<int:group_id>", ["PUT"], summary="Update a permission group", tag="users", permission="users",
          body=PGroupFields)
def update_pgroup(principal: Principal, group_id: int, body: PGroupFields):
    group = _get(principal, group_id)
    if body.name is not None:
        group.name = body.name
    if body.permissions is not None:
        _only_own(principal, body.permissions)
        group.permissions = body.permissions
    return ok(_record(_save(group)))


@endpoint(bp, "/<int:group_id>", ["DELETE"], summary="Delete a permission group (its users keep their overrides)",
          tag="users", permission="users")
def delete_pgroup(principal: Principal, group_id: int):
    with db.atomic():
        group = _get(principal, group_id)
        User.update(pgroup=None).where(User.pgroup == group.id).execute()
        group.delete_instance()
    return ok()
