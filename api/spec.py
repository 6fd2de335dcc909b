"""Routes declared once: the same declaration validates requests and builds the OpenAPI document.

`endpoint(...)` registers a Flask view, authenticates, checks the module
permission, parses the query and the body (JSON or form; query parameters are
accepted as body fields too, the way the vendor API is used) through pydantic
models, and records everything needed for `/api/openapi.json`.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from flask import Blueprint, request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from api.auth import authenticate, require_permission
from api.body import body_fields, form_dict
from api.envelope import APIError

# --- reusable field types ------------------------------------------------------------------------


def split_list(value: Any) -> Any:
    """'1,2,3' or '[1,2]' or a list: the vendor API's "array or comma separated list"."""
    if value is None:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except (ValueError, RecursionError):
                return value
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, int | float):
        return [value]
    return value


def parse_json_text(value: Any) -> Any:
    """A JSON object may arrive as a JSON string in a form field."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return value
    return value


Id = Annotated[int, Field(ge=1, le=2**53)]
IdList = Annotated[list[Id], BeforeValidator(split_list)]
Seconds = Annotated[int, Field(ge=0, le=10 * 365 * 86400)]
Flag = Annotated[int, Field(ge=0, le=1)]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _no_control(value: Any) -> Any:
    if isinstance(value, str) and _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    if isinstance(value, list):
        for item in value:
            _no_control(item)
    return value


class Schema(BaseModel):
    """Base of request models: unknown and read-only fields are ignored, not errors.

    Control characters are refused in every text field: they have no business
    in names and would otherwise reach FreeSWITCH or PostgreSQL (NUL).
    """

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_control_characters(cls, value: Any) -> Any:
        return _no_control(value)


def submitted_fields(
    body: BaseModel,
    nullable: frozenset[str] | set[str] = frozenset(),
    default_when_null: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields a client sent (partial PUT).

    An explicit null stays null for `nullable` fields, becomes the field's
    empty value for those in `default_when_null`, and is a 400 otherwise.
    """
    defaults = default_when_null or {}
    fields: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if value is None and name not in nullable:
            if name not in defaults:
                raise APIError(400, f"{name}: may not be null")
            value = defaults[name]
        fields[name] = value
    return fields


class Page(Schema):
    limit: Annotated[int, Field(ge=1, le=100000)] | None = None
    offset: Annotated[int, Field(ge=0)] = 0

    def page(self, rows: Any) -> Any:
        """`rows` (a query) limited to this page."""
        if self.limit:
            rows = rows.limit(self.limit)
        return rows.offset(self.offset) if self.offset else rows


def _loc(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "body"


def validation_error(exc: ValidationError) -> APIError:
    errors = [{"field": _loc(e), "reason": e["msg"]} for e in exc.errors(include_url=False)]
    first = errors[0]
    return APIError(400, f"{first['field']}: {first['reason']}", {"errors": errors})


def parse(model: type[Schema], data: dict[str, Any]) -> Schema:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


# --- the registry ------------------------------------------------------------------------------


@dataclass
class Endpoint:
    rule: str
    methods: list[str]
    summary: str
    tag: str
    permission: str | None
    auth: bool
    query: type[Schema] | None
    body: type[Schema] | None
    response: Any
    description: str = ""
    body_doc: dict[str, Any] | None = None
    extra_params: list[dict[str, Any]] = field(default_factory=list)


REGISTRY: list[Endpoint] = []


def endpoint(
    bp: Blueprint,
    rule: str,
    methods: list[str],
    *,
    summary: str,
    tag: str,
    permission: str | None = None,
    auth: bool = True,
    query: type[Schema] | None = None,
    body: type[Schema] | None = None,
    response: Any = None,
    body_doc: dict[str, Any] | None = None,
) -> Callable:
    """Declare a route. The view receives `principal`, and `query`/`body` when models are given."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def view(**kwargs: Any):
            principal = authenticate() if auth else None
            if principal is not None and permission:
                require_permission(principal, permission)
            if auth:
                kwargs["principal"] = principal
            if query is not None:
                kwargs["query"] = parse(query, form_dict(request.args))
            if body is not None:
                kwargs["body"] = parse(body, body_fields())
            return fn(**kwargs)

        bp.add_url_rule(rule, endpoint=fn.__name__, view_func=view, methods=methods)
        REGISTRY.append(Endpoint(
            rule=(bp.url_prefix or "") + rule, methods=methods, summary=summary, tag=tag,
            permission=permission, auth=auth, query=query, body=body, response=response,
            description=(fn.__doc__ or "").strip(), body_doc=body_doc,
        ))
        return view

    return decorate


# --- OpenAPI -----------------------------------------------------------------------------------

_PATH_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")


def _schema_of(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    if model is None:
        return {}
    if isinstance(model, dict):
        return model
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi_document(title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    envelope = {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"type": "boolean"}, "msg": {"type": "string"}, "data": {}},
    }
    components["Envelope"] = envelope
    for ep in REGISTRY:
        path = _PATH_PARAM.sub(r"{\2}", ep.rule)
        params: list[dict[str, Any]] = []
        for kind, name in _PATH_PARAM.findall(ep.rule):
            params.append({
                "name": name, "in": "path", "required": True,
                "schema": {"type": "integer" if kind == "int" else "string"},
            })
        if ep.query is not None:
            qschema = ep.query.model_json_schema()
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        slug = re.sub(r"\W+", "_", path).strip("_")
        for method in ep.methods:
            op: dict[str, Any] = {
                "summary": ep.summary,
                "tags": [ep.tag],
                "operationId": f"{method.lower()}_{slug}",
                "parameters": params,
                "responses": {
                    "200": {
                        "description": "success (or a documented `success: false` result)",
                        "content": {"application/json": {"schema": {"allOf": [
                            {"$ref": "#/components/schemas/Envelope"},
                            {"type": "object", "properties": {"data": _schema_of(ep.response, components)}},
                        ] if ep.response is not None else [{"$ref": "#/components/schemas/Envelope"}]}}},
                    },
                    "400": {"$ref": "#/components/responses/Error"},
                },
            }
            if ep.description:
                op["description"] = ep.description
            if ep.auth:
                op["security"] = [{"apiKeyQuery": []}, {"bearer": []}, {"session": []}]
                op["responses"]["401"] = {"$ref": "#/components/responses/Error"}
                if ep.permission:
                    op["responses"]["403"] = {"$ref": "#/components/responses/Error"}
                    op["x-permission"] = ep.permission
            if "<" in ep.rule:
                op["responses"]["404"] = {"$ref": "#/components/responses/Error"}
            if ep.body is not None or ep.body_doc is not None:
                schema = ep.body_doc if ep.body_doc is not None else _schema_of(ep.body, components)
                op["requestBody"] = {"content": {
                    "application/json": {"schema": schema},
                    "application/x-www-form-urlencoded": {"schema": schema},
                }}
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {"Error": {
                "description": "error: `success` is false and `msg` says why",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
            }},
            "securitySchemes": {
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "switchdesk_session"},
            },
        },
    }
