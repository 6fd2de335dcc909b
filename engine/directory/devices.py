"""Devices: SIP phones that register with FreeSWITCH in the account's domain.

The SIP password is kept only as FreeSWITCH's a1-hash, md5("user:domain:password").
The hash covers the username and the domain, so a new username needs the
password again, and the account's domain is fixed once a device exists.

Change notifications (engine.store.changes), sent after the commit:
`device` — device ids created, updated or deleted; `extension` — when a
device's extension changed.
"""
from __future__ import annotations

from typing import Any

import peewee

from engine.directory import extensions, security
from engine.errors import ServiceError
from engine.store import fastq
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Account, Device, DeviceSite, User

SIP_USERNAME_REQUIRES_PASSWORD = "sip_password is required when sip_username changes"  # noqa: S105


def get_device(account_id: int, device_id: int) -> Device:
    return Device.owned(account_id, device_id)


def account_has_devices(account_id: int) -> bool:
    """Whether the account's domain is frozen: every device's a1-hash depends on it."""
    return Device.select().where(Device.account == account_id).exists()


def _check_username(account_id: int, username: str, exclude_id: int | None) -> None:
    # Case-insensitively: two phones told apart only by case are a provisioning accident.
    query = Device.select().where(
        (Device.account == account_id) & (peewee.fn.LOWER(Device.sip_username) == username.lower()))
    if exclude_id is not None:
        query = query.where(Device.id != exclude_id)
    if query.exists():
        raise ServiceError(409, f"sip_username: {username} is already taken")


def _apply(device: Device, account_id: int, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if name in ("sip_password", "extension", "site_id"):
            continue
        if name == "user_id":
            if value is not None and not User.select().where(
                (User.id == value) & (User.account == account_id)
            ).exists():
                raise ServiceError(400, f"user_id: no user with id {value}")
            device.user = value
        else:
            setattr(device, name, value)
    if "sip_password" in fields:
        domain = Account.select(Account.domain).where(Account.id == account_id).scalar()
        device.sip_a1_hash = security.sip_a1_hash(device.sip_username, domain, fields["sip_password"])


def _save(account_id: int, device: Device, fields: dict[str, Any], pending: Pending) -> None:
    _check_username(account_id, device.sip_username, device.id)
    _apply(device, account_id, fields)
    device.save()
    if "site_id" in fields:
        from engine.directory import sites

        sites.set_device_site(account_id, device.id, fields["site_id"])
    pending.add("device", account_id, [device.id])
    if "extension" in fields:
        pending.add("extension", account_id,
                    extensions.set_device_extension(account_id, device.id, fields["extension"]))


def create_device(account_id: int, fields: dict[str, Any]) -> Device:
    pending = Pending()
    try:
        with db.atomic():
            device = Device(account=account_id, sip_username=fields["sip_username"])
            _save(account_id, device, fields, pending)
    except peewee.IntegrityError:
        raise ServiceError(409, f"sip_username: {fields['sip_username']} is already taken") from None
    pending.send()
    return device


def update_device(account_id: int, device_id: int, fields: dict[str, Any]) -> Device:
    pending = Pending()
    try:
        with db.atomic():
            device = get_device(account_id, device_id)
            renamed = "sip_username" in fields and fields["sip_username"] != device.sip_username
            if renamed and "sip_password" not in fields:
                raise ServiceError(400, SIP_USERNAME_REQUIRES_PASSWORD)
            if "sip_username" in fields:
                device.sip_username = fields["sip_username"]
            _save(account_id, device, fields, pending)
    except peewee.IntegrityError:
        raise ServiceError(409, f"sip_username: {fields.get('sip_username')} is already taken") from None
    pending.send()
    return device


def delete_device(account_id: int, device_id: int) -> None:
    """Delete a device and the extensions that route to it; an agent checked in with it is checked out
    (agent:checkout, queue:leave), in the same transaction."""
    from engine.callcenter import agents  # agents builds on devices

    pending = Pending()
    with db.atomic():
        device = get_device(account_id, device_id)
        agents.release_device(account_id, device.id, pending)
        extensions.delete_for("device", [device.id], pending, account_id)
        DeviceSite.delete().where(DeviceSite.device == device.id).execute()
        device.delete_instance()
        pending.add("device", account_id, [device_id])
    pending.send()


def devices_of_users(user_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each user's devices as the user record shows them; one query per 5,000 users."""
    out: dict[int, list[dict[str, Any]]] = {u: [] for u in user_ids}
    for chunk in extensions.chunks(user_ids):
        for device_id, user_id, ring, delay, timeout, name in fastq.select("devices_of_users", lambda some: (
            Device.select(Device.id, Device.user, Device.ring, Device.delay, Device.timeout, Device.name)
            .where(Device.user.in_(some)).order_by(Device.user, Device.id)
        ), chunk):
            out[user_id].append({"device_id": device_id, "ring": ring, "delay": delay, "timeout": timeout,
                                 "name": name})
    return out
