"""Phone lists and their leads: validation, upserts, large imports, streamed reads, lookups.

Leads arrive by the hundred thousand from CRMs, so the write path avoids
per-row Python objects: rows are checked by a hand-written loop over plain
dicts (several times faster than a pydantic model per row, see
bench/RESULTS.md) and written with the driver's `executemany` over a one-row
upsert statement that peewee generates for the bound database, so the same
code runs on SQLite and PostgreSQL; peewee's `insert_many` in chunks was
8 times slower, building and converting every value in Python. A JSON array
of leads is decoded by msgspec into untracked structs (`decode_leads`): the
standard decoder's 700,000 dicts and lists per 100,000 leads cost as much
again in cyclic garbage collection as in decoding.
"""
from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, TextIO

import msgspec
import peewee

from engine.errors import ServiceError
from engine.store.db import db
from engine.store.models import Lead, LeadImport, PhoneList, now

LARGE_BATCH = 5000  # above this many distinct phones a batch is a staged import
CHUNK = 5000  # rows per statement / per staged-import transaction (tens of ms)
READ_CHUNK = 5000  # rows per keyset page when streaming a list
STALE_IMPORT = 3600  # seconds after which an unpublished import is presumed dead
MAX_NAME, MAX_LEAD_ID, MAX_TAGS = 200, 100, 500
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
LEAD_FIELDS = ("phone", "name", "lead_id", "priority", "tags", "ext_api_vars")

