"""Sites: a site groups an account's devices, users and queues (vendor doc: `site_id`, a user's `sites`).

What a site changes: outbound calls from a device of the site (a device's `site_id`) go through the
site's `outbound_gateway` instead of the account's, and show the site's caller id (`cid_name`/`cid_num`)
unless the caller's user overrides it (ocnam/ocnum, cnum_by_country; api.freeswitch). A queue's
`site_id` is the site of its calls' events (engine.calls.call_fields); a user's `sites` lists the sites
it works at. Every `site_id` and `sites` entry written must name a site of the account (400), and a
site cannot be deleted while anything names it (409, naming them).

Change notices (engine.store.changes): `site` with the site's id after a create, change or delete;
`device` for the devices whose site changed. Both drop the cached directory and dialplan answers.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import peewee

from engine.errors import ServiceError
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Device, DeviceSite, Queue, Site, User

FIELDS = ("name", "outbound_gateway", "cid_name", "cid_num", "timezone")


def get(account_id: int, site_id: int) -> Site:
    return Site.owned(account_id, site_id)


def list_sites(account_id: int, *, limit: int | None = None, offset: int = 0) -> list[Site]:
    rows = Site.of(account_id).order_by(Site.id)
    if limit:
        rows = rows.limit(limit)
    if offset:
        rows = rows.offset(offset)
    return list(rows)


def check_ids(account_id: int, field: str, ids: Iterable[int | None]) -> None:
    """400 unless every id names a site of the account (inside the transaction that stores them)."""
    wanted = {int(i) for i in ids if i}
    if not wanted:
        return
    found = {s.id for s in Site.select(Site.id).where((Site.account == account_id) & Site.id.in_(sorted(wanted)))}
    missing = sorted(wanted - found)
    if missing:
        raise ServiceError(400, f"{field}: no site with id {', '.join(map(str, missing))}")


def save(account_id: int, site_id: int | None, fields: dict[str, Any]) -> Site:
    """Create (`site_id` None; `name` required) or change a site."""
    pending = Pending()
    try:
        with db.atomic():
            site = Site(account=account_id) if site_id is None else get(account_id, site_id)
            if "name" in fields and Site.name_taken(account_id, fields["name"], site.id):
                raise ServiceError(409, f"name: a site named {fields['name']!r} already exists")
            for name in FIELDS:
                if name in fields:
                    value = fields[name]
                    setattr(site, name, value if name == "name" else value or None)  # "" clears
            site.save(force_insert=site_id is None)
            pending.add("site", account_id, [site.id])
    except peewee.IntegrityError:
        raise ServiceError(409, f"name: a site named {fields.get('name')!r} already exists") from None
    pending.send()
    return site


def users_of(account_id: int, site_id: int) -> list[int]:
    """The users whose `sites` name the site (a JSON list: filtered here, the account's users only)."""
    return [u.id for u in User.select(User.id, User.sites).where(User.account == account_id).order_by(User.id)
            if site_id in (u.sites or [])]


def usage(account_id: int, site_id: int) -> dict[str, list[int]]:
    return {
        "user_ids": users_of(account_id, site_id),
        "device_ids": [d.device_id for d in DeviceSite.select(DeviceSite.device).join(Device).where(
            (DeviceSite.site == site_id) & (Device.account == account_id)).order_by(DeviceSite.device)],
        "queue_ids": [q.id for q in Queue.select(Queue.id).where(
            (Queue.account == account_id) & (Queue.site_id == site_id)).order_by(Queue.id)],
    }


def delete(account_id: int, site_id: int) -> None:
    """Refused (409) while a user's `sites`, a device's or a queue's `site_id` names the site."""
    pending = Pending()
    with db.atomic():
        site = get(account_id, site_id)
        used = usage(account_id, site.id)
        if any(used.values()):
            named = "; ".join(f"{kind.removesuffix('_ids')} {', '.join(map(str, ids))}"
                              for kind, ids in used.items() if ids)
            raise ServiceError(409, f"site {site.id} is in use: {named}", used)
        site.delete_instance()
        pending.add("site", account_id, [site_id])
    pending.send()


def device_sites(device_ids: list[int]) -> dict[int, int]:
    """device id -> its site id, for the device records."""
    if not device_ids:
        return {}
    return {link.device_id: link.site_id
            for link in DeviceSite.select().where(DeviceSite.device.in_(device_ids))}


def set_device_site(account_id: int, device_id: int, site_id: int | None) -> None:
    """Inside the caller's transaction: the device's site (None: none); 400 for a site not of the account."""
    check_ids(account_id, "site_id", [site_id])
    DeviceSite.delete().where(DeviceSite.device == device_id).execute()
    if site_id:
        DeviceSite.insert(device=device_id, site=site_id).execute()
