"""Lead validation and decoding: what a storable lead is, checked fast enough for 100,000-row batches.

The rules of a lead (phone form, text limits, priority range, ext_api_vars as
a JSON object) change apart from how leads are stored or read, and every entry
point (the API's JSON and CSV bodies, the command line, single-lead updates)
must apply the same ones. Leads arrive by the hundred thousand from CRMs, so
rows are checked by a hand-written loop over plain dicts (several times faster
than a pydantic model per row, see bench/RESULTS.md). A JSON array of leads is
decoded by msgspec into untracked structs (`decode_leads`): the standard
decoder's 700,000 dicts and lists per 100,000 leads cost as much again in
cyclic garbage collection as in decoding.
"""
from __future__ import annotations

import json
import re
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

import msgspec

from engine.errors import ServiceError

MAX_NAME, MAX_LEAD_ID, MAX_TAGS = 200, 100, 500
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
LEAD_FIELDS = ("phone", "name", "lead_id", "priority", "tags", "ext_api_vars")
_MISSING = object()  # a lead without ext_api_vars (as opposed to an explicit null)

PHONE_JUNK = str.maketrans("", "", " -.()")  # formatting characters dropped from a phone number
_PHONE = re.compile(r"\+?[0-9]{3,20}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

LeadRow = tuple[str, str | None, str | None, int, str | None, str]


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
    phone = value.translate(PHONE_JUNK)
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
    """The JSON text to store: the object exactly as sent, keys in the client's order.

    An explicit `null` is kept (the vendor document returns `"ext_api_vars": null`); a missing or empty
    value is `{}`.
    """
    if value is None:
        return "null", None
    if value is _MISSING or value == "" or (type(value) is dict and not value):
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
    ext, problem = _ext_api_vars(get("ext_api_vars", _MISSING))
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
    ext_api_vars: msgspec.Raw = msgspec.Raw(b"{}")  # missing: {}; an explicit null stays null


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
            return "null" if value is None else None
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
