"""Downloads of the files a box holds (recordings, media): streamed from this box's disk, or proxied from
the box that holds them (engine.boxes), with one HTTP Range either way.

Which box this is, and where its folders are, come from the app's config (`BOX_NAME`, `RECORDINGS_DIR`,
`MEDIA_DIR`: several apps in one process, as the tests run two boxes) or else from what `serve`
configured for the process.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gevent
from flask import Response, current_app, request

from api.envelope import APIError
from engine import boxes
from engine.calls import recordings
from engine.media import library

CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")  # longer numbers are no range (int() of 5,000 digits raises)


@dataclass(frozen=True)
class Here:
    """This box: its name and its folders."""

    name: str
    recordings: Path | None
    media: Path


def here() -> Here:
    config = current_app.config
    rec = config.get("RECORDINGS_DIR")
    media = config.get("MEDIA_DIR")
    return Here(config.get("BOX_NAME") or boxes.name(),
                Path(rec).resolve() if rec else recordings.settings.root,
                Path(media).resolve() if media else library.media_dir())


def holds(host: str, box: Here) -> bool:
    """Whether this box holds a file whose row names `host` ("" is a row from before boxes were named)."""
    return not host or host == box.name


def _read(path: Path, start: int, length: int) -> Iterator[bytes]:
    """The file's bytes [start, start+length), a chunk at a time, each read in the threadpool."""
    pool = gevent.get_hub().threadpool
    handle = pool.spawn(open, path, "rb").get()
    try:
        pool.spawn(handle.seek, start).get()
        left = length
        while left > 0:
            chunk = pool.spawn(handle.read, min(CHUNK, left)).get()
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()


def _unsatisfiable(size: int) -> Response:
    response = Response('{"success":false,"msg":"Range not satisfiable"}', status=416, mimetype="application/json")
    response.headers["Content-Range"] = f"bytes */{size}"
    return response


def send(path: Path, *, filename: str, gone: str, mimetype: str = "audio/wav") -> Response:
    """The file streamed from disk, never read whole. One `Range: bytes=a-b` (or `a-`, `-n`) answers 206
    with exactly those bytes; several ranges answer the whole file (200); outside the file, 416."""
    try:
        size = gevent.get_hub().threadpool.spawn(lambda: path.stat().st_size).get()
    except OSError:
        raise APIError(404, gone) from None
    start, length, status = 0, size, 200
    wanted = request.headers.get("Range")
    if wanted:
        match = _RANGE.match(wanted.strip())
        if match and (match.group(1) or match.group(2)):
            first, last = match.group(1), match.group(2)
            if first:
                start = int(first)
                end = min(int(last), size - 1) if last else size - 1
                if start >= size or (last and int(last) < start):
                    return _unsatisfiable(size)
            else:
                suffix = int(last)
                if suffix == 0:
                    return _unsatisfiable(size)
                start, end = max(0, size - suffix), size - 1
            length, status = end - start + 1, 206
    response = Response(_read(path, start, length), status=status, mimetype=mimetype, direct_passthrough=True)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Length"] = str(length)
    if filename:
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
    return response


def proxy(host: str, internal_path: str, *, what: str, filename: str) -> Response:
    """The holder's answer for `internal_path`, streamed through: its status, Content-Range and bytes."""
    upstream = boxes.fetch(host, internal_path, what, request.headers.get("Range"))
    response = Response(upstream.body, status=upstream.status,
                        content_type=upstream.headers.get("Content-Type", "application/octet-stream"),
                        direct_passthrough=True)
    for name in ("Content-Length", "Content-Range", "Accept-Ranges"):
        if name in upstream.headers:
            response.headers[name] = upstream.headers[name]
    if upstream.status in (200, 206):
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
