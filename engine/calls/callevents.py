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
in the `ActiveCall` rows. The fields themselves are built in `call_fields`;
the reconstruction after a reconnect is `reconcile`.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import gevent.lock
import peewee

from engine.calls.call_fields import account_of, end_fields, event_ts, header, leg_fields, payload, queue_end_fields
from engine.calls.reconcile import RECONCILE_GRACE, end_vanished_legs, purge_ended, reconcile_when_connected
from engine.events.outbox import emit
from engine.store.db import connection, db
from engine.store.models import Account, ActiveCall, now

log = logging.getLogger("switchdesk.callevents")

EVENTS = (
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
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
        else:
            return
        self.handle(event, kind)

    def on_callcenter(self, event: Any) -> None:
        action = header(event, "CC-Action")
        if action == "member-queue-start":
            self.handle(event, "start")
        elif action == "member-queue-end":
            self.handle(event, "update", queue_end=True)

    def handle(self, event: Any, kind: str, *, queue_end: bool = False) -> None:
        """Record what `event` says about its leg and emit the call events that are due."""
        uid = header(event, "Unique-ID")
        if not uid:
            return
        with connection():
            row = ActiveCall.get_or_none(ActiveCall.uuid == uid)
            if row is None:
                if kind == "update" or (header(event, "Caller-Destination-Number") or "").startswith(FEATURE_PREFIX):
                    return
                account = account_of(event)
                if account is None:
                    return  # not a call of ours
                prior: dict[str, Any] = {}
            else:
                if row.ended_at is not None:
                    return  # a late or repeated event of a leg that has ended: nothing is due
                account = Account.get_or_none(Account.id == row.account_id)
                if account is None:
                    return
                prior = row.data or {}
            data = leg_fields(event, account, prior)
            if queue_end:
                data.update(queue_end_fields(event))
            if kind == "end":
                data.update(end_fields(event, data))
            ts = event_ts(event)
            with db.atomic():
                if row is None:
                    row = self._create(event, uid, account.id, data)
                elif data != prior or data["call_id"] != row.call_id:
                    ActiveCall.update(data=data, call_id=data["call_id"]).where(ActiveCall.uuid == uid).execute()
                self._emit_due(row, kind, data, ts)
            if kind == "end":
                self._ended += 1
                if self._ended % PURGE_EVERY == 0:
                    purge_ended()

    @staticmethod
    def _create(event: Any, uid: str, account_id: int, data: dict[str, Any]) -> ActiveCall:
        try:
            with db.atomic():
                return ActiveCall.create(
                    uuid=uid, account=account_id, call_id=data["call_id"],
                    fs_host=(header(event, "FreeSWITCH-Hostname") or "")[:255],
                    seen_ms=int(time.time() * 1000), data=data,
                )
        except peewee.IntegrityError:  # recorded meanwhile (another engine on the same database)
            ActiveCall.update(data=data).where(ActiveCall.uuid == uid).execute()
            return ActiveCall.get(ActiveCall.uuid == uid)

    def _emit_due(self, row: ActiveCall, kind: str, data: dict[str, Any], ts: int) -> None:
        """Emit what `kind` calls for, each at most once per leg (conditional updates decide)."""
        live = (ActiveCall.uuid == row.uuid) & ActiveCall.ended_at.is_null()
        account_id = row.account_id

        def once(flag: peewee.Field, extra: peewee.Expression | None = None) -> bool:
            cond = live & (flag == False)  # noqa: E712 - SQL, not Python
            if extra is not None:
                cond &= extra
            return ActiveCall.update({flag: True}).where(cond).execute() == 1

        if kind == "ring" and once(ActiveCall.rang, ActiveCall.answered == False):  # noqa: E712
            emit(account_id, "call:ring", payload(data, ts), ts=ts)
        elif kind == "answer":
            if once(ActiveCall.rang):
                emit(account_id, "call:ring", payload(data, ts), ts=ts)
            if once(ActiveCall.answered):
                emit(account_id, "call:answer", payload(data, ts), ts=ts)
        elif kind == "start" and once(ActiveCall.started):
            emit(account_id, "call:start", payload(data, ts), ts=ts)
        elif kind == "end" and ActiveCall.update(ended_at=now()).where(live).execute() == 1:
            emit(account_id, "call:end", payload(data, ts, end=True), ts=ts)

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


def attach(engine: Any) -> CallEvents:
    """Register the handlers on the engine's event connection and reconcile after each (re)connect."""
    plugin = CallEvents(engine)
    engine.callevents = plugin
    for name in EVENTS:
        engine.events.on_event(name, plugin.on_channel)
    engine.events.on_event("callcenter::info", plugin.on_callcenter)
    engine.events.on_connect(lambda _client: plugin.request_reconcile())
    return plugin
