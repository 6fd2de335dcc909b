"""Call recordings: which calls are recorded, FreeSWITCH writing them into our folder, and their lifecycle.

An engine plugin (engine/engine.py, PLUGIN_MODULES).

* Deciding: when a call is connected (a leg other than its first one answers,
  engine.calls.callevents) `call_connected` applies the precedence of the
  README ("Recordings"): the queue's `record`, then each of our users' on the
  call `user_record`, then their direction flags (`rec_inb_ext`,
  `rec_out_ext`, `rec_inb_int`, `rec_out_int`). A recorded call gets one
  `Recording` row (state `starting`) in the call event's transaction, and
  `uuid_record <first leg> start <file>` goes out on the command connection
  from a greenlet. Two compiled selects per connected call, none per event.
* The folder is switchdesk's (`serve --recordings-dir`), FreeSWITCH must be
  able to write it. The file is `<account id>/<YYYY-MM-DD>/<recording uuid>.wav`,
  built from ids only; a client's id or path never becomes a path (the API
  takes a numeric id and `resolve()` refuses anything outside the folder).
* RECORD_START marks it `recording`; RECORD_STOP marks it `complete` with its
  size and duration (read from the WAV header off the event loop). Only then
  is it offered for download. After a (re)connect, a recording still
  `starting`/`recording` whose leg FreeSWITCH no longer has (a RECORD_STOP we
  could not hear: a restart of switchdesk or of FreeSWITCH) is finished from
  the file it left (`complete`, or `failed` when there is none).
* Disk: when the folder's file system has less than `min_free` bytes free, a
  new recording is refused with a logged warning.
* Retention: `recording_days` per account (engine.calls.records.retention),
  else the server default; `purge` runs daily with the call records' purge.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import peewee

from engine import boxes
from engine.calls import records
from engine.calls.call_fields import header
from engine.errors import ServiceError
from engine.store import fastq
from engine.store.db import connection, db
from engine.store.models import CallRecord, Queue, Recording, RetentionSetting, User, now

log = logging.getLogger("switchdesk.recordings")

EVENTS = ("RECORD_START", "RECORD_STOP")
DEFAULT_DAYS = 90
DEFAULT_MIN_FREE = 500 * 1024 * 1024  # bytes the recordings' file system keeps free
CLEANUP_EVERY = 86400.0  # seconds between clean-ups of old call records and recordings
CLEANUP_FIRST = 60.0  # seconds after start for the first one
DISK_CHECK_EVERY = 5.0
WARN_EVERY = 60.0
ORPHAN_GRACE = 120  # seconds after its end before a recording without a call record (or the reverse) counts
FLAGS = ("user_record", "rec_inb_ext", "rec_out_ext", "rec_inb_int", "rec_out_int")


@dataclass
class Settings:
    root: Path | None = None
    min_free: int = DEFAULT_MIN_FREE
    days: int = DEFAULT_DAYS
    refused: int = 0  # recordings refused for want of disk since start
    _disk: tuple[float, int] = field(default=(0.0, -1))  # (checked at, free bytes)
    _warned: float = 0.0


settings = Settings()


def configure(root: str | os.PathLike[str] | None, *, min_free: int | None = None, days: int | None = None) -> None:
    """Where recordings go (created if missing); `min_free` bytes kept free; default retention in days.

    The path reaches FreeSWITCH's command line, so it may hold no spaces or quotes.
    """
    if root is None:
        settings.root = None
    else:
        path = Path(root).expanduser().resolve()
        if any(c in str(path) for c in " \t\n'\"{}"):
            raise ValueError(f"recordings folder {str(path)!r}: spaces, quotes and braces are not allowed")
        path.mkdir(parents=True, exist_ok=True)
        settings.root = path
    if min_free is not None:
        settings.min_free = max(0, min_free)
    if days is not None:
        if days < 1:
            raise ValueError("recording retention must be at least 1 day")
        settings.days = days
    settings._disk = (0.0, -1)


# -- deciding (on the call path) ---------------------------------------------------------------------------


def _user_flags(account_id: int, user_id: Any) -> dict[str, int]:
    if not isinstance(user_id, int):
        return {}
    rows = fastq.select("recordings.user_flags", lambda a, u: User.select(User.device_overrides).where(
        (User.account == a) & (User.id == u)), account_id, user_id)
    if not rows or not rows[0][0]:
        return {}
    try:
        overrides = json.loads(rows[0][0]) if isinstance(rows[0][0], str) else rows[0][0]
    except ValueError:
        return {}
    return {k: int(bool(overrides.get(k))) for k in FLAGS} if isinstance(overrides, dict) else {}


def _queue_records(account_id: int, queue_id: Any) -> bool:
    if not isinstance(queue_id, int):
        return False
    rows = fastq.select("recordings.queue_record", lambda a, q: Queue.select(Queue.record).where(
        (Queue.account == a) & (Queue.id == q)), account_id, queue_id)
    return bool(rows and rows[0][0])


def wanted(account_id: int, data: dict[str, Any]) -> bool:
    """Whether the call is recorded (README, Recordings: the precedence). Any rule that says yes wins."""
    kind = data.get("type")
    if kind == "queue" and _queue_records(account_id, data.get("queue_id")):
        return True
    src = _user_flags(account_id, data.get("src_user_id"))
    dst = _user_flags(account_id, data.get("dst_user_id"))
    if src.get("user_record") or dst.get("user_record"):
        return True
    from_inside = data.get("src_device_id") is not None
    if kind == "outbound":
        return bool(src.get("rec_out_ext"))
    if kind in ("inbound", "queue") and not from_inside:
        return bool(dst.get("rec_inb_ext"))
    if kind in ("internal", "queue"):
        return bool(src.get("rec_out_int") or dst.get("rec_inb_int"))
    return False


def disk_free() -> int:
    """Free bytes on the recordings' file system (checked at most every DISK_CHECK_EVERY s); -1 when unknown."""
    root = settings.root
    if root is None:
        return -1
    checked, free = settings._disk
    if time.monotonic() - checked > DISK_CHECK_EVERY:
        try:
            free = shutil.disk_usage(root).free
        except OSError:
            free = -1
        settings._disk = (time.monotonic(), free)
    return free