_PHONE_JUNK = str.maketrans("", "", " -.()")
_PHONE = re.compile(r"\+?[0-9]{3,20}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

Progress = Callable[[int, int], None]
LeadRow = tuple[str, str | None, str | None, int, str | None, str]


# --- phones and validation -------------------------------------------------------------------


def normalize_phone(value: Any) -> str | None:
    """The stored form of a phone number, or None when it is not one.

    Spaces, dashes, dots and parentheses are formatting; a leading `+` is kept
    (so `+972...` and `972...` are different numbers); 3 to 20 digits remain.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    phone = value.translate(_PHONE_JUNK)
    return phone if _PHONE.fullmatch(phone) else None


def _control_free(value: Any) -> bool:
    if isinstance(value, str):
        return not _CONTROL.search(value)
    if isinstance(value, dict):
        return all(_control_free(k) and _control_free(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_control_free(v) for v in value)
    return True


def _text(value: Any, limit: int) -> tuple[str | None, str | None]:
    """(clean value, problem) for an optional text field; numbers are taken as their text."""
    if value is None:
        return None, None
    if type(value) is not str:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return None, "must be a string"
        value = str(value)
    value = value.strip()
    if len(value) > limit:
        return None, f"at most {limit} characters"
    if _CONTROL.search(value):
        return None, "control characters are not allowed"
    return value, None


def _priority(value: Any) -> tuple[int, str | None]:
    if value is None or value == "":
        return 0, None
    if isinstance(value, bool):
        return 0, "must be an integer"
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return 0, "must be an integer"
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        return 0, "must be an integer"
    if not PRIORITY_RANGE[0] <= value <= PRIORITY_RANGE[1]:
        return 0, "out of range"
    return value, None


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


# json.dumps builds a new encoder on every call, which costs more than the encoding
# of a small object: build the C encoder once (same output as engine.store.db.JSONField).
if c_make_encoder is not None:
    _c_encoder = c_make_encoder(None, _not_json, encode_basestring, None, ":", ",", False, False, False)

    def _encode_json(value: Any) -> str:
        return "".join(_c_encoder(value, 0))
else:  # pragma: no cover - CPython always has the C speedups
    _encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _ext_api_vars(value: Any) -> tuple[str, str | None]:
    """The JSON text to store: the object exactly as sent, keys in the client's order."""
    if value is None or value == "" or (type(value) is dict and not value):
        return "{}", None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return "", "must be a JSON object"
    if not isinstance(value, dict):
        return "", "must be a JSON object"
    try:
        text = _encode_json(value)
    except ValueError:
        return "", "NaN and Infinity are not JSON"
    # The encoder escapes control characters, so only a text with a backslash
    # (or DEL, which it leaves alone) can hold one: walk those only.
    if ("\\" in text or "\x7f" in text) and not _control_free(value):
        return "", "control characters are not allowed"
    return text, None


def check_lead(row: Any, index: int, errors: list[dict[str, Any]]) -> LeadRow | None:
    """One lead as a storable tuple, or None with its problems appended to `errors`.

    Written as a plain loop body rather than a pydantic model: it runs once
    per row of 100,000-lead imports (see bench/RESULTS.md for the figures).
    """
    if type(row) is not dict:
        errors.append({"index": index, "field": "lead", "reason": "must be an object"})
        return None
    get = row.get
    raw = get("phone")
    phone = raw if type(raw) is str and _PHONE.fullmatch(raw) else normalize_phone(raw)
    problems: list[tuple[str, str]] = []
    if phone is None:
        problems.append(("phone", "is required" if raw in (None, "") else
                         "not a phone number (3 to 20 digits, optional +)"))
    name = get("name")
    if name is not None and (type(name) is not str or len(name) > MAX_NAME or _CONTROL.search(name)):
        name, problem = _text(name, MAX_NAME)
        if problem:
            problems.append(("name", problem))
    elif name:
        name = name.strip()
    lead_id = get("lead_id")
    if lead_id is not None and (type(lead_id) is not str or len(lead_id) > MAX_LEAD_ID or _CONTROL.search(lead_id)):
        lead_id, problem = _text(lead_id, MAX_LEAD_ID)
        if problem:
            problems.append(("lead_id", problem))
    elif lead_id:
        lead_id = lead_id.strip()
    priority = get("priority", 0)
    if type(priority) is not int:
        priority, problem = _priority(priority)
        if problem:
            problems.append(("priority", problem))
    elif not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        problems.append(("priority", "out of range"))
    tags = get("tags")
    if tags is not None and (type(tags) is not str or len(tags) > MAX_TAGS or _CONTROL.search(tags)):
        tags, problem = _text(tags, MAX_TAGS)
        if problem:
            problems.append(("tags", problem))
    elif tags:
        tags = tags.strip()
    ext, problem = _ext_api_vars(get("ext_api_vars"))
    if problem:
        problems.append(("ext_api_vars", problem))
    if problems:
        errors.extend({"index": index, "field": field, "reason": reason} for field, reason in problems)
        return None
    return (phone, name, lead_id, priority, tags, ext)  # type: ignore[return-value]


class PostedLead(msgspec.Struct, gc=False):
    """One lead of a JSON array as `decode_leads` reads it, before `check_lead`'s rules.

    The types are the JSON types that `check_lead` takes without question;
    any other (a float, a boolean, an object where text belongs, a row that
    is not an object) fails the decode, and the body is read again by the
    standard decoder, so the outcome is the one `json.loads` would give.
    Floats are left out because msgspec's float parsing is its own.
    `ext_api_vars` stays JSON text until it is checked.
    """

    phone: str | int | None = None
    name: str | int | None = None
    lead_id: str | int | None = None
    priority: int | str | None = 0
    tags: str | int | None = None
    ext_api_vars: msgspec.Raw = msgspec.Raw(b"null")


_LEADS_DECODER = msgspec.json.Decoder(list[PostedLead])


def decode_leads(body: bytes) -> list[PostedLead] | None:
    """A JSON array of lead objects, or None when only the standard decoder can tell what the body is."""
    try:
        return _LEADS_DECODER.decode(body)
    except (msgspec.MsgspecError, UnicodeDecodeError, ValueError, RecursionError):
        return None


class _FloatInside(Exception):
    pass


def _refuse_float(_text: str) -> Any:
    raise _FloatInside


# Decodes an ext_api_vars object unless it holds a float: msgspec writes floats its own way
# (1e16, not 1e+16), everything else exactly as the standard encoder does.
_EXT_DECODER = msgspec.json.Decoder(float_hook=_refuse_float)
_EXT_ENCODER = msgspec.json.Encoder()


def _posted_ext(raw: msgspec.Raw) -> str | None:
    """The stored text of a posted ext_api_vars object, or None when `_ext_api_vars` must decide.

    A text without backslash or DEL has no control character, and the
    standard encoder would write the same text: the two encoders differ in
    escapes and floats only.
    """
    try:
        value = _EXT_DECODER.decode(raw)
        if type(value) is not dict:
            return "{}" if value is None else None
        text = _EXT_ENCODER.encode(value).decode()
    except (msgspec.MsgspecError, UnicodeDecodeError, ValueError, RecursionError, _FloatInside):
        return None
    return None if "\\" in text or "\x7f" in text else text


def _posted_dict(row: PostedLead) -> dict[str, Any]:
    """The row as `json.loads` would have given it, for `check_lead`."""
    try:
        ext = json.loads(bytes(row.ext_api_vars))
    except (ValueError, UnicodeDecodeError, RecursionError):  # as api.spec.request_json answers
        raise ServiceError(400, "Malformed JSON body") from None
    return {"phone": row.phone, "name": row.name, "lead_id": row.lead_id, "priority": row.priority,
            "tags": row.tags, "ext_api_vars": ext}


def check_posted_lead(row: PostedLead, index: int, errors: list[dict[str, Any]]) -> LeadRow | None:
    """`check_lead` for a decoded row: plain rows here, any other through `check_lead` itself."""
    phone, name, lead_id, priority, tags = row.phone, row.name, row.lead_id, row.priority, row.tags
    if (type(phone) is str and _PHONE.fullmatch(phone)
            and type(priority) is int and PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]
            and (name is None or (type(name) is str and len(name) <= MAX_NAME and not _CONTROL.search(name)))
            and (lead_id is None or (type(lead_id) is str and len(lead_id) <= MAX_LEAD_ID
                                     and not _CONTROL.search(lead_id)))
            and (tags is None or (type(tags) is str and len(tags) <= MAX_TAGS and not _CONTROL.search(tags)))):
        ext = _posted_ext(row.ext_api_vars)
        if ext is not None:
            return (phone, name.strip() if name else name, lead_id.strip() if lead_id else lead_id, priority,
                    tags.strip() if tags else tags, ext)
    return check_lead(_posted_dict(row), index, errors)


