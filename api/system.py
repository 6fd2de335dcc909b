"""The OpenAPI document and a liveness probe."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from peewee import fn

from api.envelope import ok
from api.spec import endpoint, openapi_document
from engine.calls import recordings
from engine.store import fastq
from engine.store.models import OutboxEvent

bp = Blueprint("system", __name__, url_prefix="/api")

VERSION = "0.1.0"


@endpoint(bp, "/openapi.json", ["GET"], summary="This API as an OpenAPI 3.1 document", tag="system", auth=False)
def openapi():
    """Generated from the same declarations that validate requests."""
    return jsonify(openapi_document("switchdesk", VERSION))


@endpoint(bp, "/status", ["GET"], summary="FreeSWITCH connection, last sync, outbox backlog", tag="system")
def status(principal):
    """`freeswitch.connected` is false while the engine is reconnecting (or not running: `engine` false).

    The outbox and recordings figures are the caller's account's only: accounts never learn of each other.
    `recordings.recordings_without_call_record` counts complete recordings whose call has no call record,
    `recordings.call_records_without_recording` call records whose recording never completed.
    """
    engine = current_app.config.get("ENGINE")
    # serve --workers: a worker answers from the engine process's last snapshot (at most ~0.5 s old)
    snapshot = current_app.config["ENGINE_STATUS"]() if "ENGINE_STATUS" in current_app.config else (
        engine.status() if engine is not None else None)
    body = {"engine": False, "freeswitch": {"connected": False}} if snapshot is None else {"engine": True,
                                                                                           **snapshot}
    body["outbox"] = _outbox(principal.account_id)
    body["recordings"] = recordings.orphans(principal.account_id)
    return ok(body)


def _outbox(account_id: int) -> dict:
    # only the statuses shown: delivered events (a week of them, millions on a busy box) are not counted
    # compiled once (engine.store.fastq): /api/status is polled, often during storms
    counts = dict(fastq.select("status.outbox.counts", lambda a, p, f: (
        OutboxEvent.select(OutboxEvent.status, fn.COUNT(OutboxEvent.seq))
        .where((OutboxEvent.account == a) & OutboxEvent.status.in_([p, f])).group_by(OutboxEvent.status)),
        account_id, "pending", "failed"))
    ((oldest,),) = fastq.select("status.outbox.oldest", lambda a, p: (
        OutboxEvent.select(fn.MIN(OutboxEvent.ts)).where((OutboxEvent.account == a) & (OutboxEvent.status == p))),
        account_id, "pending")
    return {"backlog": counts.get("pending", 0), "oldest_ts": oldest, "failed": counts.get("failed", 0)}


@endpoint(bp, "/health", ["GET"], summary="Liveness probe", tag="system", auth=False)
def health():
    return jsonify({"success": True})
