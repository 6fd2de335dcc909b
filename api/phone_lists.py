"""Phone lists and their leads (vendor doc: Phone Lists, Phone List Leads), plus do-not-call lookups.

The leads body is parsed here rather than by a pydantic model: it may be one
object, an array or a CSV file, and a batch of 100,000 rows must be checked
fast (see engine.leads.validation).
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, g, request, stream_with_context
from pydantic import Field

from api.auth import Principal
from api.body import body_fields, request_json
from api.envelope import APIError, ok
from api.spec import Page, Schema, endpoint, split_list
from engine.leads import csvformat, imports, streaming, validation
from engine.leads import phonelists as service
from engine.store.db import db
from engine.store.models import PhoneList

bp = Blueprint("phone_lists", __name__, url_prefix="/api/phone_list")

OFF_LOOP_BYTES = 256 * 1024  # lead bodies larger than this are parsed off the event loop
ListName = Annotated[str, Field(min_length=1, max_length=200)]
ListType = Literal["leads", "dnc", "special"]


class PhoneListFields(Schema):
    """`type`: `leads` (dialer leads, the default), `dnc` (do-not-call) or `special`."""

    name: ListName | None = None
    type: ListType | None = None


class PhoneListCreate(PhoneListFields):
    name: ListName


class PhoneListQuery(Page):
    q: Annotated[str, Field(max_length=200)] | None = None
    type: ListType | None = None


class LeadQuery(Page):
    q: Annotated[str, Field(max_length=200, description="phone prefix or part of the name")] | None = None


class LookupQuery(Schema):
    phone: Annotated[str, Field(min_length=1, max_length=40)]
    type: ListType | None = None


_LEAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["phone"],
    "properties": {
        "phone": {"type": "string", "description": "3 to 20 digits, optional leading +; spaces, dashes, dots "
                                                   "and parentheses are removed"},
        "name": {"type": ["string", "null"], "maxLength": validation.MAX_NAME},
        "lead_id": {"type": ["string", "null"], "maxLength": validation.MAX_LEAD_ID},
        "priority": {"type": "integer", "default": 0, "description": "larger first"},
        "tags": {"type": ["string", "null"], "maxLength": validation.MAX_TAGS},
        "ext_api_vars": {"type": ["object", "null"], "description": "any JSON object, returned as stored; "
                                                                   "null is kept as null, missing is {}"},
    },
}
_FORM_LEAD = {**_LEAD_SCHEMA, "properties": {**_LEAD_SCHEMA["properties"], "ext_api_vars": {
    "type": "string", "description": "a JSON object as text"}}}
# Each media type with the schema of what is actually sent in it.
_LEADS_BODY = {
    "application/json": {"schema": {"oneOf": [_LEAD_SCHEMA, {"type": "array", "items": _LEAD_SCHEMA}]}},
    "application/x-www-form-urlencoded": {"schema": _FORM_LEAD},
    "text/csv": {"schema": {"type": "string", "description": "a header row (phone, name, lead_id, priority, tags, "
                                                             "ext_api_vars); unknown columns go into ext_api_vars"}},
}
_PHONES = {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "phone numbers"}
_PHONES_TEXT = {"type": "string", "minLength": 1, "description": "comma-separated phone numbers"}
# The vendor document: "JSON Array of phone numbers in BODY"; also {"phones": [...]}, or a form field.
_PHONES_BODY = {
    "application/json": {"schema": {"oneOf": [
        _PHONES,
        {"type": "object", "required": ["phones"], "properties": {"phones": {"oneOf": [_PHONES, _PHONES_TEXT]}}},
    ]}},
    "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["phones"],
                                                     "properties": {"phones": _PHONES_TEXT}}},
}
_LEAD_UPDATE = {"application/json": {"schema": {**_LEAD_SCHEMA, "required": []}},
                "application/x-www-form-urlencoded": {"schema": {**_FORM_LEAD, "required": []}}}


def _record(plist: PhoneList) -> dict[str, Any]:
    return {"id": plist.id, "account_id": plist.account_id, "name": plist.name, "type": plist.type,
            "list_rows": plist.list_rows}


# --- lists ------------------------------------------------------------------------------------


@endpoint(bp, "", ["GET"], summary="List phone lists", tag="phone lists", permission="phone_lists",
          query=PhoneListQuery)
def list_phone_lists(principal: Principal, query: PhoneListQuery):
    """`q` matches the name case-insensitively; `type` filters by list type. One query."""
    rows = PhoneList.of(principal.account_id).order_by(PhoneList.id)
    if query.q:
        rows = rows.where(PhoneList.name_key.contains(query.q.lower()))
    if query.type:
        rows = rows.where(PhoneList.type == query.type)
    rows = query.page(rows)
    return ok([_record(p) for p in rows])


@endpoint(bp, "/lookup", ["GET"], summary="Which lists hold a phone number (do-not-call checks)",
          tag="phone lists", permission="phone_lists", query=LookupQuery)
def lookup_phone(principal: Principal, query: LookupQuery):
    """Each list of the account holding the number in any form, with its `type` and the lead."""
    raw = request.args.get("phone", "")
    # `?phone=+1212...` unencoded arrives as " 1212...": the service reads that space as a lost `+`
    phone = " " + query.phone if raw[:1].isspace() else query.phone
    return ok(service.lookup(principal.account_id, phone, query.type))


@endpoint(bp, "/<int:list_id>", ["GET"], summary="Get a phone list", tag="phone lists", permission="phone_lists")
def get_phone_list(principal: Principal, list_id: int):
    return ok(_record(service.get_list(principal.account_id, list_id)))


@endpoint(bp, "", ["POST"], summary="Create a phone list", tag="phone lists", permission="phone_lists",
          body=PhoneListCreate)
def create_phone_list(principal: Principal, body: PhoneListCreate):
    """Names are unique per account, case-insensitively (409)."""
    return ok(_record(service.create_list(principal.account_id, body.name, body.type or "leads")))


@endpoint(bp, "/<int:list_id>", ["PUT"], summary="Update a phone list (only submitted fields)",
          tag="phone lists", permission="phone_lists", body=PhoneListFields, errors={409: "the name is taken"})
def update_phone_list(principal: Principal, list_id: int, body: PhoneListFields):
    fields = {name: getattr(body, name) for name in body.model_fields_set}
    for name, value in fields.items():
        if value is None:
            raise APIError(400, f"{name}: may not be null")
    return ok(_record(service.update_list(principal.account_id, list_id, fields)))


@endpoint(bp, "/<int:list_id>", ["DELETE"], summary="Delete a phone list and its leads", tag="phone lists",
          permission="phone_lists")
def delete_phone_list(principal: Principal, list_id: int):
    service.delete_list(principal.account_id, list_id)
    return ok()


# --- leads ------------------------------------------------------------------------------------


def _json_or_null(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _lead_json(row: tuple) -> str:
    _id, phone, lead_id, priority, name, tags, ext = row
    # phone holds only digits and '+', so it needs no escaping
    return (f'{{"id":"{phone}","phone":"{phone}","lead_id":{_json_or_null(lead_id)},"priority":{priority},'
            f'"name":{_json_or_null(name)},"tags":{_json_or_null(tags)},"ext_api_vars":{ext}}}')


@endpoint(bp, "/<int:list_id>/lead", ["GET"], summary="Get the leads of a phone list", tag="phone lists",
          permission="phone_lists", query=LeadQuery)
def list_leads(principal: Principal, list_id: int, query: LeadQuery):
    """Leads by priority (largest first), then insertion order; `q` is a phone prefix or part of the name.

    The reply is streamed in chunks, so a list of millions of leads is served
    in bounded memory.
    """
    service.get_list(principal.account_id, list_id)

    def generate():
        yield '{"success":true,"data":['
        separator = ""
        # The request's connection is closed at teardown; the stream keeps its own.
        with db.connection_context():
            for rows in streaming.iter_leads(list_id, limit=query.limit, offset=query.offset, q=query.q):
                yield separator + ",".join([_lead_json(row) for row in rows])
                separator = ","
        yield "]}"

    return Response(stream_with_context(generate()), mimetype="application/json")


def _parse_off_loop(fn, data: bytes):
    """A large body is parsed in gevent's threadpool, so the event loop keeps serving others meanwhile."""
    return imports.off_loop(fn, data) if len(data) > OFF_LOOP_BYTES else fn(data)


