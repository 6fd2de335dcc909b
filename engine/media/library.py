"""The media library's rows and files: upload (converted once, off the event loop), list, rename, delete.

Files live in `<media dir>/<account id>/<random>.wav`, a folder switchdesk owns and FreeSWITCH reads
(`--media-dir`). The file is written under a temporary name, renamed into place, and only then its row
committed; a failed commit removes the file again. A row carries the host that holds its file
(DESIGN.md: with several boxes, the box that has the file serves it).

Queues refer to media by id (`moh_id`, `announce_id`, `join_announce`, `pre_bridge_announce`, the
`audio_playback.playlist` of hold music): `check_ids` refuses ids the account does not have, and a
media that a queue uses cannot be deleted (409 naming the queues).
"""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import gevent
import peewee

from engine import boxes
from engine.errors import ServiceError
from engine.media import audio
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Media, Queue, VoicemailBox

log = logging.getLogger("switchdesk.media")

ENV_DIR = "SWITCHDESK_MEDIA_DIR"
DEFAULT_DIR = "/var/lib/switchdesk/media"
MAX_BYTES = 20 * 1024 * 1024  # one upload; refused (413) before its body is read when larger
MAX_SECONDS = 1200  # 20 minutes of audio: 37 MB at 16 kHz
# The queue fields that name one media id, and the one that names a list of them.
QUEUE_MEDIA_FIELDS = ("moh_id", "announce_id", "join_announce", "pre_bridge_announce")
PLAYLIST_MAX = 50

_settings: dict[str, Any] = {"dir": None, "max_bytes": MAX_BYTES, "max_seconds": MAX_SECONDS}


def configure(directory: str | os.PathLike | None = None, *, max_bytes: int | None = None,
              max_seconds: int | None = None) -> None:
    """Where media files go (absolute: FreeSWITCH is told these paths), and the upload limits."""
    if directory is not None:
        _settings["dir"] = Path(directory).expanduser().resolve()
    if max_bytes is not None:
        _settings["max_bytes"] = max_bytes
    if max_seconds is not None:
        _settings["max_seconds"] = max_seconds


def media_dir() -> Path:
    configured = _settings["dir"]
    return configured if configured is not None else Path(os.environ.get(ENV_DIR) or DEFAULT_DIR).resolve()


def max_bytes() -> int:
    return int(_settings["max_bytes"])


def max_seconds() -> int:
    return int(_settings["max_seconds"])


def host() -> str:
    """The box whose disk holds the files uploaded here (engine.boxes: `serve --hostname`)."""
    return boxes.name()


def file_path(account_id: int, file: str) -> str:
    """The absolute path of a media file, as FreeSWITCH is told to play it."""
    return str(media_dir() / str(int(account_id)) / file)


def path(media: Media) -> str:
    return file_path(media.account_id, media.file)


def resolve(media: Media, root: Path | None = None) -> Path:
    """The media's file in the media folder (`root`, default this process's), never outside it (404)."""
    folder = ((root if root is not None else media_dir()) / str(int(media.account_id))).resolve()
    found = (folder / media.file).resolve()
    if not media.file or found.parent != folder:
        log.warning("media %s: its file name points outside the media folder; refused", media.id)
        raise ServiceError(404, f"Media {media.id} not found")
    return found


# --- reads ----------------------------------------------------------------------------------------


def get(account_id: int, media_id: int) -> Media:
    return Media.owned(account_id, media_id)


def list_media(account_id: int, *, name: str | None = None, limit: int | None = None, offset: int = 0) -> list[Media]:
    rows = Media.of(account_id).order_by(Media.id)
    if name is not None:
        rows = rows.where(Media.name == name)
    if limit:
        rows = rows.limit(limit)
    if offset:
        rows = rows.offset(offset)
    return list(rows)


def paths_of(account_id: int, ids: Iterable[int]) -> dict[int, str]:
    """id -> absolute path of the account's media among `ids` (others are left out)."""
    wanted = sorted({int(i) for i in ids if i})
    if not wanted:
        return {}
    rows = Media.select(Media.id, Media.account, Media.file).where(
        (Media.account == account_id) & Media.id.in_(wanted))
    return {m.id: path(m) for m in rows}


def check_ids(account_id: int, fields: dict[str, int | list[int] | None]) -> None:
    """400 naming the first field whose media id(s) the account does not have. Call it inside the
    transaction that stores the ids."""
    wanted: set[int] = set()
    for value in fields.values():
        if isinstance(value, list):
            wanted.update(value)
        elif value:
            wanted.add(value)
    if not wanted:
        return
    found = {m.id for m in Media.select(Media.id).where((Media.account == account_id) & Media.id.in_(sorted(wanted)))}
    for field, value in fields.items():
        values = value if isinstance(value, list) else [value] if value else []
        missing = [v for v in values if v not in found]
        if missing:
            raise ServiceError(400, f"{field}: no media with id {', '.join(str(v) for v in missing)}",
                               {"ids": missing})


