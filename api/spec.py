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
from werkzeug.exceptions import NotFound
from werkzeug.routing import IntegerConverter

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


# The largest integer any request may carry (ids, paging, counters): exact in JSON clients (2**53) and far
# inside the databases' 64-bit integers, so an oversized number is a 400 (or a 404 in a path), never a 500.
MAX_INT = 2**53

Id = Annotated[int, Field(ge=1, le=MAX_INT)]
_CommaSeparatedIds = Annotated[str, Field(pattern=r"^\s*(\d+\s*(,\s*\d+\s*)*)?$",
                                          description="comma-separated ids")]
IdList = Annotated[list[Id], BeforeValidator(split_list, json_schema_input_type=list[Id] | _CommaSeparatedIds)]
Seconds = Annotated[int, Field(ge=0, le=10 * 365 * 86400)]
Flag = Annotated[int, Field(ge=0, le=1)]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _no_control(value: Any) -> Any:
    if isinstance(value, str) and _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
        raise ValueError(f"out of range (at most {MAX_INT} in magnitude)")
    if isinstance(value, list):
        for item in value:
            _no_control(item)
    return value


class BoundedIntConverter(IntegerConverter):
    """`<int:...>` in routes: an id beyond MAX_INT is the id of nothing (404) instead of overflowing the database.

    NotFound rather than werkzeug's `max` (a ValidationError): with that the matcher goes on to the
    route's other methods and answers 405 for PUT and DELETE.
    """

    def to_python(self, value: str) -> Any:
        number = super().to_python(value)
        if isinstance(number, int) and number > MAX_INT:
            raise NotFound()
        return number


def install_converters(url_map: Any) -> None:
    """Call before any blueprint is registered: converters are bound when rules are added."""
    url_map.converters["int"] = BoundedIntConverter