def _json_loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # as api.body.request_json answers
        raise APIError(400, "Malformed JSON body") from None


def _posted_leads() -> list[Any]:
    if request.mimetype in ("text/csv", "application/csv"):
        return _parse_off_loop(csvformat.parse_csv, request.get_data(cache=False))
    if request.is_json:
        # An array of plain leads (the bulk case) skips the standard decoder; anything else falls to it.
        data = request.get_data(cache=True)
        rows = _parse_off_loop(validation.decode_leads, data)
        if rows is not None:
            return rows
        if "json_body" not in g and len(data) > OFF_LOOP_BYTES:
            g.json_body = _parse_off_loop(_json_loads, data)  # what request_json() returns below
    body = request_json()
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        body.pop("api_key", None)
        return [body]
    return [body_fields()]


@endpoint(bp, "/<int:list_id>/lead", ["POST"], summary="Add or update leads (object, array or CSV)",
          tag="phone lists", permission="phone_lists", body_doc=_LEADS_BODY)
def add_leads(principal: Principal, list_id: int):
    """A lead whose phone is already in the list is replaced by the posted one (upsert), keeping its place.

    The whole batch is checked first: any bad row refuses it all (400, every
    problem in `data.errors` as index, field, reason; with CSV, index 0 is the
    first row after the header). Within one batch the last of duplicate
    phones wins. Reply: `added`, `updated`, `duplicates`, `list_rows`.
    """
    service.get_list(principal.account_id, list_id)
    return ok(imports.add_leads(principal.account_id, list_id, _posted_leads()))


