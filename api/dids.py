"""DIDs: the account's public numbers, each routed to a user or a queue.

Numbers are stored in E.164 form (national numbers read in the account's
`country`) and are unique across the installation, since FreeSWITCH's
`public` context looks them up before it knows the account. Like extensions,
writing one needs the permission of its target's module.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import Field

from api.auth import Principal
from api.envelope import ok
from api.extensions import require_target, submitted, visible_types
from api.spec import Id, Page, Schema, endpoint
from engine.directory import extensions as service
from engine.store.models import Did

bp = Blueprint("dids", __name__, url_prefix="/api/did")

Number = Annotated[str, Field(min_length=1, max_length=40)]
TargetType = Literal["user", "queue"]


class DidFields(Schema):
    number: Number | None = Field(None, description="a phone number; stored in E.164 form (+<country><number>), "
                                                     "national numbers read in the account's country")
    target_type: TargetType | None = None
    target_id: Id | None = Field(None, description="id of the user or queue (of this account)")


class DidCreate(DidFields):
    number: Number
    target_type: TargetType
    target_id: Id


class DidQuery(Page):
    target_type: TargetType | None = None
    target_id: Id | None = None


def record(did: Did) -> dict[str, Any]:
    return {"id": did.id, "account_id": did.account_id, "number": did.number, "target_type": did.target_type,
            "target_id": did.target_id, "ts": did.ts}


def _get(principal: Principal, did_id: int) -> Did:
    did = service.get_did(principal.account_id, did_id)
    require_target(principal, did.target_type)
    return did


@endpoint(bp, "", ["GET"], summary="List DIDs", tag="extensions", query=DidQuery)
def list_dids(principal: Principal, query: DidQuery):
    """Only DIDs of target types the caller may manage (`users`, `queues`)."""
    types = [t for t in visible_types(principal, query.target_type) if t in service.DID_TARGETS]
    rows = Did.of(principal.account_id).where(Did.target_type.in_(types)).order_by(Did.number)
    if query.target_id is not None:
        rows = rows.where(Did.target_id == query.target_id)
    rows = query.page(rows)
    return ok([record(d) for d in rows])


@endpoint(bp, "/<int:did_id>", ["GET"], summary="Get a DID", tag="extensions")
def get_did(principal: Principal, did_id: int):
    return ok(record(_get(principal, did_id)))


@endpoint(bp, "", ["POST"], summary="Create a DID", tag="extensions", body=DidCreate,
          errors={409: "the number is in use"})
def create_did(principal: Principal, body: DidCreate):
    """409 when the number is anyone's DID already; 400 naming an unknown target."""
    require_target(principal, body.target_type)
    return ok(record(service.save_did(principal.account_id, None, submitted(body))))


@endpoint(bp, "/<int:did_id>", ["PUT"], summary="Update a DID (only submitted fields)", tag="extensions",
          body=DidFields, errors={409: "the number is in use"})
def update_did(principal: Principal, did_id: int, body: DidFields):
    _get(principal, did_id)
    if body.target_type:
        require_target(principal, body.target_type)
    return ok(record(service.save_did(principal.account_id, did_id, submitted(body))))


@endpoint(bp, "/<int:did_id>", ["DELETE"], summary="Delete a DID", tag="extensions")
def delete_did(principal: Principal, did_id: int):
    _get(principal, did_id)
    service.delete_did(principal.account_id, did_id)
    return ok()
