"""Routes that need the engine, relayed by a worker to the engine process (see engine.workers).

A worker has no FreeSWITCH connection and not the engine's memory (the dialer's live figures, the
queue counts behind `/metrics`), so a route declared `engine=True` is relayed whole: method, path
and query, headers and body as the client sent them, over the engine process's private unix socket,
and the answer streamed back as it comes. The engine process serves it with the same app, so
authentication, permissions, validation and errors are exactly those of a single process. The
client's address travels in a header that the engine process believes only with the per-run token
(`Gate`); nothing else may use that socket.
"""
from __future__ import annotations

import hmac
import http.client
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from flask import Response, current_app, request

from engine.workers import REMOTE_HEADER, TOKEN_HEADER

log = logging.getLogger("switchdesk.workers")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length", "host",
                        TOKEN_HEADER.lower(), REMOTE_HEADER.lower()})
TIMEOUT = 65.0  # longer than any engine-bound route takes (an originate waits up to 60 s for its answer)
CHUNK = 65536


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("engine", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Target:
    """Where this worker's engine-bound requests go."""

    def __init__(self, path: str, token: str, timeout: float = TIMEOUT) -> None:
        self.path = path
        self.token = token
        self.timeout = timeout


def engine_bound(app: Any) -> bool:
    view = app.view_functions.get(request.endpoint) if request.endpoint else None
    return bool(getattr(view, "engine_bound", False))


def relay_hook() -> Response | None:
    """`before_request` of a worker's app: relay an engine-bound route, serve the rest here."""
    target: Target | None = current_app.config.get("ENGINE_PROXY")
    if target is None or not engine_bound(current_app):
        return None
    return relay(target)


def relay(target: Target) -> Response:
    from api.envelope import APIError

    body = request.get_data(cache=True)
    headers = {name: value for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP}
    headers[TOKEN_HEADER] = target.token
    headers[REMOTE_HEADER] = request.remote_addr or ""
    headers["Host"] = request.host
    if body or request.method in ("POST", "PUT", "PATCH"):
        headers["Content-Length"] = str(len(body))
    environ = request.environ
    # WSGI's path is the request's bytes decoded as latin-1: quote those bytes again
    raw = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1", "replace")
    path = quote(raw, safe="/:@!$&'()*+,;=~")
    if environ.get("QUERY_STRING"):
        path += "?" + environ["QUERY_STRING"]
    connection = _UnixConnection(target.path, target.timeout)
    try:
        connection.request(request.method, path, body=body or None, headers=headers)
        answer = connection.getresponse()
    except OSError as exc:
        connection.close()
        log.error("engine process not reachable for %s %s: %s", request.method, request.path, exc)
        raise APIError(503, "the engine process is not reachable; try again") from exc
    relayed = [(name, value) for name, value in answer.getheaders() if name.lower() not in HOP_BY_HOP]
    length = answer.getheader("Content-Length")
    if length is not None:
        relayed.append(("Content-Length", length))
    return Response(_stream(answer, connection), status=answer.status, headers=relayed, direct_passthrough=True)


def _stream(answer: http.client.HTTPResponse, connection: http.client.HTTPConnection) -> Iterator[bytes]:
    try:
        while True:
            chunk = answer.read1(CHUNK) if hasattr(answer, "read1") else answer.read(CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        connection.close()


class Gate:
    """WSGI middleware of the engine process's private socket: only its workers, with the client's address."""

    def __init__(self, app: Callable, token: str) -> None:
        self.app = app
        self.token = token.encode()
        self._token_key = "HTTP_" + TOKEN_HEADER.upper().replace("-", "_")
        self._remote_key = "HTTP_" + REMOTE_HEADER.upper().replace("-", "_")

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        given = environ.pop(self._token_key, "").encode()
        remote = environ.pop(self._remote_key, "")
        if not hmac.compare_digest(given, self.token):
            start_response("403 Forbidden", [("Content-Type", "application/json")])
            return [b'{"success":false,"msg":"not a worker of this process"}']
        environ["REMOTE_ADDR"] = remote
        return self.app(environ, start_response)
