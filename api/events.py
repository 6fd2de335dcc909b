"""Push events: what was recorded for the Event Push URL, how its delivery went, and redelivery."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import AfterValidator, Field

from api.auth import Principal
from api.envelope import ok
from api.spec import Schema, endpoint
from engine.events import webhooks as service
from engine.events.outbox import EVENT_NAMES, PENDING
from engine.store.models import OutboxEvent

bp = Blueprint("events", __name__, url_prefix="/api/event")

Seq = Annotated[int, Field(ge=0, le=2**63 - 1)]
# A point in time, not a duration (`Seconds` caps at ten years): epoch seconds up to the year 9999.
Epoch = Annotated[float, Field(ge=0, le=253402300799)]


def _event_name(value: str) -> str:
    if value not in EVENT_NAMES:
        raise ValueError(f"must be one of {', '.join(sorted(EVENT_NAMES))}")
    return value


class EventQuery(Schema):
    status: Literal["pending", "delivered", "failed", "skipped"] | None = Field(
        None, description="pending: waiting or retrying; delivered: the receiver answered 2xx; failed: a 4xx other "
                          "than 408/429, a refused address, or 24 hours of retries; skipped: no Event Push URL")
    event: Annotated[str, AfterValidator(_event_name)] | None = Field(None, description="event name, e.g. call:end")
    since: Epoch | None = Field(None, description="only events with ts >= since (epoch seconds)")
    until: Epoch | None = Field(None, description="only events with ts <= until (epoch seconds)")
    order: Literal["desc", "asc"] = Field(
        "desc", description="desc: newest first (default); asc: in recording order, the order of delivery")
    after_seq: Seq | None = Field(None, description="page on in asc order: only events with seq > after_seq")
    before_seq: Seq | None = Field(None, description="page on in desc order: only events with seq < before_seq")
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


def record(event: OutboxEvent) -> dict[str, Any]:
    """The event as sent (`id`, `event`, `ts`, `account_id`, `data`) plus its delivery state."""
    return {
        "id": event.id, "seq": event.seq, "account_seq": event.account_seq, "event": event.event, "ts": event.ts,
        "account_id": event.account_id,
        "data": event.data, "status": event.status, "attempts": event.attempts,
        "next_attempt": event.next_attempt if event.status == PENDING else None,
        "last_error": event.last_error, "delivered_at": event.delivered_at,
    }


@endpoint(bp, "", ["GET"], summary="List recent push events with their delivery status", tag="events",
          permission="events", query=EventQuery)
def list_events(principal: Principal, query: EventQuery):
    """Newest first by default. To page, pass the last `seq` you got as `before_seq` (desc) or
    `after_seq` (asc). Delivered and skipped events are kept 7 days, failed ones 30 days."""
    q = OutboxEvent.of(principal.account_id)
    if query.status:
        q = q.where(OutboxEvent.status == query.status)
    if query.event:
        q = q.where(OutboxEvent.event == query.event)
    if query.since is not None:
        q = q.where(OutboxEvent.ts >= query.since)
    if query.until is not None:
        q = q.where(OutboxEvent.ts <= query.until)
    if query.after_seq is not None:
        q = q.where(OutboxEvent.seq > query.after_seq)
    if query.before_seq is not None:
        q = q.where(OutboxEvent.seq < query.before_seq)
    q = q.order_by(OutboxEvent.seq.desc() if query.order == "desc" else OutboxEvent.seq).limit(query.limit)
    return ok([record(e) for e in q])


@endpoint(bp, "/<event_id>", ["GET"], summary="Get a push event and its delivery status", tag="events",
          permission="events")
def get_event(principal: Principal, event_id: str):
    return ok(record(service.get_event(principal.account_id, event_id)))


@endpoint(bp, "/<event_id>/redeliver", ["POST"], summary="Send a push event again", tag="events",
          permission="events")
def redeliver_event(principal: Principal, event_id: str):
    """Queues the event now (status pending, attempts 0) with the same `id`, so receivers can drop
    it if they have it. It goes out before the account's later pending events; retries follow the
    usual policy, still counted from the event's `ts` (an event older than 24 hours gets one attempt)."""
    return ok(record(service.redeliver(principal.account_id, event_id)))
