"""Call records: one row per finished call with its legs, kept for a number of days.

Written on the call path (engine.calls.callevents) when a leg ends, in the
transaction that emits its `call:end`: the leg's row always, and the call's
row when the leg is the call's first one (its uuid is the `call_id`). Both
are one INSERT with SQL compiled once (DESIGN.md, "The hot path is compiled
and cached"); no peewee query is built per event. Legs that end after the
first one are still found by `call_id`.

Read by the API with filters on indexed columns (time range, queue, user,
direction, number, hang-up cause) and paged by offset or keyset (`before_id`),
with a bounded page; the CSV export streams keyset pages so memory stays
bounded by one page whatever the range.

Kept `cdr_days` days (per account, else the server default, `DEFAULT_DAYS`);
`purge()` deletes older ones and runs daily from the recordings plugin.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import peewee

from engine.leads.csvformat import defuse
from engine.store import fastq
from engine.store.models import CallRecord, CallRecordLeg, Recording, RetentionSetting, now

DEFAULT_DAYS = 90  # server default retention of call records (`--cdr-days`)
MAX_PAGE = 1000
EXPORT_CHUNK = 1000
_settings: dict[str, int] = {"cdr_days": DEFAULT_DAYS}


def configure(*, cdr_days: int | None = None) -> None:
    """The server's default retention (serve --cdr-days)."""
    if cdr_days is not None:
        if cdr_days < 1:
            raise ValueError("cdr_days must be at least 1")
        _settings["cdr_days"] = cdr_days


def default_days() -> int:
    return _settings["cdr_days"]


# -- the call path ------------------------------------------------------------------------------------

_json = fastq.json_text  # the call events' fields: no floats, the same text as the field's json.dumps


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _text(value: Any, size: int) -> str | None:
    return None if value is None else str(value)[:size]


def leg_ended(account_id: int, uid: str, data: dict[str, Any], event: Any, seen_ms: int, end_ts: int) -> None:
    """Record an ended leg, and the call when it is the call's first leg; in the caller's transaction.

    `data` is the leg's call:end payload; `event` its CHANNEL_HANGUP_COMPLETE (None when reconstructed).
    Called by whoever ended the leg's ActiveCall row (a conditional update); a leg seen again after its row
    was purged (or a replay) changes nothing: both inserts ignore a row that exists.
    """
    call_id = data.get("call_id") or uid
    fastq.execute("records.leg", lambda u, a, c, t, d: CallRecordLeg.insert({
        CallRecordLeg.uuid: u, CallRecordLeg.account: a, CallRecordLeg.call_id: c, CallRecordLeg.end_ts: t,
        CallRecordLeg.data: peewee.Value(d, converter=False)}).on_conflict_ignore(),
        uid, account_id, call_id, end_ts, _json(data))
    if call_id != uid:
        return
    start = _epoch(event, "variable_start_epoch") or seen_ms // 1000
    answer = _epoch(event, "variable_answer_epoch")
    values = (
        account_id, call_id, start, answer or 0, end_ts, _text(data.get("type"), 16) or "",
        _text(data.get("cid_num"), 64) or "", _text(data.get("dst_num"), 64) or "",
        _int(data.get("src_user_id")) or 0, _int(data.get("dst_user_id")) or 0,
        _int(data.get("src_device_id")) or 0, _int(data.get("dst_device_id")) or 0,
        _int(data.get("queue_id")) or 0, _int(data.get("durationms")) or 0, _int(data.get("billms")) or 0,
        _text(data.get("hangup_cause"), 64) or "", _json(data),
    )
    fastq.execute("records.call", _insert_call, *values)


def _insert_call(a, c, s, an, e, ty, sn, dn, su, du, sd, dd, q, dur, bill, cause, d) -> peewee.Query:
    # 0 / "" stand for null (fastq binds ints and strs only); NULLIF turns them back in SQL
    def null(value: Any) -> Any:
        return peewee.fn.NULLIF(value, 0 if isinstance(value, int) else "")
    return CallRecord.insert({
        CallRecord.account: a, CallRecord.call_id: c, CallRecord.start_ts: s, CallRecord.answer_ts: null(an),
        CallRecord.end_ts: e, CallRecord.type: null(ty), CallRecord.src_num: null(sn), CallRecord.dst_num: null(dn),
        CallRecord.src_user_id: null(su), CallRecord.dst_user_id: null(du), CallRecord.src_device_id: null(sd),
        CallRecord.dst_device_id: null(dd), CallRecord.queue_id: null(q), CallRecord.durationms: dur,
        CallRecord.billms: bill, CallRecord.hangup_cause: null(cause),
        CallRecord.data: peewee.Value(d, converter=False),
    }).on_conflict_ignore()