class Schema(BaseModel):
    """Base of request models: unknown and read-only fields are ignored, not errors.

    Control characters are refused in every text field: they have no business
    in names and would otherwise reach FreeSWITCH or PostgreSQL (NUL). Integers
    beyond MAX_INT are refused in every field, so none reaches the database.
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
    offset: Annotated[int, Field(ge=0, le=MAX_INT)] = 0

    def page(self, rows: Any) -> Any:
        """`rows` (a query) limited to this page."""
        if self.limit:
            rows = rows.limit(self.limit)
        return rows.offset(self.offset) if self.offset else rows


def _loc(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"]) or "body"


# pydantic prefixes the message of an error raised in a validator with its kind; the client gets the message.
_LIBRARY_PREFIX = re.compile(r"^(?:Value error|Assertion failed), ")


def _reason(error: dict[str, Any]) -> str:
    raised = (error.get("ctx") or {}).get("error")
    if error.get("type") in ("value_error", "assertion_error") and isinstance(raised, Exception) and str(raised):
        return str(raised)
    return _LIBRARY_PREFIX.sub("", error["msg"])


def validation_error(exc: ValidationError) -> APIError:
    errors = [{"field": _loc(e), "reason": _reason(e)} for e in exc.errors(include_url=False)]
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
    errors: dict[int, Any] = field(default_factory=dict)
    media_type: str = "application/json"
    internal: bool = False


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
    errors: dict[int, Any] | None = None,
    media_type: str = "application/json",
    internal: bool = False,
    headers: list[dict[str, Any]] | None = None,
    engine: bool = False,
) -> Callable:
    """Declare a route. The view receives `principal`, and `query`/`body` when models are given.

    `body_doc` documents a body the view reads itself: one schema (JSON and form) or OpenAPI `content`
    (a map from media type to `{"schema": ...}`). `errors` adds the status codes only the operation knows
    of (409, 429, 503...) to those derived from the declaration (see `_responses`): `{code: "when"}`, or
    `{code: response object}`.
    `media_type` is the content type of the 200 answer. `internal`: a box-to-box route, not for clients
    (marked `x-internal` in the document); `headers` documents header parameters. `engine`: the view acts
    through the engine (its FreeSWITCH connection or memory): `serve --workers N` relays it to the engine
    process (engine.workers.proxy).
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def view(**kwargs: Any):
            principal = authenticate() if auth else None
            if principal is not None and permission:
                require_permission(principal, permission)
            if auth:
                kwargs["principal"] = principal
            if query is not None:
                # `?name=&strategy=` as clients fill a URL template: an empty parameter is one not given.
                kwargs["query"] = parse(query, {k: v for k, v in form_dict(request.args).items() if v != ""})
            if body is not None:
                kwargs["body"] = parse(body, body_fields())
            return fn(**kwargs)

        view.requires_auth = auth  # read by the body guard: authenticate before reading a large body
        view.engine_bound = engine
        bp.add_url_rule(rule, endpoint=fn.__name__, view_func=view, methods=methods)
        REGISTRY.append(Endpoint(
            rule=(bp.url_prefix or "") + rule, methods=methods, summary=summary, tag=tag,
            permission=permission, auth=auth, query=query, body=body, response=response,
            description=(fn.__doc__ or "").strip(), body_doc=body_doc, errors=dict(errors or {}),
            media_type=media_type, internal=internal,
            extra_params=[{"in": "header", **h} for h in headers or []],
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


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None` as a query parameter: a query string cannot carry null, only leave the parameter out."""
    branches = schema.get("anyOf")
    if not branches:
        return schema
    rest = [b for b in branches if b != {"type": "null"}]
    out = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(rest) == 1:
        return {**rest[0], **out}
    return {**out, "anyOf": rest}


def _is_array(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "array" or any(b.get("type") == "array" for b in schema.get("anyOf", []))


def _query_params(model: type[Schema], components: dict[str, Any]) -> list[dict[str, Any]]:
    """A model's fields as query parameters; lists are comma-separated (`queue_ids=1,2,3`), as in the vendor doc."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _without_null(prop)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if prop.get("description"):
            param["description"] = prop["description"]
        if _is_array(prop):
            param.update(style="form", explode=False)
        params.append(param)
    return params


def _input_fields(model: type[Schema] | None) -> set[str]:
    return set(model.model_fields) if model is not None else set()


# What each derived status code means; an operation's `errors` may say more.
_STATUS = {
    400: "bad input: `msg` names the field, `data.errors` lists every problem",
    401: "no valid API key or session: `Unauthorized`",
    403: "permission denied: an API key needs `call_center_api` (and may be limited to IP ranges), and the "
         "operation's module where it names one",
    404: "unknown id (another account's ids are unknown too)",
    409: "conflict with the current state",
    413: "request body too large",
    429: "too many attempts: locked for a while",
    503: "FreeSWITCH is not connected: nothing was done",
}
# Codes a description may promise ("... (409)"): they are listed for the operation as well.
_PROMISED = re.compile(r"\b(401|403|404|409|429|503)\b")
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def _responses(ep: Endpoint, method: str, fields: set[str]) -> dict[int, Any]:
    """Every status code the operation can answer, derived from its declaration.

    400 for any input (an authenticated request may carry its key in a JSON body, which must parse); 401 and
    403 where authentication is required (a key needs `call_center_api`); 404 where an id is in the path or
    an `*_id` input names a record; 413 wherever a body is read; then the codes the description names and
    the declared `errors`.
    """
    path_params = _PATH_PARAM.findall(ep.rule)
    reads_body = ep.auth or ep.body is not None or ep.body_doc is not None
    codes: dict[int, Any] = {}
    if ep.auth or path_params or fields or ep.body_doc is not None:
        codes[400] = _STATUS[400]
    if ep.auth:
        codes[401] = _STATUS[401]
        codes[403] = _STATUS[403]
    if path_params or any(name == "id" or name.endswith("_id") for name in fields):
        codes[404] = _STATUS[404]
    if reads_body and (method in _BODY_METHODS or ep.auth):
        codes[413] = _STATUS[413]
    for code in _PROMISED.findall(ep.description):
        codes.setdefault(int(code), _STATUS[int(code)])
    codes.update(ep.errors)
    return dict(sorted(codes.items()))


def _error_response(what: Any) -> dict[str, Any]:
    if isinstance(what, dict):
        return what
    return {"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _request_body(ep: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    doc = ep.body_doc
    if doc is not None and doc and all("/" in key for key in doc):
        content = doc  # {media type: {"schema": ...}}
        required = True
    else:
        schema = doc if doc is not None else _schema_of(ep.body, components)
        content = {"application/json": {"schema": schema}, "application/x-www-form-urlencoded": {"schema": schema}}
        required = bool(ep.body is not None and ep.body.model_json_schema().get("required")) or doc is not None
    return {"required": required, "content": content,
            "description": "JSON or form-encoded; query parameters are accepted as body fields too"}


def openapi_document(title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    envelope = {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"type": "boolean"}, "msg": {"type": "string"}, "data": {}},
    }
    components["Envelope"] = envelope
    components["Error"] = {
        "type": "object",
        "required": ["success", "msg"],
        "properties": {
            "success": {"const": False},
            "msg": {"type": "string"},
            "data": {"type": "object", "properties": {"errors": {"type": "array", "items": {
                "type": "object", "properties": {"field": {"type": "string"}, "reason": {"type": "string"},
                                                 "index": {"type": "integer"}}}}}},
        },
    }
    for ep in REGISTRY:
        path = _PATH_PARAM.sub(r"{\2}", ep.rule)
        path_params: list[dict[str, Any]] = []
        for kind, name in _PATH_PARAM.findall(ep.rule):
            path_params.append({
                "name": name, "in": "path", "required": True,
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT} if kind == "int"
                else {"type": "string"},
            })
        slug = re.sub(r"\W+", "_", path).strip("_")
        for method in ep.methods:
            # A GET form of a body-taking route reads the same fields from the query string.
            query = ep.query if ep.query is not None or method != "GET" else ep.body
            has_body = method != "GET" and (ep.body is not None or ep.body_doc is not None)
            params = path_params + (_query_params(query, components) if query is not None else []) + ep.extra_params
            fields = _input_fields(query) | (_input_fields(ep.body) if has_body else set())
            if ep.media_type == "application/json":
                schema: dict[str, Any] = {"allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {"type": "object", "properties": {"data": _schema_of(ep.response, components)}},
                ] if ep.response is not None else [{"$ref": "#/components/schemas/Envelope"}]}
            else:
                schema = _schema_of(ep.response, components) or {"type": "string"}
            op: dict[str, Any] = {
                "summary": ep.summary,
                "tags": [ep.tag],
                "operationId": f"{method.lower()}_{slug}",
                "parameters": params,
                "responses": {
                    "200": {
                        "description": "success (or a documented `success: false` result)",
                        "content": {ep.media_type: {"schema": schema}},
                    },
                    **{str(code): _error_response(what)
                       for code, what in _responses(ep, method, fields).items()},
                },
            }
            if ep.description:
                op["description"] = ep.description
            if ep.internal:
                op["x-internal"] = True
            if ep.auth:
                op["security"] = [{"apiKeyQuery": []}, {"bearer": []}, {"session": []}]
                if ep.permission:
                    op["x-permission"] = ep.permission
            if has_body:
                op["requestBody"] = _request_body(ep, components)
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {"Error": {
                "description": "error: `success` is false and `msg` says why",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }},
            "securitySchemes": {
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "switchdesk_session"},
            },
        },
    }