_PHONE_LINES = re.compile(r"(?:\+?[0-9]{3,20}\n)*+\+?[0-9]{3,20}")
_TEXT_TYPES = {str, type(None)}


def _plain_texts(values: list[Any], limit: int) -> bool:
    """Every value None or text of at most `limit` characters without control characters ("\\n" is allowed)."""
    if not set(map(type, values)) <= _TEXT_TYPES:
        return False
    texts = [value for value in values if value]
    return not texts or (max(map(len, texts)) <= limit and not _CONTROL.search("\n".join(texts)))


def _plain_batch(rows: list[PostedLead]) -> dict[str, LeadRow] | None:
    """The batch when every row passes `check_posted_lead` without a second look, else None.

    The same conditions, tested a column at a time by C loops (one regex over
    all phones joined by newlines, one control-character search over all
    names...) instead of a Python loop per row: 100,000 rows in a third of
    the time. Any other batch is checked row by row, which lists its errors.
    """
    phones = [row.phone for row in rows]
    priorities = [row.priority for row in rows]
    names, lead_ids, tags = [row.name for row in rows], [row.lead_id for row in rows], [row.tags for row in rows]
    joined = "\n".join(phones) if set(map(type, phones)) == {str} else ""
    if not (joined.count("\n") == len(phones) - 1 and _PHONE_LINES.fullmatch(joined)
            and set(map(type, priorities)) == {int}
            and PRIORITY_RANGE[0] <= min(priorities) and max(priorities) <= PRIORITY_RANGE[1]
            and _plain_texts(names, MAX_NAME) and _plain_texts(lead_ids, MAX_LEAD_ID) and _plain_texts(tags, MAX_TAGS)):
        return None
    exts = [_posted_ext(row.ext_api_vars) for row in rows]
    if None in exts:
        return None
    names, lead_ids, tags = ([value.strip() if value else value for value in column]
                             for column in (names, lead_ids, tags))
    return {lead[0]: lead for lead in zip(phones, names, lead_ids, priorities, tags, exts, strict=True)}