def _epoch(event: Any, name: str) -> int | None:
    if event is None:
        return None
    value = event.get(name)
    number = _int(value.strip() if isinstance(value, str) else None)
    return number or None


# -- reading ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordFilter:
    """What the client asked for; every field optional. Numbers match the caller's or the dialed number."""

    start: int | None = None
    end: int | None = None
    queue_id: int | None = None
    user_id: int | None = None
    direction: str | None = None
    number: str | None = None
    hangup_cause: str | None = None
    call_id: str | None = None


def _query(account_id: int, flt: RecordFilter) -> peewee.ModelSelect:
    query = CallRecord.select().where(CallRecord.account == account_id)
    if flt.start is not None:
        query = query.where(CallRecord.start_ts >= flt.start)
    if flt.end is not None:
        query = query.where(CallRecord.start_ts < flt.end)
    if flt.queue_id is not None:
        query = query.where(CallRecord.queue_id == flt.queue_id)
    if flt.user_id is not None:
        query = query.where((CallRecord.src_user_id == flt.user_id) | (CallRecord.dst_user_id == flt.user_id))
    if flt.direction is not None:
        query = query.where(CallRecord.type == flt.direction)
    if flt.number is not None:
        query = query.where((CallRecord.src_num == flt.number) | (CallRecord.dst_num == flt.number))
    if flt.hangup_cause is not None:
        query = query.where(CallRecord.hangup_cause == flt.hangup_cause)
    if flt.call_id is not None:
        query = query.where(CallRecord.call_id == flt.call_id)
    return query


def page(account_id: int, flt: RecordFilter, *, limit: int, offset: int = 0,
         before_id: int | None = None) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first; `before_id` continues after the last id of the previous page (keyset), else `offset`.

    Returns the records with their legs and the `before_id` of the next page (None at the end).
    """
    limit = max(1, min(limit, MAX_PAGE))
    query = _query(account_id, flt)
    if before_id is not None:
        query = query.where(CallRecord.id < before_id)
    elif offset:
        query = query.offset(offset)
    rows = list(query.order_by(CallRecord.id.desc()).limit(limit))
    records = _with_legs(account_id, rows)
    return records, (rows[-1].id if len(rows) == limit else None)


def _with_legs(account_id: int, rows: list[CallRecord]) -> list[dict[str, Any]]:
    legs: dict[str, list[dict[str, Any]]] = {}
    recorded: dict[str, dict[str, Any]] = {}
    if rows:
        call_ids = [r.call_id for r in rows]
        for leg in (CallRecordLeg.select().where((CallRecordLeg.account == account_id)
                                                 & CallRecordLeg.call_id.in_(call_ids))
                    .order_by(CallRecordLeg.end_ts, CallRecordLeg.uuid)):
            legs.setdefault(leg.call_id, []).append(leg.data or {})
        for rec_id, call_id, state in (Recording.select(Recording.id, Recording.call_id, Recording.state)
                                       .where((Recording.account == account_id) & Recording.call_id.in_(call_ids))
                                       .tuples()):
            recorded[call_id] = {"id": rec_id, "state": state}
    return [dict(record_dict(r, legs.get(r.call_id, [])), recording=recorded.get(r.call_id)) for r in rows]


def by_call_ids(account_id: int, call_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The call record id and leg uuids of each of these calls that has a record (recordings' listing)."""
    if not call_ids:
        return {}
    out = {c: {"call_record_id": i, "legs": []} for i, c in CallRecord.select(CallRecord.id, CallRecord.call_id)
           .where((CallRecord.account == account_id) & CallRecord.call_id.in_(call_ids)).tuples()}
    for uid, call_id in (CallRecordLeg.select(CallRecordLeg.uuid, CallRecordLeg.call_id)
                         .where((CallRecordLeg.account == account_id) & CallRecordLeg.call_id.in_(call_ids))
                         .order_by(CallRecordLeg.end_ts, CallRecordLeg.uuid).tuples()):
        if call_id in out:
            out[call_id]["legs"].append(uid)
    return out


def get(account_id: int, call_id: str) -> dict[str, Any] | None:
    rows = list(_query(account_id, RecordFilter(call_id=call_id)).limit(1))
    return _with_legs(account_id, rows)[0] if rows else None


