"""Live statistics: per queue and per agent, and their Server-Sent Events stream (permission `stats`).

The figures are engine.stats.snapshot's (what FreeSWITCH reported, kept in the database); the stream
sends a `snapshot` event first, then a `queue` or `agent` event for each queue or agent whose figures
changed, as soon as a change is committed (engine.stats.hub) and at least every REFRESH seconds (figures
written by another process: another box on PostgreSQL). It holds a database connection only while it
reads; idle it waits on the hub. Streams are bounded: MAX_STREAMS in all, MAX_STREAMS_PER_ACCOUNT per
account (429 beyond).
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import gevent
from flask import Blueprint, Response, current_app
from pydantic import Field

from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import IdList, Schema, endpoint
from engine.callcenter import queues as queue_service
from engine.stats import hub, snapshot
from engine.store.db import connection
from engine.store.models import Account, now

bp = Blueprint("stats", __name__, url_prefix="/api")

MAX_STREAMS = 200
MAX_STREAMS_PER_ACCOUNT = 20
REFRESH = 5.0  # seconds: look again even without a change heard here (other boxes, ticking times)
HEARTBEAT = 15.0  # an SSE comment at least this often keeps proxies and the client's watchdog content
COALESCE = 0.05  # a burst of changes (one call is several events) becomes one look
RETRY_MS = 2000  # the client's reconnection delay (EventSource `retry:`)
# A stream ends after this long (app config STATS_STREAM_SECONDS) and the client reconnects: no stream
# outlives a deploy by much, and many TVs do not all reconnect at once. Under TESTING the default is 0
# (the stream ends after its snapshot): test clients read a body to its end.
LIFETIME = 3600.0

_open: dict[int, int] = {}


class StreamEnded(Exception):
    """Raised by a stream's reader when the stream must end (a revoked wallboard link)."""

_lock = threading.Lock()


# One Server-Sent Event as OpenAPI describes a text/event-stream answer: `data` is the JSON of the record.
SSE_EVENT = {"type": "object", "properties": {
    "event": {"type": "string", "enum": ["snapshot", "queue", "agent", "ping", "end"]},
    "data": {"type": "string", "contentMediaType": "application/json"},
    "retry": {"type": "integer"}, "id": {"type": "string"}}}


class QueueFilter(Schema):
    queue_ids: Annotated[IdList, Field(max_length=1000, description="only these queues")] | None = None
    labels: Annotated[IdList, Field(max_length=1000,
                                    description="only queues with one of these label ids")] | None = None


class AgentFilter(Schema):
    user_ids: Annotated[IdList, Field(max_length=5000, description="only these agents")] | None = None


class StreamQuery(QueueFilter):
    agents: Annotated[int, Field(ge=0, le=1, description="1 (default): agent events too; 0: queues only")] = 1


@endpoint(bp, "/cc_queue/<int:queue_id>/stats", ["GET"], summary="Live figures of a queue", tag="stats",
          permission="stats")
def queue_stats(principal: Principal, queue_id: int):
    """Callers waiting, longest current wait, agents by activity and today's figures (README, Statistics)."""
    queue_service.get_queue(principal.account_id, queue_id)  # 404 for another account's id
    return ok(snapshot.queues(principal.account, [queue_id])[0])


@endpoint(bp, "/stats/queues", ["GET"], summary="Live figures of the account's queues", tag="stats",
          permission="stats", query=QueueFilter)
def queues_stats(principal: Principal, query: QueueFilter):
    return ok(snapshot.queues(principal.account, query.queue_ids, query.labels))


@endpoint(bp, "/stats/agents", ["GET"], summary="Live figures of the account's agents", tag="stats",
          permission="stats", query=AgentFilter)
def agents_stats(principal: Principal, query: AgentFilter):
    """Activity and time in it, today's calls offered/answered/missed, talk, wrap-up, pause (by reason)
    and checked-in time."""
    return ok(snapshot.agents(principal.account, query.user_ids))


@endpoint(bp, "/stats/stream", ["GET"], summary="Server-Sent Events of the live figures", tag="stats",
          permission="stats", query=StreamQuery, media_type="text/event-stream", response=SSE_EVENT,
          errors={429: "too many streams are open"})
def stats_stream(principal: Principal, query: StreamQuery):
    """`event: snapshot` (`{"at", "queues", "agents"}`), then `event: queue` / `event: agent` with one
    record each time its figures change; `at` is the server's epoch second (longest waits tick from it)."""
    account = principal.account
    return sse_response(account.id, figures(account, query.queue_ids, query.labels, bool(query.agents)))


