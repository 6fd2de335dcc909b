"""Call records (`GET /api/cdr`, the CSV export) and how long records and recordings are kept
(engine/calls/records.py). Permission modules `reports` (records) and `settings` (retention)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Blueprint, Response, stream_with_context
from pydantic import BeforeValidator, Field

from api.auth import Principal
from api.envelope import APIError, ok
from api.spec import MAX_INT, Id, Schema, endpoint
from engine.calls import records
from engine.store.db import db

bp = Blueprint("cdr", __name__, url_prefix="/api")


def _text(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Epoch = Annotated[int, Field(ge=0, le=2**40)]


class CdrQuery(Schema):
    start: Epoch | None = Field(None, description="calls that began at or after (epoch seconds)")
    end: Epoch | None = Field(None, description="calls that began before (epoch seconds)")
    queue_id: Id | None = None
    user_id: Id | None = Field(None, description="calls with this user as caller or callee (agent)")
    direction: Literal["inbound", "outbound", "internal", "queue", "fax", "conf"] | None = None
    number: Annotated[str, BeforeValidator(_text), Field(pattern=r"^\+?[0-9*#]{1,32}$")] | None = Field(
        None, description="the caller's or the dialed number, exactly")
    hangup_cause: Annotated[str, Field(pattern=r"^[A-Z_]{1,64}$")] | None = None
    limit: Annotated[int, Field(ge=1, le=records.MAX_PAGE)] = 100
    offset: Annotated[int, Field(ge=0, le=MAX_INT)] = 0
    before_id: Annotated[int, Field(ge=1, le=MAX_INT)] | None = Field(
        None, description="keyset paging: records older than this id (the previous page's `next_before_id`)")

    def record_filter(self) -> records.RecordFilter:
        return records.RecordFilter(start=self.start, end=self.end, queue_id=self.queue_id, user_id=self.user_id,
                                    direction=self.direction, number=self.number, hangup_cause=self.hangup_cause)


class CsvQuery(CdrQuery):
    limit: Annotated[int, Field(ge=1, le=10_000_000)] | None = None  # type: ignore[assignment]


_RECORD = {"type": "object", "description": "a finished call", "properties": {
    "id": {"type": "integer"}, "call_id": {"type": "string"}, "start_ts": {"type": "integer"},
    "answer_ts": {"type": ["integer", "null"]}, "end_ts": {"type": "integer"},
    "direction": {"type": ["string", "null"]}, "src_num": {"type": ["string", "null"]},
    "dst_num": {"type": ["string", "null"]}, "queue_id": {"type": ["integer", "null"]},
    "src_user_id": {"type": ["integer", "null"]}, "dst_user_id": {"type": ["integer", "null"]},
    "durationms": {"type": ["integer", "null"]}, "billms": {"type": ["integer", "null"]},
    "hangup_cause": {"type": ["string", "null"]},
    "recording": {"type": ["object", "null"], "description": "the call's recording: `id` and `state`"},
    "legs": {"type": "array", "items": {"type": "object", "description": "the leg's call:end fields"}}}}


@endpoint(bp, "/cdr", ["GET"], summary="Call records (one per call, with its legs)", tag="reports",
          permission="reports", query=CdrQuery, response={"type": "array", "items": _RECORD})
def list_cdr(principal: Principal, query: CdrQuery):
    """Newest first. Page with `limit` (at most 1000) and `offset`, or with `before_id`: each reply says
    `next_before_id` (null on the last page). The same records as CSV: `GET /api/cdr.csv`."""
    rows, next_before = records.page(principal.account_id, query.record_filter(), limit=query.limit,
                                     offset=query.offset, before_id=query.before_id)
    return ok(rows, next_before_id=next_before)


@endpoint(bp, "/cdr.csv", ["GET"], summary="Call records as CSV, streamed", tag="reports", permission="reports",
          query=CsvQuery, media_type="text/csv",
          response={"type": "string", "description": "a header row, then one row per call (legs: how many)"})
def cdr_csv(principal: Principal, query: CsvQuery):
    """The filters of `GET /api/cdr`; every matching record unless `limit`. Streamed a page at a time.
    A cell a spreadsheet would run as a formula (starting with = + - @) is written with a leading `'`."""
    return _csv(principal, query.record_filter(), query.limit)


def _csv(principal: Principal, flt: records.RecordFilter, limit: int | None) -> Response:
    account_id = principal.account_id

    def generate():
        with db.connection_context():  # the request's connection is closed at teardown; the stream has its own
            yield from records.iter_csv(account_id, flt, limit=limit)

    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = 'attachment; filename="cdr.csv"'
    return response


@endpoint(bp, "/cdr/<call_id>", ["GET"], summary="One call record by its call_id", tag="reports",
          permission="reports", response=_RECORD)
def get_cdr(principal: Principal, call_id: str):
    if len(call_id) > 64:
        raise APIError(404, f"Call record {call_id[:64]} not found")
    record = records.get(principal.account_id, call_id)
    if record is None:
        raise APIError(404, f"Call record {call_id} not found")
    return ok(record)


Days = Annotated[int, Field(ge=1, le=36500)]


class RetentionBody(Schema):
    cdr_days: Days | None = Field(None, description="days call records are kept; null: the server's default")
    recording_days: Days | None = Field(None, description="days recordings are kept; null: the server's default")


def _retention(account_id: int) -> dict[str, Any]:
    from engine.calls import recordings

    own = records.retention(account_id)
    return {**own, "default_cdr_days": records.default_days(), "default_recording_days": recordings.settings.days}


_RETENTION = {"type": "object", "properties": {
    "cdr_days": {"type": ["integer", "null"]}, "recording_days": {"type": ["integer", "null"]},
    "default_cdr_days": {"type": "integer"}, "default_recording_days": {"type": "integer"}}}


@endpoint(bp, "/retention", ["GET"], summary="How long call records and recordings are kept", tag="settings",
          permission="settings", response=_RETENTION)
def get_retention(principal: Principal):
    """A daily clean-up deletes what is older."""
    return ok(_retention(principal.account_id))


@endpoint(bp, "/retention", ["PUT"], summary="Set how long call records and recordings are kept", tag="settings",
          permission="settings", body=RetentionBody, response=_RETENTION)
def put_retention(principal: Principal, body: RetentionBody):
    """Only the submitted fields change; null returns to the server's default (`--cdr-days`,
    `--recording-days`)."""
    fields = {name: getattr(body, name) for name in body.model_fields_set}
    records.set_retention(principal.account_id, fields)
    return ok(_retention(principal.account_id))