def record_dict(row: CallRecord, legs: list[dict[str, Any]]) -> dict[str, Any]:
    data = row.data or {}
    return {
        "id": row.id, "call_id": row.call_id, "start_ts": row.start_ts, "answer_ts": row.answer_ts,
        "end_ts": row.end_ts, "direction": row.type, "src_num": row.src_num, "dst_num": row.dst_num,
        "cid_name": data.get("cid_name"), "src_user_id": row.src_user_id, "dst_user_id": row.dst_user_id,
        "src_device_id": row.src_device_id, "dst_device_id": row.dst_device_id, "queue_id": row.queue_id,
        "durationms": row.durationms, "billms": row.billms, "waitms": data.get("waitms"),
        "cc_wait": data.get("cc_wait"), "canceled": data.get("canceled"), "hangup_cause": row.hangup_cause,
        "lead_id": data.get("lead_id"), "campaign_id": data.get("campaign_id"), "tags": data.get("tags"),
        "legs": legs,
    }


CSV_COLUMNS = ("id", "call_id", "start_ts", "answer_ts", "end_ts", "direction", "src_num", "dst_num", "cid_name",
               "src_user_id", "dst_user_id", "src_device_id", "dst_device_id", "queue_id", "durationms", "billms",
               "waitms", "cc_wait", "canceled", "hangup_cause", "lead_id", "campaign_id", "tags", "legs",
               "recording_id")


def iter_csv(account_id: int, flt: RecordFilter, *, limit: int | None = None) -> Iterator[str]:
    """The records as CSV text, newest first, a keyset page at a time; cells a spreadsheet would run as a
    formula are defused (engine.leads.csvformat). `legs` is the number of legs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    before: int | None = None
    left = limit
    while left is None or left > 0:
        size = EXPORT_CHUNK if left is None else min(EXPORT_CHUNK, left)
        records, before = page(account_id, flt, limit=size, before_id=before)
        buffer.seek(0)
        buffer.truncate()
        for record in records:
            record = dict(record, legs=len(record["legs"]),
                          recording_id=(record["recording"] or {}).get("id"))
            writer.writerow([_cell(record[c]) for c in CSV_COLUMNS])
        yield buffer.getvalue()
        if left is not None:
            left -= len(records)
        if before is None:
            return


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        value = json.dumps(value)
    return defuse(value)


# -- retention -----------------------------------------------------------------------------------------


def retention(account_id: int) -> dict[str, int | None]:
    row = RetentionSetting.get_or_none(RetentionSetting.account == account_id)
    return {"cdr_days": row.cdr_days if row else None, "recording_days": row.recording_days if row else None}


def set_retention(account_id: int, fields: dict[str, int | None]) -> dict[str, int | None]:
    """Change the submitted retention fields (null: the server default); one transaction."""
    from engine.store.db import db
    with db.atomic():
        row = RetentionSetting.get_or_none(RetentionSetting.account == account_id)
        if row is None:
            RetentionSetting.insert(account=account_id, **fields).execute()
        elif fields:
            RetentionSetting.update(**fields).where(RetentionSetting.account == account_id).execute()
    return retention(account_id)


def purge(batch: int = 5000) -> int:
    """Delete call records (and their legs) older than their account's retention; how many calls went.

    Deletes in batches by id so no statement holds the database long: accounts with their own setting
    first, then every other account with the server default.
    """
    total = 0
    stamp = now()
    custom = dict(RetentionSetting.select(RetentionSetting.account, RetentionSetting.cdr_days)
                  .where(RetentionSetting.cdr_days.is_null(False)).tuples())
    groups: list[tuple[list[int] | None, int]] = [([a], d) for a, d in custom.items()]
    groups.append((None, default_days()))
    for accounts, days in groups:
        cutoff = stamp - days * 86400
        if accounts is not None:
            calls, legs = CallRecord.account.in_(accounts), CallRecordLeg.account.in_(accounts)
        elif custom:
            calls, legs = CallRecord.account.not_in(list(custom)), CallRecordLeg.account.not_in(list(custom))
        else:
            calls, legs = CallRecord.id.is_null(False), CallRecordLeg.uuid.is_null(False)
        while True:
            ids = [r for (r,) in CallRecord.select(CallRecord.id).where(calls & (CallRecord.end_ts < cutoff))
                   .limit(batch).tuples()]
            if not ids:
                break
            CallRecord.delete().where(CallRecord.id.in_(ids)).execute()
            total += len(ids)
        CallRecordLeg.delete().where(legs & (CallRecordLeg.end_ts < cutoff)).execute()
    return total
