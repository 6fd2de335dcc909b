"""The one response envelope `{"success", "msg", "data"}` and the one error type.

Every reply, error or not, goes through here so a client never sees an HTML
page or a 500 for anything it sent. Error strings are part of the API.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from engine.errors import ServiceError

log = logging.getLogger("switchdesk.api")


APIError = ServiceError


def bad_request(msg: str, data: Any = None) -> APIError:
    return APIError(400, msg, data)


def not_found(what: str = "Not found") -> APIError:
    return APIError(404, what)


def conflict(msg: str) -> APIError:
    return APIError(409, msg)


def ok(data: Any = None, status: int = 200, **extra: Any) -> tuple[Response, int]:
    body: dict[str, Any] = {"success": True}
    if data is not None:
        body["data"] = data
    body.update(extra)
    return jsonify(body), status


def fail(status: int, msg: str, data: Any = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"success": False, "msg": msg}
    if data is not None:
        body["data"] = data
    return jsonify(body), status


_HTTP_MESSAGES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    429: "Too many requests",
}


# Set in the WSGI environ when a request is refused without reading its body: the server then closes
# the connection instead of reading the rest of the body to keep it alive (engine.server).
BODY_REFUSED = "switchdesk.body_refused"


def install_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def _api_error(err: APIError):
        return fail(err.status, err.msg, err.data)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        status = err.code or 500
        msg = _HTTP_MESSAGES.get(status, err.name)
        if status == 413:
            msg = f"Request body too large (limit {app.config['MAX_CONTENT_LENGTH']} bytes)"
            request.environ[BODY_REFUSED] = True
        response, code = fail(status, msg)
        if status == 405 and hasattr(err, "valid_methods") and err.valid_methods:
            response.headers["Allow"] = ", ".join(err.valid_methods)
        return response, code

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        # A bug of ours, never a client's fault; logged with its traceback, no details leak.
        log.exception("unhandled error")
        return fail(500, "Internal error")
