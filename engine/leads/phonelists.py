"""The phone-list service: lists, single-lead edits and do-not-call lookups, for the API and the CLI.

What a caller may do to a list and its leads, and the 404/409 answers it
gets, live here; the rules of a lead (`validation`), bulk imports (`imports`),
streamed reads (`streaming`) and the CSV form (`csvformat`) change for their
own reasons in their own modules.
"""
from __future__ import annotations

import json
from typing import Any

import peewee

from engine.errors import ServiceError
from engine.leads.numbers import phone_key
from engine.leads.validation import LEAD_FIELDS, check_lead, normalize_phone
from engine.store.db import db
from engine.store.models import Account, Lead, LeadImport, PhoneList

DELETE_CHUNK = 5000  # phones per DELETE statement


def get_list(account_id: int | None, list_id: int) -> PhoneList:
    """The list, if it is the account's (`account_id` None: any account, for the CLI)."""
    query = PhoneList.select().where(PhoneList.id == list_id)
    if account_id is not None:
        query = query.where(PhoneList.account == account_id)
    plist = query.first()
    if plist is None:
        raise ServiceError(404, f"Phone list {list_id} not found")
    return plist


def account_country(account_id: int) -> str | None:
    """The account's `country`: the default region of the numbers its leads are written in."""
    return Account.select(Account.country).where(Account.id == account_id).scalar()


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
        plist = get_list(account_id, list_id)
        country = account_country(plist.account_id)
        lead = _visible(list_id, key, phone_key(key, country)).order_by(Lead.id).first()
        if lead is None:
            raise ServiceError(404, f"Lead {phone} not found in phone list {list_id}")
        if "phone" in fields and values["phone"] != lead.phone:
            new_key = phone_key(values["phone"], country)
            if _visible(list_id, values["phone"], new_key).where(Lead.id != lead.id).exists():
                raise ServiceError(409, f"phone: {values['phone']} is already in phone list {list_id}")
            lead.phone, lead.phone_key = values["phone"], new_key
        for name in ("name", "lead_id", "priority", "tags"):
            if name in fields:
                setattr(lead, name, values[name])
        if "ext_api_vars" in fields:
            lead.ext_api_vars = json.loads(values["ext_api_vars"])
        if lead.ext_api_vars is None:  # JSON null, stored as its text (the column is NOT NULL)
            lead.ext_api_vars = peewee.Value("null", converter=False)
        lead.save()
        if isinstance(lead.ext_api_vars, peewee.Value):
            lead.ext_api_vars = None
    return lead


def holding(lists: Any, keys: list[str], phones: list[str]) -> peewee.SelectQuery:
    """Ids of the visible leads of `lists` (an id or a subquery of ids) holding one of these numbers: by
    canonical key, or stored in one of these very forms (a key written under another account country).

    A UNION of two index seeks (`lead_list_key`, `lead_list_phone`): the same condition OR-ed in one
    WHERE makes SQLite scan the whole list.
    """
    in_lists = Lead.phone_list.in_(lists) if isinstance(lists, peewee.SelectQuery) else Lead.phone_list == lists
    visible = in_lists & Lead.import_id.is_null()
    return (Lead.select(Lead.id).where(visible & Lead.phone_key.in_(keys))
            | Lead.select(Lead.id).where(visible & Lead.phone.in_(phones)))


def _visible(list_id: int, phone: str, key: str) -> peewee.ModelSelect:
    """The list's visible leads holding the number: by canonical key, or stored in this very form."""
    return Lead.select().where(Lead.id.in_(holding(list_id, [key], [phone])))


def delete_leads(account_id: int, list_id: int, phones: list[Any]) -> dict[str, int]:
    """Delete by number (every lead of the list holding it, in any form); numbers not in the list are
    skipped (the reply counts what went)."""
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
        plist = get_list(account_id, list_id)
        country = account_country(plist.account_id)
        unique = sorted(set(keys))
        for start in range(0, len(unique), DELETE_CHUNK):
            chunk = unique[start:start + DELETE_CHUNK]
            canonical = sorted({phone_key(phone, country) for phone in chunk})
            deleted += Lead.delete().where(Lead.id.in_(holding(list_id, canonical, chunk))).execute()
        if deleted:
            PhoneList.update(list_rows=PhoneList.list_rows - deleted).where(PhoneList.id == list_id).execute()
    return {"deleted": deleted}


def lead_record(lead: Lead) -> dict[str, Any]:
    """A lead as the vendor document shows it: `id` is the phone number."""
    return {"id": lead.phone, "phone": lead.phone, "lead_id": lead.lead_id, "priority": lead.priority,
            "name": lead.name, "tags": lead.tags, "ext_api_vars": lead.ext_api_vars}  # null stays null


def lookup(account_id: int, phone: Any, list_type: str | None = None) -> list[dict[str, Any]]:
    """The account's lists that hold `phone` in any form, for do-not-call checks.

    One query: a (list, key) seek per list of the account, the key being the
    canonical number with the account's country as the default region; a lead
    stored in this very form matches too. A leading space before the digits is
    a `+` that a query string decoded (`?phone=+1212...`): the number is looked
    up both with and without it. A list holding the number in several leads
    (kept from before canonical numbers) is listed once per lead.
    """
    key = normalize_phone(phone)
    if key is None:
        raise ServiceError(400, "phone: not a phone number (3 to 20 digits, optional +)")
    forms = {key}
    if isinstance(phone, str) and phone[:1].isspace() and phone.strip()[:1].isdigit() and normalize_phone("+" + key):
        forms.add("+" + key)
    country = account_country(account_id)
    canonical = sorted({phone_key(form, country) for form in forms})
    lists = PhoneList.select(PhoneList.id).where(PhoneList.account == account_id)
    if list_type is not None:
        lists = lists.where(PhoneList.type == list_type)
    query = (Lead.select(Lead, PhoneList).join(PhoneList)
             .where(Lead.id.in_(holding(lists, canonical, sorted(forms))))
             .order_by(PhoneList.id, Lead.id))
    return [{"id": lead.phone_list.id, "name": lead.phone_list.name, "type": lead.phone_list.type,
             "lead": lead_record(lead)} for lead in query]