def room_for_one() -> bool:
    free = disk_free()
    if free < 0 or free >= settings.min_free:
        return True
    settings.refused += 1
    if time.monotonic() - settings._warned > WARN_EVERY:
        settings._warned = time.monotonic()
        log.warning("recordings: only %d MiB free in %s (at least %d MiB wanted): new recordings are refused",
                    free // 2**20, settings.root, settings.min_free // 2**20)
    return False


def call_connected(engine: Any, account_id: int, data: dict[str, Any], ts: int) -> None:
    """A call got connected: record it when the rules say so (in the caller's transaction; the command to
    FreeSWITCH goes out from a greenlet)."""
    root = settings.root
    call_id = data.get("call_id")
    if root is None or not call_id or not wanted(account_id, data):
        return
    if not room_for_one():
        return
    rel = f"{account_id}/{time.strftime('%Y-%m-%d', time.gmtime(ts))}/{uuid.uuid4().hex}.wav"
    user_id = data.get("dst_user_id") if isinstance(data.get("dst_user_id"), int) else data.get("src_user_id")
    values = (account_id, call_id, call_id, rel, ts, _int_or_zero(data.get("queue_id")), _int_or_zero(user_id),
              str(data.get("cid_num") or "")[:64], str(data.get("dst_num") or "")[:64])
    if fastq.execute("recordings.create", _insert, *values) != 1:
        return  # the call is recorded already
    group = getattr(engine, "group", None)
    if group is not None:
        group.spawn(_start, engine, call_id, str(root / rel), rel)


def _int_or_zero(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _insert(a, c, leg, p, ts, q, u, sn, dn) -> peewee.Query:
    return Recording.insert({
        Recording.account: a, Recording.call_id: c, Recording.leg_uuid: leg, Recording.path: p,
        Recording.started_at: ts, Recording.queue_id: peewee.fn.NULLIF(q, 0), Recording.user_id: peewee.fn.NULLIF(u, 0),
        Recording.src_num: peewee.fn.NULLIF(sn, ""), Recording.dst_num: peewee.fn.NULLIF(dn, ""),
    }).on_conflict_ignore()


def _make_folder(path: Path) -> None:
    """The day's folder, made by us (setgid, group-writable) so that both FreeSWITCH's user and ours can
    write and delete in it when they differ (README, Recordings); FreeSWITCH would make it 0755, its own."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        try:
            path.chmod(0o2770)
        except OSError:
            pass


def _start(engine: Any, leg_uuid: str, path: str, rel: str) -> None:
    try:
        gevent.get_hub().threadpool.spawn(_make_folder, Path(path).parent).get()
    except OSError as exc:
        log.warning("recordings: cannot make the folder of %s: %s", rel, exc)
    try:
        client = engine.commands.require_client()
        reply = client.api(f"uuid_record {leg_uuid} start {path}", timeout=10, check=False)
    except Exception as exc:  # not connected, timeout: nothing is being recorded
        reply = f"-ERR {exc}"
    host = boxes.name()  # the box whose folder holds the file (engine.boxes: downloads elsewhere fetch it here)
    with connection():
        if reply.strip().startswith("+OK"):
            Recording.update(fs_host=host).where(Recording.path == rel).execute()
        else:
            log.warning("recordings: uuid_record for call %s failed: %s", leg_uuid, reply.strip()[:200])
            Recording.update(state="failed", ended_at=now()).where(
                (Recording.path == rel) & (Recording.state == "starting")).execute()


# -- FreeSWITCH's record events -------------------------------------------------------------------------


def _relative(path: str | None) -> str | None:
    """Our relative path for a Record-File-Path inside the recordings folder, else None."""
    root = settings.root
    if root is None or not path:
        return None
    try:
        rel = Path(path).resolve().relative_to(root)
    except (ValueError, OSError):
        return None
    return rel.as_posix()


class RecordEvents:
    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.finished = 0  # recordings completed (tests wait on it)

    def on_start(self, event: Any) -> None:
        rel = _relative(header(event, "Record-File-Path"))
        if rel is None:
            return
        with connection():
            fastq.execute("recordings.started", lambda p: Recording.update({Recording.state: "recording"}).where(
                (Recording.path == p) & (Recording.state == "starting")), rel)

    def on_stop(self, event: Any) -> None:
        rel = _relative(header(event, "Record-File-Path"))
        if rel is None:
            return
        ms = header(event, "variable_record_ms")
        self.engine.group.spawn(self._finish, rel, int(ms) if ms and ms.isdigit() else None)

    def _finish(self, rel: str, ms: int | None) -> None:
        finish(rel, ms)
        self.finished += 1

    def reconcile(self) -> int:
        """Finish the recordings whose RECORD_STOP we could not hear; how many."""
        client = self.engine.commands.require_client()
        host = boxes.name()
        reply = client.api("show channels as json", timeout=30)
        try:
            parsed = json.loads(reply)
            live = {row.get("uuid") for row in (parsed.get("rows") or []) if isinstance(row, dict)}
        except (ValueError, AttributeError):
            return 0
        done = 0
        with connection():
            open_ones = list(Recording.select(Recording.path, Recording.leg_uuid).where(
                Recording.state.in_(["starting", "recording"]) & Recording.fs_host.in_([host, ""])).tuples())
        for rel, leg in open_ones:
            if leg not in live:
                finish(rel, None, recovered=True)
                done += 1
        return done


def _probe(path: Path) -> tuple[int, int | None] | None:
    """(size, duration in ms) of a WAV file; None when it does not exist. Runs in the threadpool."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    try:
        with wave.open(str(path), "rb") as wav:
            rate = wav.getframerate()
            duration = int(wav.getnframes() * 1000 / rate) if rate else None
    except (wave.Error, EOFError, OSError):
        duration = None
    return size, duration


def finish(rel: str, ms: int | None, *, recovered: bool = False) -> None:
    """Mark the recording complete with its size and duration (or failed when FreeSWITCH left no file)."""
    root = settings.root
    if root is None:
        return
    probe = gevent.get_hub().threadpool.spawn(_probe, root / rel).get()
    with connection():
        if probe is None or probe[0] <= 44:  # no file, or a WAV header without a sample
            Recording.update(state="failed", ended_at=now()).where(
                (Recording.path == rel) & Recording.state.in_(["starting", "recording"])).execute()
            if recovered:
                log.info("recordings: %s has no audio after a restart; marked failed", rel)
            return
        size, duration = probe
        Recording.update(state="complete", ended_at=now(), size=size, duration_ms=ms if ms is not None else duration,
                         paused=False).where(
            (Recording.path == rel) & Recording.state.in_(["starting", "recording"])).execute()


# -- control during a call --------------------------------------------------------------------------------


def set_paused(engine: Any, account_id: int, call_id: str, paused: bool) -> Recording:
    """Pause (mask: silence is written, e.g. while a card number is read out) or resume the call's recording."""
    recording = Recording.get_or_none((Recording.account == account_id) & (Recording.call_id == call_id))
    if recording is None or recording.state not in ("starting", "recording"):
        raise ServiceError(404, f"No recording in progress for call {call_id}")
    root = settings.root
    if root is None or engine is None:
        raise ServiceError(503, "FreeSWITCH is not connected")
    try:
        client = engine.commands.require_client()
        reply = client.api(f"uuid_record {recording.leg_uuid} {'mask' if paused else 'unmask'} {root / recording.path}",
                           timeout=10, check=False)
    except Exception:
        raise ServiceError(503, "FreeSWITCH is not connected") from None
    if not reply.strip().startswith("+OK"):
        raise ServiceError(409, f"FreeSWITCH refused: {reply.strip()[:200]}")
    Recording.update(paused=paused).where(Recording.id == recording.id).execute()
    recording.paused = paused
    return recording


# -- files ------------------------------------------------------------------------------------------------


def resolve(recording: Recording, root: Path | None = None) -> Path:
    """The recording's file, never outside the recordings folder (`root`, default this process's; 404
    otherwise)."""
    root = root if root is not None else settings.root
    if root is None:
        raise ServiceError(404, f"Recording {recording.id} not found")
    path = (root / recording.path).resolve()
    if not path.is_relative_to(root) or path == root:
        log.warning("recordings: row %s points outside the folder; refused", recording.id)
        raise ServiceError(404, f"Recording {recording.id} not found")
    return path


def delete(account_id: int, recording_id: int) -> None:
    """The row goes in one transaction, then the file (a missing file is no error)."""
    with db.atomic():
        recording = Recording.owned(account_id, recording_id)
        if recording.state in ("starting", "recording"):
            raise ServiceError(409, "the recording is still being written")
        path = resolve(recording)
        Recording.delete().where(Recording.id == recording.id).execute()
    _unlink(path)


def _unlink(path: Path) -> None:
    def run() -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("recordings: could not delete %s: %s", path, exc)
    gevent.get_hub().threadpool.spawn(run).get()


def purge(batch: int = 500, host: str | None = None) -> int:
    """Delete finished recordings older than their account's retention (rows, then files); how many.

    With `host`, only the recordings that box holds (DESIGN.md: each box keeps its own files; several
    boxes on one database each delete their own)."""
    stamp = now()
    custom = dict(RetentionSetting.select(RetentionSetting.account, RetentionSetting.recording_days)
                  .where(RetentionSetting.recording_days.is_null(False)).tuples())
    groups: list[tuple[Any, int]] = [(Recording.account == a, d) for a, d in custom.items()]
    groups.append((Recording.account.not_in(list(custom)) if custom else Recording.id.is_null(False), settings.days))
    total = 0
    for condition, days in groups:
        cutoff = stamp - days * 86400
        if host is not None:
            condition = condition & Recording.fs_host.in_([host, ""])
        while True:
            rows = list(Recording.select().where(condition & (Recording.started_at < cutoff)
                                                 & Recording.state.in_(["complete", "failed"])).limit(batch))
            if not rows:
                break
            Recording.delete().where(Recording.id.in_([r.id for r in rows])).execute()
            for row in rows:
                try:
                    _unlink(resolve(row))
                except ServiceError:
                    pass
            total += len(rows)
    return total


def cleanup(host: str | None = None) -> tuple[int, int]:
    """The daily clean-up: old call records and old recordings (those of FreeSWITCH box `host`)."""
    with connection():
        return records.purge(), purge(host=host)


# -- reports ----------------------------------------------------------------------------------------------


def orphans(account_id: int) -> dict[str, int]:
    """`/api/status`: complete recordings whose call has no record, and call records whose recording
    did not complete (failed, or never finished), each counted once the call ended ORPHAN_GRACE s ago."""
    cutoff = now() - ORPHAN_GRACE
    # compiled once (engine.store.fastq): /api/status is polled, and building these two joins cost more than
    # running them
    ((no_record,),) = fastq.select("recordings.orphans.no_record", lambda a, c: (
        Recording.select(peewee.fn.COUNT(Recording.id))
        .join(CallRecord, peewee.JOIN.LEFT_OUTER, on=(CallRecord.call_id == Recording.call_id))
        .where((Recording.account == a) & (Recording.state == "complete")
               & (Recording.ended_at < c) & CallRecord.id.is_null())), account_id, cutoff)
    ((no_recording,),) = fastq.select("recordings.orphans.no_recording", lambda a, c: (
        CallRecord.select(peewee.fn.COUNT(CallRecord.id))
        .join(Recording, on=(Recording.call_id == CallRecord.call_id))
        .where((CallRecord.account == a) & (CallRecord.end_ts < c) & (Recording.state != "complete"))),
        account_id, cutoff)
    return {"recordings_without_call_record": no_record or 0, "call_records_without_recording": no_recording or 0}


def usage(account_ids: list[int] | None = None) -> dict[str, int]:
    """Bytes held by complete recordings, how many, free bytes on their file system, refusals since start."""
    query = Recording.select(peewee.fn.COALESCE(peewee.fn.SUM(Recording.size), 0), peewee.fn.COUNT(Recording.id)) \
        .where(Recording.state == "complete")
    if account_ids is not None:
        query = query.where(Recording.account.in_(account_ids))
    used, count = query.tuples().get()
    return {"bytes": int(used or 0), "count": int(count or 0), "free": disk_free(), "refused": settings.refused}


# -- the plugin -------------------------------------------------------------------------------------------


def _cleanup_loop(engine: Any) -> None:
    gevent.sleep(CLEANUP_FIRST)
    while True:
        try:
            calls, files = cleanup(boxes.name())  # this box's files only (engine.boxes)
            if calls or files:
                log.info("clean-up: %d call record(s) and %d recording(s) past their retention deleted", calls, files)
        except Exception:
            log.exception("clean-up of call records and recordings failed")
        gevent.sleep(CLEANUP_EVERY)


def attach(engine: Any) -> RecordEvents:
    plugin = RecordEvents(engine)
    engine.recordings = plugin
    engine.events.on_event("RECORD_START", plugin.on_start)
    engine.events.on_event("RECORD_STOP", plugin.on_stop)

    def after_connect(_client: Any) -> None:
        def run() -> None:
            while not engine.commands.wait_connected(1.0):
                if not engine.events.connected:
                    return
            try:
                done = plugin.reconcile()
                if done:
                    log.info("recordings: %d recording(s) finished after a reconnect", done)
            except Exception:
                log.exception("recordings: reconciliation after a reconnect failed")
        engine.group.spawn(run)

    engine.events.on_connect(after_connect)
    cleaner = engine.group.spawn(_cleanup_loop, engine)
    engine.on_stop(cleaner.kill)
    return plugin