def check_leads(rows: list[Any]) -> dict[str, LeadRow]:
    """The batch keyed by phone (the last of duplicates wins), or a 400 listing every bad row."""
    if not rows:
        raise ServiceError(400, "leads: no leads in the request")
    if set(map(type, rows)) == {PostedLead}:
        batch = _plain_batch(rows)
        if batch is not None:
            return batch
    errors: list[dict[str, Any]] = []
    out: dict[str, LeadRow] = {}
    for index, row in enumerate(rows):
        check = check_posted_lead if type(row) is PostedLead else check_lead
        lead = check(row, index, errors)
        if lead is not None:
            out[lead[0]] = lead
    if errors:
        first = errors[0]
        raise ServiceError(
            400, f"leads[{first['index']}].{first['field']}: {first['reason']} "
            f"({len(errors)} problem(s); nothing was written)", {"errors": errors},
        )
    return out


# --- lists ------------------------------------------------------------------------------------


def get_list(account_id: int | None, list_id: int) -> PhoneList:
    """The list, if it is the account's (`account_id` None: any account, for the CLI)."""
    query = PhoneList.select().where(PhoneList.id == list_id)
    if account_id is not None:
        query = query.where(PhoneList.account == account_id)
    plist = query.first()
    if plist is None:
        raise ServiceError(404, f"Phone list {list_id} not found")
    return plist


def _save_list(plist: PhoneList) -> PhoneList:
    plist.name_key = plist.name.lower()
    try:
        with db.atomic():
            taken = PhoneList.select().where(
                (PhoneList.account == plist.account_id) & (PhoneList.name_key == plist.name_key)
            )
            if plist.id is not None:
                taken = taken.where(PhoneList.id != plist.id)
            if taken.exists():
                raise ServiceError(409, f"name: a phone list named {plist.name!r} exists")
            plist.save()
    except peewee.IntegrityError:
        raise ServiceError(409, f"name: a phone list named {plist.name!r} exists") from None
    return plist


def create_list(account_id: int, name: str, list_type: str = "leads") -> PhoneList:
    return _save_list(PhoneList(account=account_id, name=name, type=list_type))


def update_list(account_id: int, list_id: int, fields: dict[str, Any]) -> PhoneList:
    plist = get_list(account_id, list_id)
    if "name" in fields:
        plist.name = fields["name"]
    if "type" in fields:
        plist.type = fields["type"]
    return _save_list(plist)


def delete_list(account_id: int, list_id: int) -> None:
    with db.atomic():
        plist = get_list(account_id, list_id)
        Lead.delete().where(Lead.phone_list == plist.id).execute()
        LeadImport.delete().where(LeadImport.phone_list == plist.id).execute()
        plist.delete_instance()


# --- writing leads ----------------------------------------------------------------------------

_COLUMNS = (Lead.phone_list, Lead.phone, Lead.name, Lead.lead_id, Lead.priority, Lead.tags,
            Lead.ext_api_vars, Lead.import_id)


def _statement(upsert: bool) -> str:
    """One-row INSERT (or upsert) SQL for the bound database, run with `executemany`.

    Parameters follow `_COLUMNS`. The conflict target is the partial unique
    index on visible rows, so hidden rows of an import never collide.
    """
    query = Lead.insert_many([tuple(None for _ in _COLUMNS)], fields=list(_COLUMNS))
    if upsert:
        query = query.on_conflict(
            conflict_target=[Lead.phone_list, Lead.phone], conflict_where=Lead.import_id.is_null(),
            update={f: peewee.EXCLUDED[f.column_name] for f in _COLUMNS[2:7]},
        )
    sql, _params = query.sql()
    return sql


