"""Sites (`/api/site`, permission module `settings`): what a device's, a queue's `site_id` and a user's
`sites` name (engine.directory.sites). Outbound calls of a site's devices use its gateway and caller id."""
from __future__ import annotations

from typing import Annotated, Any

from flask import Blueprint
from pydantic import Field

from api.auth import Principal
from api.devices import SingleLine
from api.envelope import ok
from api.spec import Page, Schema, endpoint, submitted_fields
from api.users import Timezone
from engine.directory import sites
from engine.store.models import Site

bp = Blueprint("sites", __name__, url_prefix="/api/site")

Name = Annotated[str, Field(min_length=1, max_length=200, description="unique in the account"), SingleLine]


class SiteFields(Schema):
    name: Name | None = None
    outbound_gateway: Annotated[str, Field(pattern=r"^([A-Za-z0-9_.-]{1,64})?$", description=(
        "FreeSWITCH gateway of outbound calls from the site's devices, instead of the account's; "
        "empty or null: the account's"))] | None = None
    cid_name: Annotated[str, Field(max_length=100), SingleLine, Field(description=(
        "caller name of outbound calls from the site's devices (unless the user's ocnam overrides it)"))] | None = None
    cid_num: Annotated[str, Field(pattern=r"^(\+?[0-9]{1,20})?$", description=(
        "caller number of outbound calls from the site's devices (unless the user's ocnum or cnum_by_country "
        "overrides it)"))] | None = None
    timezone: Annotated[Timezone, Field(description="the site's IANA time zone (informative)")] | None = None


class SiteCreate(SiteFields):
    name: Name


_NULLABLE = {"outbound_gateway", "cid_name", "cid_num", "timezone"}

SITE_SCHEMA = {"type": "object", "required": ["id", "account_id", "name"], "properties": {
    "id": {"type": "integer"}, "account_id": {"type": "integer"}, "name": {"type": "string"},
    "outbound_gateway": {"type": ["string", "null"]}, "cid_name": {"type": ["string", "null"]},
    "cid_num": {"type": ["string", "null"]}, "timezone": {"type": ["string", "null"]},
    "ts": {"type": "integer"}}}
_IN_USE = {"description": "the site is in use: `data` lists `user_ids` (whose `sites` name it), `device_ids`, "
                          "`queue_ids` (whose `site_id` is it)"}


def record(site: Site) -> dict[str, Any]:
    return {"id": site.id, "account_id": site.account_id, "name": site.name,
            "outbound_gateway": site.outbound_gateway, "cid_name": site.cid_name, "cid_num": site.cid_num,
            "timezone": site.timezone, "ts": site.ts}


@endpoint(bp, "", ["GET"], summary="List sites", tag="sites", permission="settings", query=Page,
          response={"type": "array", "items": SITE_SCHEMA})
def list_sites(principal: Principal, query: Page):
    return ok([record(s) for s in sites.list_sites(principal.account_id, limit=query.limit, offset=query.offset)])


@endpoint(bp, "/<int:site_id>", ["GET"], summary="Get a site", tag="sites", permission="settings",
          response=SITE_SCHEMA)
def get_site(principal: Principal, site_id: int):
    return ok(record(sites.get(principal.account_id, site_id)))


@endpoint(bp, "", ["POST"], summary="Create a site", tag="sites", permission="settings", body=SiteCreate,
          response=SITE_SCHEMA, errors={409: "the name is taken"})
def create_site(principal: Principal, body: SiteCreate):
    """Give devices the site with their `site_id`; takes effect on the next call, no FreeSWITCH restart."""
    return ok(record(sites.save(principal.account_id, None, submitted_fields(body, _NULLABLE))))


@endpoint(bp, "/<int:site_id>", ["PUT"], summary="Update a site (only submitted fields)", tag="sites",
          permission="settings", body=SiteFields, response=SITE_SCHEMA, errors={409: "the name is taken"})
def update_site(principal: Principal, site_id: int, body: SiteFields):
    return ok(record(sites.save(principal.account_id, site_id, submitted_fields(body, _NULLABLE))))


@endpoint(bp, "/<int:site_id>", ["DELETE"], summary="Delete a site", tag="sites", permission="settings",
          errors={409: _IN_USE})
def delete_site(principal: Principal, site_id: int):
    sites.delete(principal.account_id, site_id)
    return ok()
