"""Reading a request's input: query, form or JSON body, with the vendor API's habits (query
parameters count as body fields, `name[]` lists, `api_key` anywhere).

Its own module so that authentication (which may find the key in the body) and route declarations
(which validate the body) both build on it without importing each other.

Bodies are bounded before anything reads them (`read_chunked_body`, installed by the app factory):
a chunked body is read whole within the limit or refused with 413 (Werkzeug would silently cut it
at the limit), and a key inside the body counts only for small bodies, so a large request without
a key in its headers, query or cookie is refused before its body is read.
"""
from __future__ import annotations

import json
from typing import Any

from flask import current_app, g, request

from api.envelope import APIError

# A key inside the body is looked for only in bodies up to this size: anything larger must carry
# its key in the Authorization header, the query string or the session cookie.
KEY_IN_BODY_MAX = 64 * 1024
_READ_SIZE = 64 * 1024


def is_chunked() -> bool:
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def body_size() -> int | None:
    """The body's length when known without reading it (or once a chunked body was read)."""
    cached = getattr(request, "_cached_data", None)
    if cached is not None:
        return len(cached)
    return None if is_chunked() else (request.content_length or 0)


def key_may_be_in_body() -> bool:
    size = body_size()
    return size is not None and size <= KEY_IN_BODY_MAX


def read_chunked_body(cap: int | None = None) -> None:
    """Read a chunked body whole, within MAX_CONTENT_LENGTH, before anyone else reads it.

    What is read is kept where Werkzeug looks first (`get_data`, form and JSON parsing), so the
    views see the whole body or never run: over the limit it is 413 before anything is written.
    """
    if not is_chunked() or getattr(request, "_cached_data", None) is not None:
        return
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or (1 << 62)
    if cap is not None:
        limit = min(limit, cap)
    stream = request.environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            part = stream.read(min(_READ_SIZE, limit + 1 - size))
        except (OSError, ValueError):
            raise APIError(400, "The request body could not be read") from None
        if not part:
            break
        parts.append(part)
        size += len(part)
        if size > limit:
            raise APIError(413, f"Request body too large (limit {limit} bytes)")
    request._cached_data = b"".join(parts)


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