def _executemany(sql: str, rows: list[tuple]) -> None:
    cursor = db.cursor()
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _existing_phones(list_id: int, phones: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(phones, CHUNK):
        query = Lead.select(Lead.phone).where(
            (Lead.phone_list == list_id) & Lead.import_id.is_null() & Lead.phone.in_(chunk)
        )
        found.update(phone for (phone,) in query.tuples())
    return found


def add_leads(account_id: int | None, list_id: int, rows: list[Any],
              progress: Progress | None = None) -> dict[str, int]:
    """Add or update (by phone) a batch of leads: all of it or, on any bad row, none of it."""
    get_list(account_id, list_id)
    batch = check_leads(rows)
    if len(batch) > LARGE_BATCH:
        added, updated = _staged_import(list_id, list(batch.values()), progress)
    else:
        leads = [(list_id, *lead, None) for lead in batch.values()]
        added, updated = _upsert(account_id, list_id, leads)
        if progress:
            progress(len(leads), len(leads))
    list_rows = PhoneList.select(PhoneList.list_rows).where(PhoneList.id == list_id).scalar() or 0
    return {"added": added, "updated": updated, "duplicates": len(rows) - len(batch), "list_rows": list_rows}


def _upsert(account_id: int | None, list_id: int, leads: list[tuple]) -> tuple[int, int]:
    """A small batch: one plain transaction."""
    sql = _statement(upsert=True)
    with db.atomic():
        get_list(account_id, list_id)  # still there, now that we hold the write
        existing = _existing_phones(list_id, [lead[1] for lead in leads])
        for chunk in _chunks(leads, CHUNK):
            _executemany(sql, chunk)
        added = len(leads) - len(existing)
        if added:
            PhoneList.update(list_rows=PhoneList.list_rows + added).where(PhoneList.id == list_id).execute()
    return added, len(existing)


def _staged_import(list_id: int, leads: list[LeadRow], progress: Progress | None) -> tuple[int, int]:
    """A large batch, written so that no single transaction holds the write lock for long.

    The rows are inserted in chunks of `CHUNK`, each its own short transaction,
    with `import_id` set: hidden from every read and outside the unique index
    of visible rows. Between chunks the lock is released (and under gevent the
    loop gets a turn), so the engine's own writes wait at most one chunk. The
    import becomes visible in one final transaction that applies the staged
    rows whose phone already exists as updates (keeping those leads' places),
    drops them, and un-hides the rest: set-based statements over indexed
    columns, with no Python work inside. Clients therefore see the whole batch
    or none of it. If anything fails the hidden rows are deleted; if the
    process dies they are purged by a later import (`STALE_IMPORT`).
    """
    _purge_stale_imports(list_id)
    with db.atomic():
        import_id = LeadImport.create(phone_list=list_id).id
    staged = [(list_id, *lead, import_id) for lead in leads]
    sql = _statement(upsert=False)
    try:
        done = 0
        for chunk in _chunks(staged, CHUNK):
            with db.atomic():
                _executemany(sql, chunk)
            done += len(chunk)
            if progress:
                progress(done, len(staged))
            time.sleep(0)  # a turn for other greenlets between chunks
        with db.atomic():
            if not PhoneList.select().where(PhoneList.id == list_id).exists():
                raise ServiceError(404, f"Phone list {list_id} not found")
            updated, added = _publish(list_id, import_id)
    except BaseException:
        _discard_import(import_id)
        raise
    return added, updated


def _publish(list_id: int, import_id: int) -> tuple[int, int]:
    staged, visible = Lead.alias("s"), Lead.alias("v")
    updated = (
        Lead.update({f: getattr(staged, f.name) for f in (Lead.name, Lead.lead_id, Lead.priority, Lead.tags,
                                                            Lead.ext_api_vars)})
        .from_(staged)
        .where((staged.import_id == import_id) & (staged.phone_list == Lead.phone_list)
               & (staged.phone == Lead.phone) & Lead.import_id.is_null())
        .execute()
    )
    twin = visible.select(peewee.SQL("1")).where(
        (visible.phone_list == Lead.phone_list) & (visible.phone == Lead.phone) & visible.import_id.is_null())
    Lead.delete().where((Lead.import_id == import_id) & peewee.fn.EXISTS(twin)).execute()
    added = Lead.update(import_id=None).where(Lead.import_id == import_id).execute()
    if added:
        PhoneList.update(list_rows=PhoneList.list_rows + added).where(PhoneList.id == list_id).execute()
    LeadImport.delete().where(LeadImport.id == import_id).execute()
    return updated, added


def _discard_import(import_id: int) -> None:
    while True:
        with db.atomic():
            batch = Lead.select(Lead.id).where(Lead.import_id == import_id).limit(CHUNK * 5)
            if not Lead.delete().where(Lead.id.in_(batch)).execute():
                LeadImport.delete().where(LeadImport.id == import_id).execute()
                return


def _purge_stale_imports(list_id: int) -> None:
    stale = LeadImport.select(LeadImport.id).where(
        (LeadImport.phone_list == list_id) & (LeadImport.started < now() - STALE_IMPORT))
    for (import_id,) in stale.tuples():
        _discard_import(import_id)


def update_lead(account_id: int, list_id: int, phone: str, fields: dict[str, Any]) -> Lead:
    """Partial update of one lead; a new `phone` renumbers it (409 if the list has that number)."""
    key = normalize_phone(phone)
    if key is None:
        raise ServiceError(404, f"Lead {phone} not found in phone list {list_id}")
    errors: list[dict[str, Any]] = []
    clean = check_lead({**fields, "phone": fields.get("phone", key)}, 0, errors)
    if clean is None:
        first = errors[0]
        raise ServiceError(400, f"{first['field']}: {first['reason']}",
                           {"errors": [{"field": e["field"], "reason": e["reason"]} for e in errors]})
    values = dict(zip(LEAD_FIELDS, clean, strict=True))
    with db.atomic():
        get_list(account_id, list_id)
        lead = _visible(list_id, key).first()
        if lead is None:
            raise ServiceError(404, f"Lead {phone} not found in phone list {list_id}")
        if "phone" in fields and values["phone"] != lead.phone:
            if _visible(list_id, values["phone"]).exists():
                raise ServiceError(409, f"phone: {values['phone']} is already in phone list {list_id}")
            lead.phone = values["phone"]
        for name in ("name", "lead_id", "priority", "tags"):
            if name in fields:
                setattr(lead, name, values[name])
        if "ext_api_vars" in fields:
            lead.ext_api_vars = json.loads(values["ext_api_vars"])
        lead.save()
    return lead


def _visible(list_id: int, phone: str) -> peewee.ModelSelect:
    return Lead.select().where((Lead.phone_list == list_id) & (Lead.phone == phone) & Lead.import_id.is_null())


def delete_leads(account_id: int, list_id: int, phones: list[Any]) -> dict[str, int]:
    """Delete by phone; numbers not in the list are skipped (the reply counts what went)."""
    keys: list[str] = []
    errors = []
    for index, phone in enumerate(phones):
        key = normalize_phone(phone)
        if key is None:
            errors.append({"index": index, "field": "phones", "reason": "not a phone number"})
        else:
            keys.append(key)
    if errors:
        raise ServiceError(400, f"phones[{errors[0]['index']}]: not a phone number; nothing was deleted",
                           {"errors": errors})
    if not keys:
        raise ServiceError(400, "phones: no phone numbers given")
    deleted = 0
    with db.atomic():
        get_list(account_id, list_id)
        for chunk in _chunks(sorted(set(keys)), CHUNK):
            deleted += Lead.delete().where(
                (Lead.phone_list == list_id) & Lead.import_id.is_null() & Lead.phone.in_(chunk)
            ).execute()
        if deleted:
            PhoneList.update(list_rows=PhoneList.list_rows - deleted).where(PhoneList.id == list_id).execute()
    return {"deleted": deleted}


# --- reading leads ----------------------------------------------------------------------------

# ext_api_vars is read as its stored text: it is copied into the reply as is, never parsed.
ROW_COLUMNS = (Lead.id, Lead.phone, Lead.lead_id, Lead.priority, Lead.name, Lead.tags,
               peewee.fn.COALESCE(Lead.ext_api_vars, "{}").coerce(False))


def iter_leads(list_id: int, *, limit: int | None = None, offset: int = 0, q: str | None = None,
               chunk: int | None = None) -> Iterator[list[tuple]]:
    """Chunks of (id, phone, lead_id, priority, name, tags, ext_api_vars JSON text) in list order.

    Keyset pagination on (priority desc, id) over the `lead_list_order`
    index. A page after (p, i) is two index seeks, `priority = p AND id > i`
    then `priority < p`, because one OR-ed condition would make the database
    rescan every earlier row of a priority for every page (most lists have a
    single priority). Each page is one short statement: no transaction or
    cursor stays open while the client reads, and memory stays bounded by one
    chunk.
    """
    chunk = chunk or READ_CHUNK
    base = Lead.select(*ROW_COLUMNS).where((Lead.phone_list == list_id) & Lead.import_id.is_null())
    if q:
        match = Lead.name.contains(q)
        digits = q.translate(_PHONE_JUNK)
        if re.fullmatch(r"\+?[0-9]+", digits):
            match = match | Lead.phone.startswith(digits)
        base = base.where(match)
    remaining = limit
    last: tuple[int, int] | None = None
    while remaining is None or remaining > 0:
        size = chunk if remaining is None else min(chunk, remaining)
        if last is None:
            page = base.order_by(Lead.priority.desc(), Lead.id).limit(size)
            rows = list((page.offset(offset) if offset else page).tuples())
        else:
            same = base.where((Lead.priority == last[0]) & (Lead.id > last[1])).order_by(Lead.id).limit(size)
            rows = list(same.tuples())
            if len(rows) < size:
                lower = base.where(Lead.priority < last[0]).order_by(Lead.priority.desc(), Lead.id)
                rows += list(lower.limit(size - len(rows)).tuples())
        if rows:
            yield rows
        if len(rows) < size:
            return
        last = (rows[-1][3], rows[-1][0])
        if remaining is not None:
            remaining -= len(rows)


def parse_csv(data: bytes, lines: list[int] | None = None) -> list[dict[str, Any]]:
    """Rows of a CSV with a header: known columns are lead fields, every other column an ext_api_vars key.

    An `ext_api_vars` column (a JSON object, as `leads export` writes it)
    is the base the other extra columns are added to. Empty cells of the
    optional text fields are null. Blank lines are skipped; `lines`, when
    given, receives the file line number of each row for error messages.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ServiceError(400, "CSV: the file is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        keys = [name.lower() if name.lower() in LEAD_FIELDS else name for name in header]
        if "phone" not in keys:
            raise ServiceError(400, "CSV: the first row must be a header with a phone column")
        known = [(i, k) for i, k in enumerate(keys) if k in LEAD_FIELDS and k != "ext_api_vars"]
        extra = [(i, k) for i, k in enumerate(keys) if k not in LEAD_FIELDS and k]
        ext_at = keys.index("ext_api_vars") if "ext_api_vars" in keys else None
        width = len(keys)
        rows: list[dict[str, Any]] = []
        for cells in reader:
            if not cells:
                continue
            line = reader.line_num
            if len(cells) > width:
                raise ServiceError(400, f"CSV line {line}: {len(cells)} cells but {width} header columns")
            cells += [""] * (width - len(cells))
            row: dict[str, Any] = {k: (cells[i] if cells[i] != "" else None) for i, k in known}
            ext: Any = {}
            if ext_at is not None and cells[ext_at].strip():
                try:
                    ext = json.loads(cells[ext_at])
                except ValueError:
                    ext = cells[ext_at]
            if extra and isinstance(ext, dict):
                for i, k in extra:
                    ext[k] = cells[i]
            row["ext_api_vars"] = ext
            rows.append(row)
            if lines is not None:
                lines.append(line)
    except csv.Error as exc:
        raise ServiceError(400, f"CSV: {exc}") from None
    return rows


def write_csv(list_id: int, out: TextIO) -> int:
    """The list as CSV (the columns `parse_csv` reads back); returns the number of leads."""
    writer = csv.writer(out)
    writer.writerow(LEAD_FIELDS)
    count = 0
    for rows in iter_leads(list_id):
        writer.writerows((phone, name, lead_id, priority, tags, ext)
                         for _id, phone, lead_id, priority, name, tags, ext in rows)
        count += len(rows)
    return count


def lead_record(lead: Lead) -> dict[str, Any]:
    """A lead as the vendor document shows it: `id` is the phone number."""
    return {"id": lead.phone, "phone": lead.phone, "lead_id": lead.lead_id, "priority": lead.priority,
            "name": lead.name, "tags": lead.tags, "ext_api_vars": lead.ext_api_vars or {}}


def lookup(account_id: int, phone: Any, list_type: str | None = None) -> list[dict[str, Any]]:
    """The account's lists that hold `phone`, for do-not-call checks: one query, a (list, phone) seek per list."""
    key = normalize_phone(phone)
    if key is None:
        raise ServiceError(400, "phone: not a phone number (3 to 20 digits, optional +)")
    lists = PhoneList.select(PhoneList.id).where(PhoneList.account == account_id)
    if list_type is not None:
        lists = lists.where(PhoneList.type == list_type)
    query = (Lead.select(Lead, PhoneList).join(PhoneList)
             .where(Lead.phone_list.in_(lists) & (Lead.phone == key) & Lead.import_id.is_null())
             .order_by(PhoneList.id))
    return [{"id": lead.phone_list.id, "name": lead.phone_list.name, "type": lead.phone_list.type,
             "lead": lead_record(lead)} for lead in query]
