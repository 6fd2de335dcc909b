"""The media library (`/api/media`, permission module `media`): audio for hold music and announcements.

Uploads are converted once (engine.media.audio, in a thread: the event loop keeps serving) and
stored per account where FreeSWITCH reads them; queues name them by id.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Annotated, Any

from flask import Blueprint, request
from pydantic import Field

from api import files
from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import Page, Schema, endpoint, parse
from engine.media import library
from engine.store.models import Media

bp = Blueprint("media", __name__, url_prefix="/api/media")

Name = Annotated[str, Field(min_length=1, max_length=200, description="unique in the account")]
_MULTIPART_SLACK = 64 * 1024  # the form's own bytes around the file


class MediaQuery(Page):
    name: Annotated[str, Field(max_length=200, description="exact name")] | None = None


class UploadFields(Schema):
    name: Name | None = None


class MediaFields(Schema):
    name: Name


MEDIA_RECORD_SCHEMA = {
    "type": "object",
    "required": ["id", "account_id", "name", "rate", "duration_ms", "size", "host"],
    "properties": {
        "id": {"type": "integer"}, "account_id": {"type": "integer"}, "name": {"type": "string"},
        "rate": {"type": "integer", "description": "sample rate of the stored file: 8000 or 16000"},
        "duration_ms": {"type": "integer"}, "size": {"type": "integer", "description": "bytes of the stored WAV"},
        "host": {"type": "string", "description": "the box whose disk holds the file"},
        "source_name": {"type": "string"}, "source_format": {"type": "string"},
        "source_rate": {"type": "integer"}, "source_channels": {"type": "integer"}, "ts": {"type": "integer"},
    },
}
_UPLOAD_DOC = {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "WAV or MP3 (also FLAC, Ogg Vorbis, AIFF), any sample rate"},
                       "name": {"type": "string", "minLength": 1, "maxLength": 200,
                                "description": "default: the file's name without its extension"}}}},
    "audio/*": {"schema": {"type": "string", "format": "binary"}},
}


def record(media: Media) -> dict[str, Any]:
    return {"id": media.id, "account_id": media.account_id, "name": media.name, "rate": media.rate,
            "duration_ms": media.duration_ms, "size": media.size, "host": media.host,
            "source_name": media.source_name, "source_format": media.source_format,
            "source_rate": media.source_rate, "source_channels": media.source_channels, "ts": media.ts}


def upload_limit() -> int:
    """The largest upload request body (read by the app's body guard before the body is read)."""
    return library.max_bytes() + _MULTIPART_SLACK


@endpoint(bp, "", ["GET"], summary="List media", tag="media", permission="media", query=MediaQuery,
          response={"type": "array", "items": MEDIA_RECORD_SCHEMA})
def list_media(principal: Principal, query: MediaQuery):
    rows = library.list_media(principal.account_id, name=query.name, limit=query.limit, offset=query.offset)
    return ok([record(m) for m in rows])


@endpoint(bp, "/<int:media_id>", ["GET"], summary="Get a media", tag="media", permission="media",
          response=MEDIA_RECORD_SCHEMA)
def get_media(principal: Principal, media_id: int):
    return ok(record(library.get(principal.account_id, media_id)))


def _default_name(filename: str) -> str:
    stem = Path(filename.replace("\\", "/")).stem if filename else ""
    stem = re.sub(r"[\x00-\x1f\x7f]", "", stem).strip()[:200]
    return stem or "upload"


@endpoint(bp, "", ["POST"], summary="Upload audio (converted once for FreeSWITCH)", tag="media",
          permission="media", body_doc=_UPLOAD_DOC, response=MEDIA_RECORD_SCHEMA,
          errors={409: "the name is taken", 413: "larger than the upload limit (20 MiB by default, "
                                                  "--media-max-bytes): refused before the body is read",
                  503: "the media directory cannot be written on this box"})
def upload_media(principal: Principal):
    """`multipart/form-data` with the audio in `file` (and `name`), or the audio itself as the body with an
    `audio/*` (or `application/octet-stream`) content type and `?name=`. WAV or MP3 at any sample rate
    (also FLAC, Ogg Vorbis, AIFF); stored as mono 16-bit WAV at 16 kHz (8 kHz when the source has less
    bandwidth). At most 20 minutes (`--media-max-seconds`). Anything that is not audio is 400 and
    nothing is stored."""
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise APIError(400, "file: missing (a multipart/form-data field named `file`)")
        fields = parse(UploadFields, {k: v for k, v in request.form.items() if k == "name"}
                       or {k: v for k, v in request.args.items() if k == "name"})
        source, filename = upload.stream, upload.filename or ""
    elif mimetype.startswith("audio/") or mimetype == "application/octet-stream":
        fields = parse(UploadFields, {k: v for k, v in request.args.items() if k == "name"})
        source, filename = io.BytesIO(request.get_data(cache=False)), ""
    else:
        raise APIError(400, "file: send the audio as the multipart/form-data field `file`, or as the body "
                            "with an audio/* content type")
    name = fields.name or _default_name(filename)  # type: ignore[attr-defined]
    return ok(record(library.create(principal.account_id, name, source, filename)))


upload_media.body_limit = upload_limit  # type: ignore[attr-defined]


@endpoint(bp, "/<int:media_id>", ["PUT"], summary="Rename a media", tag="media", permission="media",
          body=MediaFields, response=MEDIA_RECORD_SCHEMA, errors={409: "the name is taken"})
def rename_media(principal: Principal, media_id: int, body: MediaFields):
    return ok(record(library.rename(principal.account_id, media_id, body.name)))


@endpoint(bp, "/<int:media_id>", ["DELETE"], summary="Delete a media", tag="media", permission="media",
          errors={409: "a queue uses it: `msg` and `data.used_by` name the queues and fields"})
def delete_media(principal: Principal, media_id: int):
    library.delete(principal.account_id, media_id)
    return ok()


@endpoint(bp, "/<int:media_id>/file", ["GET"], summary="Download a media's stored WAV", tag="media",
          permission="media", media_type="audio/wav", response={"type": "string", "format": "binary"},
          errors={404: "unknown, another account's, or its file is gone", 416: "the Range is outside the file",
                  502: "the box that holds the file answered wrongly (`data.host`)",
                  503: "the box that holds the file is not registered, advertises no URL, has not reported "
                       "for 90 s or cannot be reached (`data.host`)"})
def download_media(principal: Principal, media_id: int):
    """The converted file as FreeSWITCH plays it (mono 16-bit WAV), streamed, with one HTTP `Range` (206).
    A media another box holds (`host`) is fetched from that box and streamed through (README: Several boxes)."""
    media = library.get(principal.account_id, media_id)
    safe = re.sub(r"[^A-Za-z0-9._ -]", "_", media.name)[:100] or f"media-{media.id}"
    box = files.here()
    if not files.holds(media.host, box):
        return files.proxy(media.host, f"/internal/box/media/{media.id}", what=f"media {media.id}",
                           filename=f"{safe}.wav")
    return files.send(library.resolve(media, box.media), filename=f"{safe}.wav",
                      gone=f"Media {media.id} has no file on this box")
