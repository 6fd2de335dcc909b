"""Permission groups: named sets of module permissions that users join through `pgroup_id`."""
from __future__ import annotations

from typing import Annotated

from flask import Blueprint
from pydantic import Field

from api.auth import MODULES, Principal
from api.envelope import ok
from api.spec import Schema, endpoint
from api.users import Permissions
from engine.directory import users as service
from engine.store.models import PermissionGroup

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
    return service.get_group(principal.account_id, group_id)


@endpoint(bp, "", ["GET"], summary="List permission groups", tag="users", permission="users")
def list_pgroups(principal: Principal):
    return ok([_record(g) for g in PermissionGroup.of(principal.account_id).order_by(PermissionGroup.id)])


@endpoint(bp, "/<int:group_id>", ["GET"], summary="Get a permission group", tag="users", permission="users")
def get_pgroup(principal: Principal, group_id: int):
    return ok(_record(_get(principal, group_id)))


@endpoint(bp, "", ["POST"], summary="Create a permission group", tag="users", permission="users", body=PGroupCreate,
          errors={409: "the name is taken"})
def create_pgroup(principal: Principal, body: PGroupCreate):
    """A caller without admin rights grants only modules it holds (403)."""
    fields = {"name": body.name, "permissions": body.permissions or {}}
    return ok(_record(service.save_group(principal.account_id, None, fields, principal.actor)))


@endpoint(bp, "/<int:group_id>", ["PUT"], summary="Update a permission group", tag="users", permission="users",
          body=PGroupFields, errors={409: "the name is taken"})
def update_pgroup(principal: Principal, group_id: int, body: PGroupFields):
    """A caller without admin rights changes only a group that holds nothing beyond its own rights, to
    hold nothing beyond them, and none with a member (an admin, or a user with more rights) whom the
    change would affect beyond the caller's rights (403)."""
    fields = {name: getattr(body, name) for name in ("name", "permissions") if getattr(body, name) is not None}
    return ok(_record(service.save_group(principal.account_id, group_id, fields, principal.actor)))


@endpoint(bp, "/<int:group_id>", ["DELETE"], summary="Delete a permission group (its users keep their overrides)",
          tag="users", permission="users")
def delete_pgroup(principal: Principal, group_id: int):
    """The same rule as changing it (403)."""
    service.delete_group(principal.account_id, group_id, principal.actor)
    return ok()
