"""Reconstructing `call:end` after a (re)connect: ESL has no replay, so the legs we recorded that
FreeSWITCH no longer lists ended while we could not hear.

How a missed end is found (the channel list on the command connection, a
grace period, the recorded legs of this host) and how long ended legs are
remembered change for reasons of their own, apart from how live events are
turned into call events (`callevents`, which calls in here).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent

from engine.calls import legs, records
from engine.calls.call_fields import payload
from engine.esl.errors import ESLError
from engine.events.outbox import emit
from engine.store.db import connection, db
from engine.store.models import ActiveCall, now

log = logging.getLogger("switchdesk.callevents")

KEEP_ENDED = 3600  # seconds an ended leg's row is kept so a repeated event changes nothing
RECONCILE_GRACE = 2.0  # seconds between the channel snapshot and ending: queued events finish first
RECONCILE_ATTEMPTS, RECONCILE_RETRY = 3, 5.0


def reconcile_when_connected(engine: Any, reconcile: Callable[[], int]) -> None:
    """Run `reconcile` once the command connection is up; give up when the event connection drops
    again (its next connect asks anew)."""
    for attempt in range(RECONCILE_ATTEMPTS):
        while not engine.commands.wait_connected(1.0):
            if not engine.events.connected:
                return
        try:
            reconcile()
            return
        except ESLError as exc:
            log.warning("call reconciliation attempt %d failed: %s", attempt + 1, exc)
        except Exception:
            log.exception("call reconciliation failed")
            return
        gevent.sleep(RECONCILE_RETRY)


def end_vanished_legs(client: Any, grace: float) -> int | None:
    """End the recorded legs FreeSWITCH no longer has; how many were ended, None when the channel
    list was unreadable (nothing reconstructed).

    The channel list is read on the command connection (`client`) outside any
    transaction; only legs recorded before the list was asked for are
    candidates, and a leg whose real CHANNEL_HANGUP_COMPLETE arrives meanwhile
    ends normally.
    """
    asked_ms = int(time.time() * 1000)
    host = client.api("hostname", timeout=10).strip()
    reply = client.api("show channels as json", timeout=30)
    try:
        parsed = json.loads(reply)
        rows = (parsed.get("rows") or []) if isinstance(parsed, dict) else None
        if rows is None or not isinstance(rows, list):
            raise ValueError("no rows")
        live = {row.get("uuid") for row in rows if isinstance(row, dict)}
    except ValueError:
        log.warning("unreadable 'show channels as json' reply; nothing reconstructed: %r", reply[:200])
        return None
    if grace:
        gevent.sleep(grace)
    ended = 0
    with connection():
        candidates = list(ActiveCall.select().where(
            ActiveCall.ended_at.is_null() & (ActiveCall.seen_ms < asked_ms)
            & ActiveCall.fs_host.in_([host, ""])
        ).order_by(ActiveCall.seen_ms))
        for row in candidates:
            if row.uuid in live:
                continue
            stamp = now()
            with db.atomic():
                done = ActiveCall.update(ended_at=stamp).where(
                    (ActiveCall.uuid == row.uuid) & ActiveCall.ended_at.is_null()).execute()
                if done:
                    data = payload(row.data or {}, stamp, end=True)
                    data["reconstructed"] = True
                    emit(row.account_id, "call:end", data, ts=stamp)
                    records.leg_ended(row.account_id, row.uuid, data, None, row.seen_ms, stamp)
                    ended += done
            if done:
                legs.ended(row.uuid)  # after the commit: the kept copy is never ahead of the row
        purge_ended()
        legs.forget_ended()
    return ended


def purge_ended() -> int:
    """Forget legs that ended more than KEEP_ENDED seconds ago."""
    return ActiveCall.delete().where(ActiveCall.ended_at < now() - KEEP_ENDED).execute()
