"""Call events: `call:ring`, `call:answer`, `call:start` (queue calls) and `call:end` from FreeSWITCH.

An Engine plugin (engine/engine.py, PLUGIN_MODULES). Each FreeSWITCH leg is
one `id`; the legs of one call share `call_id`, the Unique-ID of its first
leg. What each field is derived from is in the README ("Call events"); in
short: the channel variables our directory and dialplan put on every call we
route (`switchdesk_*`, `user_context`), mod_callcenter's own variables
(`cc_queue`, `cc_agent`, `cc_member_session_uuid`, `cc_cause`, ...) and
FreeSWITCH's timing variables on CHANNEL_HANGUP_COMPLETE (`*msec`).

Per leg, in this order and at most once each: `call:ring` (an inbound leg
when it is created, an outbound one at its first 180/183; also just before
`call:answer` for a leg answered without one), `call:answer`, `call:start`
(the caller's leg joining a queue), `call:end` (CHANNEL_HANGUP_COMPLETE).
Events may arrive in any order and twice: the `ActiveCall` row of the leg
records which events went out, and a late or repeated event emits nothing.
Legs of no account (no domain of ours) are ignored.

ESL has no replay (DESIGN.md, Events across outages). After every (re)connect
of the event connection — which includes a restart of switchdesk, since the
rows are in the database — the legs we recorded that `show channels` no
longer lists get their `call:end` with `"reconstructed": true` (timings and
cause unknown, so null). Rings and answers that happened while we could not
hear are not recovered.

This module is the plugin: which events are due for a leg and when, kept
in the `ActiveCall` rows, read and written with SQL compiled once (fastq;
DESIGN.md, "The hot path is compiled and cached"). The fields themselves are built in `call_fields`;
the reconstruction after a reconnect is `reconcile`.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import gevent.lock
import peewee

from engine.calls import legs, recordings, records
from engine.calls.call_fields import account_of, end_fields, event_ts, header, leg_fields, payload, queue_end_fields
from engine.calls.reconcile import RECONCILE_GRACE, end_vanished_legs, purge_ended, reconcile_when_connected
from engine.directory import views
from engine.events.outbox import emit
from engine.store import fastq
from engine.store.db import connection, db, is_sqlite
from engine.store.models import ActiveCall, now

log = logging.getLogger("switchdesk.callevents")

EVENTS = (
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_HOLD",
    "CHANNEL_UNHOLD",
)

# Feature codes (check-in `***<code>`) are not calls anyone wants reported, and the code is a secret.
FEATURE_PREFIX = "*"
PURGE_EVERY = 500  # ended legs between purges of old rows


class CallEvents:
    """Turns channel and callcenter events into call events; one instance per Engine."""

    def __init__(self, engine: Any, *, grace: float = RECONCILE_GRACE) -> None:
        self.engine = engine
        self.grace = grace
        self.reconciles = 0  # completed reconciliations (tests wait on it)
        self._ended = 0
        self._reconcile_lock = gevent.lock.Semaphore()
        legs.forget_all()  # a new engine (a test's, a restarted one) reads its legs from the database first

    # -- event handlers (run in event order on the ESL dispatcher; short DB work only) --

    def on_channel(self, event: Any) -> None:
        name = event.get("Event-Name")
        if name == "CHANNEL_CREATE":
            kind = "ring" if header(event, "Call-Direction") == "inbound" else "record"
        elif name in ("CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA"):
            kind = "ring"
        elif name == "CHANNEL_ANSWER":
            kind = "answer"
        elif name == "CHANNEL_HANGUP_COMPLETE":
            kind = "end"
        elif name == "CHANNEL_BRIDGE":
            kind = "update"
        elif name in ("CHANNEL_HOLD", "CHANNEL_UNHOLD"):  # the live calls' `held` state, no call event
            self.handle(event, "update", held=name == "CHANNEL_HOLD")
            return
        else:
            return
        self.handle(event, kind)

    def on_callcenter(self, event: Any) -> None:
        action = header(event, "CC-Action")
        if action == "member-queue-start":
            self.handle(event, "start")
        elif action == "member-queue-end":
            self.handle(event, "update", queue_end=True)

    def handle(self, event: Any, kind: str, *, queue_end: bool = False, held: bool | None = None) -> None:
        """Record what `event` says about its leg and emit the call events that are due."""
        uid = header(event, "Unique-ID")
        if not uid:
            return
        try:
            self._handle(event, uid, kind, queue_end, held)
        except BaseException:
            legs.forget(uid)  # its copy may be ahead of a row that was rolled back
            raise

    def _handle(self, event: Any, uid: str, kind: str, queue_end: bool, held: bool | None) -> None:
        with connection():
            leg = _leg(uid)
            if leg is None:
                if kind == "update" or (header(event, "Caller-Destination-Number") or "").startswith(FEATURE_PREFIX):
                    return
                account = account_of(event)
                if account is None:
                    return  # not a call of ours
                prior: dict[str, Any] = {}
            else:
                if leg.ended:
                    return  # a late or repeated event of a leg that has ended: nothing is due
                account = views.account(leg.account_id)
                if account is None:
                    return
                prior = leg.data or {}
            data = leg_fields(event, account, prior)
            if queue_end:
                data.update(queue_end_fields(event))
            if kind == "end":
                data.update(end_fields(event, data))
            ts = event_ts(event)
            if held is not None:
                data["held"] = held
            if kind == "answer" and not data.get("answer_ts"):
                data["answer_ts"] = ts  # for the active calls (engine.calls.supervision); not an event field
            with _atomic():
                if leg is None:
                    leg = self._create(event, uid, account.id, data, kind)
                    changed = False
                else:
                    changed = data != prior or data["call_id"] != leg.call_id
                # the changed fields ride on the event's conditional UPDATE when there is one
                if self._emit_due(leg, kind, data, ts, event, changed) and changed:
                    _update_data(uid, data)
                if changed:
                    leg.data, leg.call_id = data, data["call_id"]
            if kind == "end":
                self._ended += 1
                if self._ended % PURGE_EVERY == 0:
                    purge_ended()
                    legs.forget_ended()

    @staticmethod
    def _create(event: Any, uid: str, account_id: int, data: dict[str, Any], kind: str) -> legs.Leg:
        """The leg's row, with the flag of what `kind` emits first already set (`_once` then knows it was
        this insert that set it): one statement where a new leg took two or three."""
        fs_host = (header(event, "FreeSWITCH-Hostname") or "")[:255]
        seen_ms = int(time.time() * 1000)
        flags = _FIRST.get(kind, ())
        # INSERT ... ON CONFLICT DO NOTHING: no savepoint needed to survive a row recorded meanwhile
        if fastq.execute("callevents.create", lambda u, a, c, h, s, d, r, an, st: ActiveCall.insert({
                ActiveCall.uuid: u, ActiveCall.account: a, ActiveCall.call_id: c, ActiveCall.fs_host: h,
                ActiveCall.seen_ms: s, ActiveCall.data: peewee.Value(d, converter=False),
                ActiveCall.rang: peewee.Value(r) == 1, ActiveCall.answered: peewee.Value(an) == 1,
                ActiveCall.started: peewee.Value(st) == 1}).on_conflict_ignore(),
                uid, account_id, data["call_id"], fs_host, seen_ms, _json(data),
                int("rang" in flags), int("answered" in flags), int("started" in flags)) == 1:
            leg = legs.Leg(uid, account_id, data["call_id"], seen_ms, data)
            leg.fresh = set(flags)
            return legs.put(leg)
        # recorded meanwhile (another engine on the same database)
        ActiveCall.update(data=data).where(ActiveCall.uuid == uid).execute()
        return legs.put(_from_row(ActiveCall.get(ActiveCall.uuid == uid)))

    def _emit_due(self, leg: legs.Leg, kind: str, data: dict[str, Any], ts: int, event: Any = None,
                  changed: bool = False) -> bool:
        """Emit what `kind` calls for, each at most once per leg (conditional updates decide).

        `changed`: the leg's fields changed and are written by the first conditional UPDATE that sets
        something (one statement instead of two). Returns whether they still have to be written.
        """
        uid, account_id = leg.uuid, leg.account_id
        carry = data if changed else None
        if kind == "ring":
            done, wrote = _once(leg, "rang", unanswered=True, data=carry)
            if done:
                emit(account_id, "call:ring", payload(data, ts), ts=ts)
            return not wrote
        if kind == "answer":
            done, wrote = _once(leg, "rang", data=carry)
            if done:
                emit(account_id, "call:ring", payload(data, ts), ts=ts)
            done, wrote_now = _once(leg, "answered", data=None if wrote else carry)
            wrote = wrote or wrote_now
            if done:
                emit(account_id, "call:answer", payload(data, ts), ts=ts)
                if uid != data.get("call_id"):  # a further leg answered: the call is connected
                    recordings.call_connected(self.engine, account_id, data, ts)
            return not wrote
        if kind == "start":
            done, wrote = _once(leg, "started", data=carry)
            if done:
                emit(account_id, "call:start", payload(data, ts), ts=ts)
            return not wrote
        if kind == "end":
            if carry is None:
                done = fastq.execute("callevents.end", lambda u, t: ActiveCall.update(
                    {ActiveCall.ended_at: t}).where((ActiveCall.uuid == u) & ActiveCall.ended_at.is_null()),
                    uid, now()) == 1
            else:
                done = fastq.execute("callevents.end_data", lambda u, t, d, c: ActiveCall.update(
                    {ActiveCall.ended_at: t, ActiveCall.data: peewee.Value(d, converter=False), ActiveCall.call_id: c})
                    .where((ActiveCall.uuid == u) & ActiveCall.ended_at.is_null()),
                    uid, now(), _json(carry), carry["call_id"]) == 1
            leg.ended = True  # by this event or, if not, already
            if done:
                body = payload(data, ts, end=True)
                emit(account_id, "call:end", body, ts=ts)
                records.leg_ended(account_id, uid, body, event, leg.seen_ms, ts)
            return not done
        return True

    # -- after a (re)connect --

    def request_reconcile(self) -> None:
        self.engine.group.spawn(reconcile_when_connected, self.engine, self.reconcile)

    def reconcile(self) -> int:
        """End the recorded legs FreeSWITCH no longer has (`reconcile.end_vanished_legs`); returns how many
        were ended."""
        with self._reconcile_lock:
            client = self.engine.commands.require_client()
            ended = end_vanished_legs(client, self.grace)
            if ended is None:
                return 0
            self.reconciles += 1
            if ended:
                log.info("reconstructed call:end for %d leg(s) that ended while we could not hear", ended)
            return ended


# -- the leg's row, with SQL compiled once (fastq), and its copy in memory (legs) --

_json = fastq.json_text  # the leg's fields: no floats, the same text as the field's json.dumps


def _leg(uid: str) -> legs.Leg | None:
    """The leg as last written: from memory, else from its row (then kept)."""
    leg = legs.get(uid)
    if leg is not None:
        return leg
    rows = fastq.select("callevents.row", lambda u: ActiveCall.select().where(ActiveCall.uuid == u), uid)
    return legs.put(_from_row(fastq.make(ActiveCall, rows[0]))) if rows else None


def _from_row(row: ActiveCall) -> legs.Leg:
    return legs.Leg(row.uuid, row.account_id, row.call_id, row.seen_ms, row.data or {}, rang=bool(row.rang),
                    answered=bool(row.answered), started=bool(row.started), ended=row.ended_at is not None)


def _update_data(uid: str, data: dict[str, Any]) -> None:
    fastq.execute("callevents.update", lambda u, d, c: ActiveCall.update(
        {ActiveCall.data: peewee.Value(d, converter=False), ActiveCall.call_id: c}).where(ActiveCall.uuid == u),
        uid, _json(data), data["call_id"])


_FLAGS = {"rang": ActiveCall.rang, "answered": ActiveCall.answered, "started": ActiveCall.started}
# The flags `_emit_due` sets first for a new leg, by kind: set by the row's INSERT itself.
_FIRST = {"ring": ("rang",), "answer": ("rang", "answered"), "start": ("started",)}


def _once(leg: legs.Leg, flag: str, *, unanswered: bool = False,
          data: dict[str, Any] | None = None) -> tuple[bool, bool]:
    """Set `flag` on the live leg unless it was set: (True only for the one caller that set it, whether
    `data` — the leg's changed fields, if given — was written along with it).

    A flag known set (or, with `unanswered`, a leg known answered) changes nothing in the database: no
    statement. Otherwise the conditional UPDATE decides, and the copy learns what the row now holds.
    """
    if flag in leg.fresh:  # set by the INSERT of this event: this caller set it
        leg.fresh.discard(flag)
        setattr(leg, flag, True)
        return True, False
    if getattr(leg, flag) or (unanswered and leg.answered):
        return False, False

    def cond(u: str) -> peewee.Expression:
        field = _FLAGS[flag]
        where = (ActiveCall.uuid == u) & ActiveCall.ended_at.is_null() & (field == False)  # noqa: E712 - SQL
        if unanswered:
            where &= ActiveCall.answered == False  # noqa: E712
        return where

    if data is None:
        done = fastq.execute(f"callevents.once:{flag}:{unanswered}", lambda u: ActiveCall.update(
            {_FLAGS[flag]: True}).where(cond(u)), leg.uuid) == 1
    else:
        done = fastq.execute(f"callevents.once_data:{flag}:{unanswered}", lambda u, d, c: ActiveCall.update(
            {_FLAGS[flag]: True, ActiveCall.data: peewee.Value(d, converter=False), ActiveCall.call_id: c})
            .where(cond(u)), leg.uuid, _json(data), data["call_id"]) == 1
    if done:
        setattr(leg, flag, True)
    else:  # set before (another engine), answered, or ended meanwhile: read the row again next time
        legs.forget(leg.uuid)
    return done, done and data is not None


_SAVEPOINT = '"callevent"'


@contextlib.contextmanager
def _atomic() -> Iterator[None]:
    """The event's writes all or none: its own transaction, or inside a batch a savepoint.

    In a batch (SQLite) the savepoint is two statements on the driver's connection: peewee's nested
    `atomic()` names each savepoint with a new UUID and goes through its query wrapper, which cost about as
    much as the commit the batch saves. Savepoints of one name nest in SQLite (RELEASE takes the newest).
    """
    if not is_sqlite() or not db.obj.in_transaction():
        with db.atomic():
            yield
        return
    raw = db.obj.connection()
    raw.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        yield
    except BaseException:
        raw.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        raw.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
        raise
    raw.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")


@contextlib.contextmanager
def batch() -> Iterator[None]:
    """The channel events waiting on the dispatcher, handled in one transaction (engine.esl.dispatch, "Batches").

    Each event still writes its leg and emits its call events inside its own savepoint (`handle`'s
    `db.atomic()`), so a failing event changes nothing and the others commit; the outbox rows commit with
    the state they report, as before, and the deliverer and statistics hear of them after the one commit.
    SQLite only: `BEGIN IMMEDIATE` takes the write lock at once (a deferred transaction that read first
    could not write after another process's commit), and one commit per batch instead of one per event is
    what saves. On PostgreSQL a savepoint costs the round trips a transaction does, so each event keeps
    its own transaction there.
    """
    if not is_sqlite():
        yield
        return
    with connection():
        try:
            with db.atomic(lock_type="IMMEDIATE"):
                yield
        except BaseException:
            legs.forget_all()  # rolled back: no kept leg may be ahead of its row
            raise


def attach(engine: Any) -> CallEvents:
    """Register the handlers on the engine's event connection and reconcile after each (re)connect."""
    plugin = CallEvents(engine)
    engine.callevents = plugin
    for name in EVENTS:
        engine.events.on_event(name, plugin.on_channel)
    engine.events.on_event("callcenter::info", plugin.on_callcenter)
    # Only the channel events: their handlers (this plugin, the dialer's, the metrics' counter) write inside
    # savepoints and send no change notice (which must wait for a commit); callcenter::info's do.
    # SQLite: the dispatcher keeps its connection while events keep coming, instead of taking one from the
    # pool and giving it back for every batch (a local file: nothing to go stale). On PostgreSQL a connection
    # held through a busy spell would outlive a database restart, so each batch takes its own.
    engine.events.batch_events(batch, EVENTS, session=connection if is_sqlite() else None)
    engine.events.on_connect(lambda _client: plugin.request_reconcile())
    return plugin