Reader = Callable[[set[int] | None, set[int] | None], dict[str, list[dict[str, Any]]]]


def figures(account: Account, queue_ids: list[int] | None, labels: list[int] | None, with_agents: bool) -> Reader:
    """A stream's reader: `read(queues, agents)` gives the records of the queues and agents that changed
    (None: all of them; a changed agent changes the tiles of its queues too), within the filters."""
    def read(changed_queues: set[int] | None, changed_agents: set[int] | None) -> dict[str, list[dict[str, Any]]]:
        if changed_queues is None or changed_agents is None:
            ids = queue_ids
        else:
            wanted = changed_queues | snapshot.queues_of_agents(account.id, sorted(changed_agents))
            ids = sorted(wanted & set(queue_ids)) if queue_ids else sorted(wanted)
        out_queues = snapshot.queues(account, ids, labels) if ids is None or ids else []
        if not with_agents or changed_agents == set():
            out_agents: list[dict[str, Any]] = []
        else:
            out_agents = snapshot.agents(account, None if changed_agents is None else sorted(changed_agents))
        return {"queues": out_queues, "agents": out_agents}
    return read


def _claim(account_id: int) -> None:
    with _lock:
        if sum(_open.values()) >= MAX_STREAMS or _open.get(account_id, 0) >= MAX_STREAMS_PER_ACCOUNT:
            raise APIError(429, "Too many statistics streams are open")
        _open[account_id] = _open.get(account_id, 0) + 1


def _release(account_id: int) -> None:
    with _lock:
        left = _open.get(account_id, 1) - 1
        if left > 0:
            _open[account_id] = left
        else:
            _open.pop(account_id, None)


def open_streams() -> dict[int, int]:
    return dict(_open)


def _message(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


_TICKING = ("longest_wait", "seconds_in_activity")


def _steady(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the figures that grow by the second (clients tick those from `at`)."""
    return {k: v for k, v in record.items() if k not in _TICKING and k != "today"} | {
        "today": {k: v for k, v in record.get("today", {}).items() if not k.endswith("_time")}}


def sse_response(account_id: int, read: Reader) -> Response:
    """The stream of `read`'s figures for `account_id` (see the module docstring); 429 when full."""
    _claim(account_id)
    try:
        version = hub.version(account_id)  # before the read: a change meanwhile is read again, not lost
        with connection():
            first = read(None, None)
    except BaseException:
        _release(account_id)
        raise
    config = current_app.config
    lifetime = float(config.get("STATS_STREAM_SECONDS", 0.0 if config.get("TESTING") else LIFETIME))
    response = Response(_events(account_id, read, first, version, lifetime), mimetype="text/event-stream")
    # released when the server closes the response, also when the client left before the first byte
    # (a generator that never started runs no `finally`)
    response.call_on_close(lambda: _release(account_id))
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not hold the events back
    return response


def _events(account_id: int, read: Reader, first: dict[str, list[dict[str, Any]]], version: int,
            lifetime: float) -> Iterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n" + _message("snapshot", {"at": now(), **first})
        sent = {("queue", q["id"]): _steady(q) for q in first["queues"]}
        sent.update({("agent", a["user_id"]): _steady(a) for a in first["agents"]})
        last_read = last_write = opened = time.monotonic()
        while time.monotonic() - opened < lifetime:
            changed = hub.wait(account_id, version, min(REFRESH, HEARTBEAT)) != version
            if changed:
                gevent.sleep(COALESCE)
                version, queues, agents = hub.since(account_id, version)
            if time.monotonic() - last_read >= REFRESH:
                queues = agents = None  # everything: figures of other boxes, times that tick
            elif not changed:
                continue
            try:
                with connection():
                    current = read(queues, agents)
            except StreamEnded:
                yield _message("end", {"at": now()})
                return
            if queues is None:
                last_read = time.monotonic()
            at = now()
            out = []
            for kind, records, key in (("queue", current["queues"], "id"), ("agent", current["agents"], "user_id")):
                for record in records:
                    steady = _steady(record)
                    if sent.get((kind, record[key])) != steady:
                        sent[(kind, record[key])] = steady
                        out.append(_message(kind, {"at": at, **record}))
            if out:
                last_write = time.monotonic()
                yield "".join(out)
            elif time.monotonic() - last_write >= HEARTBEAT:
                last_write = time.monotonic()
                yield _message("ping", {"at": at})
    except GeneratorExit:
        return