def playlist_of(audio_playback: Any) -> list[int]:
    """The hold-music playlist in a queue's `audio_playback` (`{"playlist": [ids]}`), else []."""
    if isinstance(audio_playback, dict):
        ids = audio_playback.get("playlist")
        if isinstance(ids, list):
            return [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
    return []


def users_of(account_id: int, media_id: int) -> list[str]:
    """What uses the media, for the 409 of a delete: `queue 3 (Sales): moh_id`, `voicemail box 2 (...)`."""
    used = []
    for queue in Queue.of(account_id).order_by(Queue.id):
        fields = [f for f in QUEUE_MEDIA_FIELDS if getattr(queue, f) == media_id]
        if media_id in playlist_of(queue.audio_playback):
            fields.append("audio_playback.playlist")
        if fields:
            used.append(f"queue {queue.id} ({queue.name}): {', '.join(fields)}")
    for box in VoicemailBox.of(account_id).where(VoicemailBox.greeting_id == media_id).order_by(VoicemailBox.id):
        used.append(f"voicemail box {box.id} ({box.name}): greeting_id")
    return used


# --- writes ---------------------------------------------------------------------------------------


def _check_name(account_id: int, name: str, exclude_id: int | None = None) -> None:
    if Media.name_taken(account_id, name, exclude_id):
        raise ServiceError(409, f"name: a media named {name!r} already exists")


def _off_loop(fn: Any, *args: Any) -> Any:
    """`fn(*args)` in gevent's threadpool: decoding and resampling never hold up the event loop."""
    return gevent.get_hub().threadpool.apply(fn, args)


def create(account_id: int, name: str, source: BinaryIO, source_name: str = "") -> Media:
    """Convert `source` and store it as the account's media `name`; 400 when it is not audio we accept."""
    with db.atomic():
        _check_name(account_id, name)
    folder = media_dir() / str(int(account_id))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for made in (folder.parent, folder):  # FreeSWITCH may run as another user (and the service's umask 027)
            if made.stat().st_mode & 0o005 != 0o005:
                os.chmod(made, made.stat().st_mode | 0o055)  # noqa: S103  (read by FreeSWITCH)
    except OSError as exc:
        log.error("media directory %s cannot be created: %s", folder, exc)
        raise ServiceError(503, "the media directory is not writable on this box") from None
    token = secrets.token_hex(12)
    final = folder / f"{token}.wav"
    temporary = folder / f".{token}.part"
    pending = Pending()
    try:
        try:
            converted = _off_loop(audio.convert, source, str(temporary), max_seconds())
        except audio.AudioError as exc:
            raise ServiceError(400, f"file: {exc}") from None
        os.chmod(temporary, 0o644)  # FreeSWITCH may run as another user
        os.replace(temporary, final)
        try:
            with db.atomic():
                _check_name(account_id, name)
                media = Media.create(account=account_id, name=name, file=final.name, host=host(),
                                     rate=converted.rate, duration_ms=converted.duration_ms,
                                     size=final.stat().st_size, source_name=source_name[:255],
                                     source_format=converted.source_format, source_rate=converted.source_rate,
                                     source_channels=converted.source_channels)
                pending.add("media", account_id, [media.id])
        except peewee.IntegrityError:
            raise ServiceError(409, f"name: a media named {name!r} already exists") from None
    except BaseException:
        for leftover in (temporary, final):
            leftover.unlink(missing_ok=True)
        raise
    pending.send()
    return media


def rename(account_id: int, media_id: int, name: str) -> Media:
    pending = Pending()
    with db.atomic():
        media = get(account_id, media_id)
        if name != media.name:
            _check_name(account_id, name, exclude_id=media.id)
            media.name = name
            try:
                with db.atomic():
                    media.save()
            except peewee.IntegrityError:
                raise ServiceError(409, f"name: a media named {name!r} already exists") from None
            pending.add("media", account_id, [media.id])
    pending.send()
    return media


def delete(account_id: int, media_id: int) -> None:
    """Delete the row, then its file; 409 naming the queues that use it (nothing deleted)."""
    pending = Pending()
    with db.atomic():
        media = get(account_id, media_id)
        used = users_of(account_id, media.id)
        if used:
            raise ServiceError(409, f"media {media.id} is in use: {'; '.join(used)}", {"used_by": used})
        media.delete_instance()
        pending.add("media", account_id, [media_id])
    pending.send()
    if media.host == host():
        Path(path(media)).unlink(missing_ok=True)
    else:
        log.warning("media %s deleted; its file stays on %s", media_id, media.host)
