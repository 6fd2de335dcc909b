"""Sites (engine.directory.sites): a site groups devices, users and queues of an account, and gives the
outbound calls of its devices their gateway and default caller id."""
from __future__ import annotations

import peewee

from engine.store.models.account import Account
from engine.store.models.base import AccountScoped, BaseModel, now
from engine.store.models.callcenter import Device


class Site(AccountScoped):
    """A place of the account (an office, a branch): `outbound_gateway` and `cid_name`/`cid_num` replace the
    account's outbound gateway and the device's caller id on outbound calls of the site's devices."""
    label = "Site"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="sites", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    outbound_gateway = peewee.CharField(max_length=64, null=True)
    cid_name = peewee.CharField(max_length=100, null=True)
    cid_num = peewee.CharField(max_length=32, null=True)
    timezone = peewee.CharField(max_length=64, null=True)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "name"), True),)


class DeviceSite(BaseModel):
    """A device's `site_id` (kept beside the device table, which predates sites: no migration of it)."""

    device = peewee.ForeignKeyField(Device, primary_key=True, backref="site_link", on_delete="CASCADE")
    site = peewee.ForeignKeyField(Site, backref="device_links", on_delete="CASCADE")
