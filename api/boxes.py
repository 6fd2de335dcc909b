"""Box to box (`/internal/box/...`): the files this box holds, for another box that proxies a download.

Not for clients: no API key or session is accepted here, only a request signed by another box of the
same database (engine.boxes: HMAC-SHA256 over method, path and expiry with a key derived from the shared
secret key, valid SIGNATURE_TTL s). The client's account and permission were checked by the box it asked,
before it signed; this side serves only rows whose file is on this box (`host` is this box's name), from
this box's folders, with the same containment checks as a local download, and Range as there.
"""
from __future__ import annotations

from flask import Blueprint, request

from api import files
from api.envelope import APIError
from api.spec import endpoint
from engine import boxes
from engine.calls import recordings
from engine.media import library
from engine.store.models import Media, Recording

bp = Blueprint("boxes", __name__, url_prefix="/internal/box")

_SIGNED = [
    {"name": boxes.EXPIRES_HEADER, "required": True, "schema": {"type": "string"},
     "description": "epoch seconds after which the signature is refused (at most 90 s ahead)"},
    {"name": boxes.SIGNATURE_HEADER, "required": True, "schema": {"type": "string"},
     "description": "hex HMAC-SHA256 of `GET\\n<path>\\n<expires>` with the key derived from the secret key"},
]
_ERRORS = {403: "not signed by a box of this database, signed for another path, or expired",
           404: "unknown id, not held by this box, not complete, or its file is gone",
           416: "the Range is outside the file"}


def _check_signature() -> None:
    reason = boxes.verify(request.method, request.path, request.headers.get(boxes.EXPIRES_HEADER),
                          request.headers.get(boxes.SIGNATURE_HEADER))
    if reason is not None:
        raise APIError(403, f"box signature refused: {reason}")


@endpoint(bp, "/recording/<int:recording_id>", ["GET"], summary="Box to box: a recording this box holds",
          tag="internal", auth=False, internal=True, headers=_SIGNED, media_type="audio/wav",
          response={"type": "string", "format": "binary"}, errors=_ERRORS)
def box_recording(recording_id: int):
    """Not for clients (`x-internal`): another box of this database streams a client's download from here.
    Signed with the headers below; no API key. Range as `GET /api/recording/{id}/download`."""
    _check_signature()
    box = files.here()
    row = Recording.get_or_none(Recording.id == recording_id)
    if row is None or row.state != "complete" or row.fs_host != box.name:
        raise APIError(404, f"Recording {recording_id} is not on box {box.name}")
    return files.send(recordings.resolve(row, box.recordings), filename=f"recording-{row.id}.wav",
                      gone=f"Recording {recording_id}: the file is gone")


@endpoint(bp, "/media/<int:media_id>", ["GET"], summary="Box to box: a media file this box holds",
          tag="internal", auth=False, internal=True, headers=_SIGNED, media_type="audio/wav",
          response={"type": "string", "format": "binary"}, errors=_ERRORS)
def box_media(media_id: int):
    """Not for clients (`x-internal`): another box of this database streams a client's download from here.
    Signed with the headers below; no API key. Range as `GET /api/media/{id}/file`."""
    _check_signature()
    box = files.here()
    media = Media.get_or_none(Media.id == media_id)
    if media is None or media.host != box.name:
        raise APIError(404, f"Media {media_id} is not on box {box.name}")
    return files.send(library.resolve(media, box.media), filename=f"media-{media.id}.wav",
                      gone=f"Media {media_id} has no file on box {box.name}")