def _phones_to_delete() -> list[Any]:
    body = request_json()
    if isinstance(body, list):
        return body
    phones = body.get("phones") if isinstance(body, dict) else body_fields().get("phones")
    if phones is None:
        raise APIError(400, "phones: a JSON array of phone numbers is required")
    phones = split_list(phones)
    if not isinstance(phones, list):
        raise APIError(400, "phones: must be an array or a comma-separated list")
    return phones


@endpoint(bp, "/<int:list_id>/lead", ["DELETE"], summary="Delete leads by phone number", tag="phone lists",
          permission="phone_lists", body_doc=_PHONES_BODY)
def delete_leads(principal: Principal, list_id: int):
    """Body: a JSON array of phones, or `phones` as an array or comma-separated. Reply: `deleted`."""
    service.get_list(principal.account_id, list_id)
    return ok(service.delete_leads(principal.account_id, list_id, _phones_to_delete()))


@endpoint(bp, "/<int:list_id>/lead/<phone>", ["PUT"], summary="Update one lead (only submitted fields)",
          tag="phone lists", permission="phone_lists", body_doc=_LEAD_UPDATE)
def update_lead(principal: Principal, list_id: int, phone: str):
    """A `phone` in the body renumbers the lead (409 if the list already has that number)."""
    fields = {k: v for k, v in body_fields().items() if k in validation.LEAD_FIELDS}
    for name in ("phone", "priority"):  # ext_api_vars may be null (kept and returned as null)
        if name in fields and fields[name] is None:
            raise APIError(400, f"{name}: may not be null")
    return ok(service.lead_record(service.update_lead(principal.account_id, list_id, phone, fields)))


@endpoint(bp, "/<int:list_id>/lead/<phone>", ["DELETE"], summary="Delete one lead", tag="phone lists",
          permission="phone_lists")
def delete_lead(principal: Principal, list_id: int, phone: str):
    if validation.normalize_phone(phone) is None or not service.delete_leads(
            principal.account_id, list_id, [phone])["deleted"]:
        service.get_list(principal.account_id, list_id)
        raise APIError(404, f"Lead {phone} not found in phone list {list_id}")
    return ok()
