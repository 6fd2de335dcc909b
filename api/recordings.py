"""Recordings: list, one, download (with HTTP Range, streamed), delete (engine/calls/recordings.py).
Permission module `recordings`. A recording is offered once it is complete (FreeSWITCH's RECORD_STOP)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import BeforeValidator, Field

from api import files
from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import MAX_INT, Id, Schema, endpoint
from engine.calls import recordings, records
from engine.store.models import Recording

bp = Blueprint("recordings", __name__, url_prefix="/api/recording")

MAX_PAGE = 1000


def _text(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Epoch = Annotated[int, Field(ge=0, le=2**40)]


class RecordingQuery(Schema):
    start: Epoch | None = Field(None, description="recordings started at or after (epoch seconds)")
    end: Epoch | None = Field(None, description="recordings started before (epoch seconds)")
    call_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z-]{8,64}$")] | None = None
    queue_id: Id | None = None
    user_id: Id | None = None
    number: Annotated[str, BeforeValidator(_text), Field(pattern=r"^\+?[0-9*#]{1,32}$")] | None = None
    state: Literal["complete", "recording", "failed", "all"] = Field(
        "complete", description="complete ones by default; `recording` lists those being written (not offered)")
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100
    offset: Annotated[int, Field(ge=0, le=MAX_INT)] = 0
    before_id: Annotated[int, Field(ge=1, le=MAX_INT)] | None = None


def record(row: Recording, call: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recording with its call record's id and legs (null / [] while the call has no record)."""
    call = call or {}
    return {
        "id": row.id, "call_id": row.call_id, "leg": row.leg_uuid, "state": row.state, "paused": row.paused,
        "queue_id": row.queue_id, "user_id": row.user_id, "src_num": row.src_num, "dst_num": row.dst_num,
        "started_at": row.started_at, "ended_at": row.ended_at, "duration_ms": row.duration_ms, "size": row.size,
        "host": row.fs_host, "content_type": "audio/wav",
        "call_record_id": call.get("call_record_id"), "legs": call.get("legs", []),
    }


_RECORDING = {"type": "object", "properties": {
    "id": {"type": "integer"}, "call_id": {"type": "string", "description": "the call record's call_id"},
    "state": {"type": "string", "enum": ["starting", "recording", "complete", "failed"]},
    "queue_id": {"type": ["integer", "null"]}, "user_id": {"type": ["integer", "null"]},
    "src_num": {"type": ["string", "null"]}, "dst_num": {"type": ["string", "null"]},
    "started_at": {"type": "integer"}, "ended_at": {"type": ["integer", "null"]},
    "duration_ms": {"type": ["integer", "null"]}, "size": {"type": ["integer", "null"]},
    "call_record_id": {"type": ["integer", "null"], "description": "its call record (`GET /api/cdr/{call_id}`)"},
    "legs": {"type": "array", "items": {"type": "string"}, "description": "the call's legs"}}}


@endpoint(bp, "", ["GET"], summary="Recordings, newest first", tag="recordings", permission="recordings",
          query=RecordingQuery, response={"type": "array", "items": _RECORDING})
def list_recordings(principal: Principal, query: RecordingQuery):
    """Filters: time range, call, queue, user, number (caller's or dialed). Paging: `limit` (at most 1000)
    with `offset`, or `before_id` (the reply's `next_before_id`)."""
    rows = Recording.select().where(Recording.account == principal.account_id)
    if query.state == "recording":
        rows = rows.where(Recording.state.in_(["starting", "recording"]))
    elif query.state != "all":
        rows = rows.where(Recording.state == query.state)
    if query.start is not None:
        rows = rows.where(Recording.started_at >= query.start)
    if query.end is not None:
        rows = rows.where(Recording.started_at < query.end)
    if query.call_id is not None:
        rows = rows.where(Recording.call_id == query.call_id)
    if query.queue_id is not None:
        rows = rows.where(Recording.queue_id == query.queue_id)
    if query.user_id is not None:
        rows = rows.where(Recording.user_id == query.user_id)
    if query.number is not None:
        rows = rows.where((Recording.src_num == query.number) | (Recording.dst_num == query.number))
    if query.before_id is not None:
        rows = rows.where(Recording.id < query.before_id)
    elif query.offset:
        rows = rows.offset(query.offset)
    page = list(rows.order_by(Recording.id.desc()).limit(query.limit))
    calls = records.by_call_ids(principal.account_id, [r.call_id for r in page])
    return ok([record(r, calls.get(r.call_id)) for r in page],
              next_before_id=page[-1].id if len(page) == query.limit else None)


@endpoint(bp, "/<int:recording_id>", ["GET"], summary="One recording", tag="recordings", permission="recordings",
          response=_RECORDING)
def get_recording(principal: Principal, recording_id: int):
    row = Recording.owned(principal.account_id, recording_id)
    return ok(record(row, records.by_call_ids(principal.account_id, [row.call_id]).get(row.call_id)))


@endpoint(bp, "/<int:recording_id>", ["DELETE"], summary="Delete a recording (row and file)", tag="recordings",
          permission="recordings", errors={409: "the recording is still being written"})
def delete_recording(principal: Principal, recording_id: int):
    recordings.delete(principal.account_id, recording_id)
    return ok()


@endpoint(bp, "/<int:recording_id>/download", ["GET"], summary="The recording's WAV file (HTTP Range supported)",
          tag="recordings", permission="recordings", media_type="audio/wav",
          response={"type": "string", "format": "binary"},
          errors={404: "unknown, another account's, not complete yet, or its file is gone",
                  416: "the Range is outside the file",
                  502: "the box that holds the file answered wrongly (`data.host`)",
                  503: "the box that holds the file is not registered, advertises no URL, has not reported "
                       "for 90 s or cannot be reached (`data.host`)"})
def download(principal: Principal, recording_id: int):
    """Streamed from disk, never read whole. One `Range: bytes=a-b` (or `a-`, `-n`) answers 206 with exactly
    those bytes; several ranges answer the whole file (200). A recording another box holds (`host`) is
    fetched from that box and streamed through, Range and all (README: Several boxes)."""
    row = Recording.owned(principal.account_id, recording_id)
    if row.state != "complete":
        raise APIError(404, f"Recording {recording_id} is not complete")
    filename = f"recording-{row.id}.wav"
    box = files.here()
    if not files.holds(row.fs_host, box):
        return files.proxy(row.fs_host, f"/internal/box/recording/{row.id}", what=f"recording {row.id}",
                           filename=filename)
    return files.send(recordings.resolve(row, box.recordings), filename=filename,
                      gone=f"Recording {recording_id}: the file is gone")
