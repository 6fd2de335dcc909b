"""Reading a request's input: query, form or JSON body, with the vendor API's habits (query
parameters count as body fields, `name[]` lists, `api_key` anywhere).

Its own module so that authentication (which may find the key in the body) and route declarations
(which validate the body) both build on it without importing each other.
"""
from __future__ import annotations

import json
from typing import Any

from flask import g, request

from api.envelope import APIError


def form_dict(multidict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in multidict:
        values = multidict.getlist(key)
        if key.endswith("[]"):
            out[key[:-2]] = values
        else:
            out[key] = values[-1] if len(values) == 1 else values
    return out


def request_json() -> Any:
    """The parsed JSON body (cached), or None for a non-JSON request; 400 when malformed."""
    if "json_body" not in g:
        g.json_body = None
        if request.is_json:
            raw = request.get_data(cache=True)
            if raw.strip():
                try:
                    g.json_body = json.loads(raw)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    raise APIError(400, "Malformed JSON body") from None
    return g.json_body


def body_fields() -> dict[str, Any]:
    """Query parameters overlaid with the JSON object or form body."""
    data = form_dict(request.args)
    body = request_json()
    if body is not None:
        if not isinstance(body, dict):
            raise APIError(400, "The JSON body must be an object")
        data.update(body)
    elif request.form:
        data.update(form_dict(request.form))
    data.pop("api_key", None)
    return data
