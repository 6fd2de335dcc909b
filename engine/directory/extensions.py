"""Extensions and DIDs: the numbers that route to users, devices and queues.

An extension is dialled inside the account (its dialplan context is the
account's domain), so its number is unique per account across every target
type. A DID is a public number delivered by a carrier; FreeSWITCH looks it up
in the `public` context before it knows the account, so a DID is unique across
the installation and stored in E.164 form.

Users, devices and queues show their numbers as read-only fields; the loaders
here fill them for a whole page of records in a constant number of queries.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import peewee
import phonenumbers

from engine.errors import ServiceError
from engine.store import fastq
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Account, Device, Did, Extension, Queue, User

EXTENSION_TARGETS = ("user", "device", "queue")
DID_TARGETS = ("user", "queue")
EXTENSION_NUMBER = re.compile(r"^[0-9*#]{2,15}$")
# `***<digits>` is the agents' check-in code (DESIGN.md): the dialplan answers it before any extension.
RESERVED_PREFIX = "***"
_TARGET_MODELS: dict[str, type[peewee.Model]] = {"user": User, "device": Device, "queue": Queue}
_CHUNK = 5000  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits


def chunks(ids: list[int]) -> Iterator[list[int]]:
    ids = sorted(set(ids))
    for i in range(0, len(ids), _CHUNK):
        yield ids[i:i + _CHUNK]


# --- numbers ------------------------------------------------------------------------------------


def extension_problem(number: str) -> str | None:
    """Why `number` cannot be an extension, or None."""
    if not EXTENSION_NUMBER.match(number):
        return "an extension is 2 to 15 of the characters 0-9 * #"
    if number.startswith(RESERVED_PREFIX):
        return f"numbers starting with {RESERVED_PREFIX} are reserved for agents' check-in codes"
    return None


def normalise_did(number: str, country: str) -> str:
    """A DID in E.164 form; national numbers are read in the account's `country`.

    The dialplan lookup of an incoming call must normalise the carrier's
    destination number with this same function.
    """
    text = re.sub(r"[\s().-]", "", number or "")
    if not re.fullmatch(r"\+?[0-9]{3,17}", text):
        raise ValueError("a DID is a phone number: digits with an optional leading +")
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else (country or "US").upper())
    except phonenumbers.NumberParseException:
        raise ValueError(f"{number!r} is not a phone number") from None
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"{number!r} is not a possible phone number for {country or 'US'}"
                         " (give it in international form, +<country code><number>)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# --- batch loaders for read-only fields ---------------------------------------------------------


def numbers_for(target_type: str, ids: list[int]) -> dict[int, list[str]]:
    """The extension numbers routing to each of `ids` (of `target_type`), sorted; one query per 5,000 ids."""
    out: dict[int, list[str]] = {i: [] for i in ids}
    for chunk in chunks(ids):
        for number, target_id in fastq.select("numbers_for", lambda kind, some: (
            Extension.select(Extension.number, Extension.target_id)
            .where((Extension.target_type == kind) & Extension.target_id.in_(some))
            .order_by(Extension.target_id, Extension.number)
        ), target_type, chunk):
            out[target_id].append(number)
    return out


def dids_for(target_type: str, ids: list[int]) -> dict[int, list[str]]:
    """The DIDs routing to each of `ids` (of `target_type`), sorted."""
    out: dict[int, list[str]] = {i: [] for i in ids}
    for chunk in chunks(ids):
        for number, target_id in fastq.select("dids_for", lambda kind, some: (
            Did.select(Did.number, Did.target_id)
            .where((Did.target_type == kind) & Did.target_id.in_(some))
            .order_by(Did.target_id, Did.number)
        ), target_type, chunk):
            out[target_id].append(number)
    return out


def routes_for(target_type: str, ids: list[int]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """`numbers_for` and `dids_for` together, in one query (a user record needs both, on every read)."""
    numbers: dict[int, list[str]] = {i: [] for i in ids}
    dids: dict[int, list[str]] = {i: [] for i in ids}
    for chunk in chunks(ids):
        for is_did, number, target_id in fastq.select("routes_for", lambda kind, some: (
            Extension.select(peewee.SQL("0"), Extension.number, Extension.target_id)
            .where((Extension.target_type == kind) & Extension.target_id.in_(some))
            + Did.select(peewee.SQL("1"), Did.number, Did.target_id)
            .where((Did.target_type == kind) & Did.target_id.in_(some))
        ).order_by(peewee.SQL("1"), peewee.SQL("3"), peewee.SQL("2")), target_type, chunk):
            (dids if is_did else numbers)[target_id].append(number)
    return numbers, dids


def delete_for(target_type: str, ids: list[int], pending: Pending | None = None,
               account_id: int | None = None) -> int:
    """Remove the extensions and DIDs routing to deleted targets; call inside the deleting transaction.

    Targets are plain ids (one column serves three tables), so no foreign key
    does this for us. Returns how many rows went; with `pending`, the ids that
    went are noticed (`extension`, `did`) for `account_id` after the commit.
    """
    if not db.obj.in_transaction():
        raise RuntimeError("delete_for() must run inside the transaction that deletes the targets")
    removed = 0
    for chunk in chunks(ids):
        if pending is not None and account_id is not None:
            pending.add("extension", account_id, [e.id for e in Extension.select(Extension.id).where(
                (Extension.target_type == target_type) & Extension.target_id.in_(chunk))])
            pending.add("did", account_id, [d.id for d in Did.select(Did.id).where(
                (Did.target_type == target_type) & Did.target_id.in_(chunk))])
        removed += Extension.delete().where(
            (Extension.target_type == target_type) & Extension.target_id.in_(chunk)).execute()
        removed += Did.delete().where((Did.target_type == target_type) & Did.target_id.in_(chunk)).execute()
    return removed


# --- targets ------------------------------------------------------------------------------------


def check_target(account_id: int, target_type: str, target_id: int, allowed: tuple[str, ...]) -> None:
    """400 naming the field when the target type is not allowed or the target is not in the account."""
    if target_type not in allowed:
        raise ServiceError(400, f"target_type: must be one of {', '.join(allowed)}")
    model = _TARGET_MODELS[target_type]
    if not model.select().where((model.id == target_id) & (model.account == account_id)).exists():
        raise ServiceError(400, f"target_id: no {target_type} with id {target_id}")


# --- extensions ---------------------------------------------------------------------------------


def get_extension(account_id: int, extension_id: int) -> Extension:
    return Extension.owned(account_id, extension_id)


def _extension_taken(account_id: int, number: str, exclude_id: int | None = None) -> None:
    query = Extension.select().where((Extension.account == account_id) & (Extension.number == number))
    if exclude_id is not None:
        query = query.where(Extension.id != exclude_id)
    if query.exists():
        raise ServiceError(409, f"number: extension {number} is already in use")


def save_extension(account_id: int, extension_id: int | None, fields: dict[str, Any]) -> Extension:
    """Create (`extension_id` None) or change an extension; only the given fields change."""
    pending = Pending()
    try:
        with db.atomic():
            ext = (Extension(account=account_id) if extension_id is None
                   else get_extension(account_id, extension_id))
            for name, value in fields.items():
                setattr(ext, name, value)
            check_target(account_id, ext.target_type, ext.target_id, EXTENSION_TARGETS)
            _extension_taken(account_id, ext.number, ext.id)
            ext.save()
            pending.add("extension", account_id, [ext.id])
    except peewee.IntegrityError:
        raise ServiceError(409, f"number: extension {fields.get('number')} is already in use") from None
    pending.send()
    return ext


def delete_extension(account_id: int, extension_id: int) -> None:
    pending = Pending()
    with db.atomic():
        get_extension(account_id, extension_id).delete_instance()
        pending.add("extension", account_id, [extension_id])
    pending.send()


def set_device_extension(account_id: int, device_id: int, number: str | None) -> list[int]:
    """The device's own extension: renumber its first one, create one, or (None) remove them all.

    Runs inside the device's transaction; 409 when the number routes
    elsewhere. Returns the ids of the extensions changed.
    """
    current = list(Extension.select().where(
        (Extension.account == account_id) & (Extension.target_type == "device")
        & (Extension.target_id == device_id)).order_by(Extension.id))
    if number is None:
        ids = [e.id for e in current]
        if ids:
            Extension.delete().where(Extension.id.in_(ids)).execute()
        return ids
    if current and current[0].number == number:
        return []
    _extension_taken(account_id, number, current[0].id if current else None)
    if current:
        Extension.update(number=number).where(Extension.id == current[0].id).execute()
        return [current[0].id]
    return [Extension.create(account=account_id, number=number, target_type="device", target_id=device_id).id]


# --- DIDs -----------------------------------------------------------------------------------------


def get_did(account_id: int, did_id: int) -> Did:
    return Did.owned(account_id, did_id)


def save_did(account_id: int, did_id: int | None, fields: dict[str, Any]) -> Did:
    """Create or change a DID; `number` is normalised to E.164 with the account's country."""
    pending = Pending()
    fields = dict(fields)
    if "number" in fields:
        country = Account.select(Account.country).where(Account.id == account_id).scalar()
        try:
            fields["number"] = normalise_did(fields["number"], country)
        except ValueError as exc:
            raise ServiceError(400, f"number: {exc}") from None
    try:
        with db.atomic():
            did = Did(account=account_id) if did_id is None else get_did(account_id, did_id)
            for name, value in fields.items():
                setattr(did, name, value)
            check_target(account_id, did.target_type, did.target_id, DID_TARGETS)
            # DIDs are unique across accounts: the public context is looked up before any account is known.
            taken = Did.select().where(Did.number == did.number)
            if did.id is not None:
                taken = taken.where(Did.id != did.id)
            if taken.exists():
                raise ServiceError(409, f"number: DID {did.number} is already in use")
            did.save()
            pending.add("did", account_id, [did.id])
    except peewee.IntegrityError:
        raise ServiceError(409, f"number: DID {fields.get('number')} is already in use") from None
    pending.send()
    return did


def delete_did(account_id: int, did_id: int) -> None:
    pending = Pending()
    with db.atomic():
        get_did(account_id, did_id).delete_instance()
        pending.add("did", account_id, [did_id])
    pending.send()
