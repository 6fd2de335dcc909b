"""Extensions: numbers dialled inside the account that route to a user, a device or a queue.

There is no `extensions` permission module: a number is part of its target, so
writing one needs the target's module (`users`, `devices` or `queues`), and a
list shows the target types the caller may see.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import AfterValidator, Field

from api import users as users_api
from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import Id, Page, Schema, endpoint, submitted_fields
from engine.directory import extensions as service
from engine.store.models import Extension

bp = Blueprint("extensions", __name__, url_prefix="/api/extension")

TARGET_MODULES = {"user": "users", "device": "devices", "queue": "queues"}


def _number(value: str) -> str:
    problem = service.extension_problem(value)
    if problem:
        raise ValueError(problem)
    return value


Number = Annotated[str, AfterValidator(_number)]
TargetType = Literal["user", "device", "queue"]


class ExtensionFields(Schema):
    number: Number | None = Field(None, description="2-15 of 0-9 * #, unique in the account; not starting with ***")
    target_type: TargetType | None = None
    target_id: Id | None = Field(None, description="id of the user, device or queue (of this account)")


class ExtensionCreate(ExtensionFields):
    number: Number
    target_type: TargetType
    target_id: Id


class ExtensionQuery(Page):
    number: Annotated[str, Field(pattern=r"^[0-9*#]{1,15}$")] | None = Field(
        None, description="numbers starting with this")
    target_type: TargetType | None = None
    target_id: Id | None = None


def require_target(principal: Principal, target_type: str) -> None:
    """403 unless the caller may manage targets of this type."""
    module = TARGET_MODULES[target_type]
    if not principal.can(module):
        raise APIError(403, f"Permission denied: {module}")


def visible_types(principal: Principal, wanted: str | None) -> list[str]:
    types = [t for t, module in TARGET_MODULES.items() if principal.can(module) and wanted in (None, t)]
    if not types:
        require_target(principal, wanted or "device")
    return types


def submitted(body: Schema) -> dict[str, Any]:
    return submitted_fields(body)


def record(ext: Extension) -> dict[str, Any]:
    return {"id": ext.id, "account_id": ext.account_id, "number": ext.number, "target_type": ext.target_type,
            "target_id": ext.target_id, "ts": ext.ts}


def _user_numbers(user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The user record's read-only `extensions` and `dids`: numbers routed directly to the user."""
    exts, dids = service.routes_for("user", user_ids)
    return {u: {"extensions": ",".join(exts[u]), "dids": ",".join(dids[u])} for u in user_ids}


users_api.EXTRA_PROVIDERS.append(_user_numbers)


def _get(principal: Principal, extension_id: int) -> Extension:
    ext = service.get_extension(principal.account_id, extension_id)
    require_target(principal, ext.target_type)
    return ext


@endpoint(bp, "", ["GET"], summary="List extensions", tag="extensions", query=ExtensionQuery)
def list_extensions(principal: Principal, query: ExtensionQuery):
    """Only extensions of target types the caller may manage (`users`, `devices`, `queues`)."""
    rows = (Extension.of(principal.account_id)
            .where(Extension.target_type.in_(visible_types(principal, query.target_type)))
            .order_by(Extension.number))
    if query.number:
        rows = rows.where(Extension.number.startswith(query.number))
    if query.target_id is not None:
        rows = rows.where(Extension.target_id == query.target_id)
    rows = query.page(rows)
    return ok([record(e) for e in rows])


@endpoint(bp, "/<int:extension_id>", ["GET"], summary="Get an extension", tag="extensions")
def get_extension(principal: Principal, extension_id: int):
    return ok(record(_get(principal, extension_id)))


@endpoint(bp, "", ["POST"], summary="Create an extension", tag="extensions", body=ExtensionCreate,
          errors={409: "the number is in use"})
def create_extension(principal: Principal, body: ExtensionCreate):
    """409 when the number already routes somewhere in the account; 400 naming an unknown target."""
    require_target(principal, body.target_type)
    return ok(record(service.save_extension(principal.account_id, None, submitted(body))))


@endpoint(bp, "/<int:extension_id>", ["PUT"], summary="Update an extension (only submitted fields)",
          tag="extensions", body=ExtensionFields, errors={409: "the number is in use"})
def update_extension(principal: Principal, extension_id: int, body: ExtensionFields):
    """Moving it to another target needs the permission of both target types."""
    _get(principal, extension_id)
    if body.target_type:
        require_target(principal, body.target_type)
    return ok(record(service.save_extension(principal.account_id, extension_id, submitted(body))))


@endpoint(bp, "/<int:extension_id>", ["DELETE"], summary="Delete an extension", tag="extensions")
def delete_extension(principal: Principal, extension_id: int):
    _get(principal, extension_id)
    service.delete_extension(principal.account_id, extension_id)
    return ok()
