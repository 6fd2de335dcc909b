"""The OpenAPI document and a liveness probe."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from api.envelope import ok
from api.spec import endpoint, openapi_document

bp = Blueprint("system", __name__, url_prefix="/api")

VERSION = "0.1.0"


@endpoint(bp, "/openapi.json", ["GET"], summary="This API as an OpenAPI 3.1 document", tag="system", auth=False)
def openapi():
    """Generated from the same declarations that validate requests."""
    return jsonify(openapi_document("switchdesk", VERSION))


@endpoint(bp, "/status", ["GET"], summary="FreeSWITCH connection, last sync, outbox backlog", tag="system")
def status(principal):
    """`freeswitch.connected` is false while the engine is reconnecting (or not running: `engine` false)."""
    engine = current_app.config.get("ENGINE")
    if engine is None:
        return ok({"engine": False, "freeswitch": {"connected": False}})
    return ok({"engine": True, **engine.status()})


@endpoint(bp, "/health", ["GET"], summary="Liveness probe", tag="system", auth=False)
def health():
    return jsonify({"success": True})
