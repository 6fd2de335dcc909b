"""Phone lists and their leads: dialer leads, do-not-call lists, special numbers."""
from __future__ import annotations

import peewee

from engine.store.db import JSONField
from engine.store.models.account import Account
from engine.store.models.base import AccountScoped, BaseModel, now

LIST_TYPES = ("leads", "dnc", "special")


class PhoneList(AccountScoped):
    """A named list of leads. `list_rows` is a counter kept in the transaction of every lead write.

    Names are unique per account, case-insensitively (`name_key`), so a CRM can
    find its list by name without ambiguity.
    """

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="phone_lists", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    name_key = peewee.CharField(max_length=200)
    type = peewee.CharField(max_length=10, default="leads")
    list_rows = peewee.IntegerField(default=0)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "name_key"), True),)


class LeadImport(BaseModel):
    """A large batch being written in chunks; its rows stay hidden until it is published.

    Rows of an import that never published (the process died) are purged by
    the next large import once the import is older than `engine.leads.imports.STALE_IMPORT`.
    """

    id = peewee.AutoField()
    phone_list = peewee.ForeignKeyField(PhoneList, backref="imports", on_delete="CASCADE")
    started = peewee.IntegerField(default=now)


class Lead(BaseModel):
    """One phone number of a list. `id` orders leads of equal priority by insertion.

    `import_id` is set while the row belongs to an unpublished large import:
    such rows are invisible everywhere, and the unique index on (list, phone)
    covers visible rows only, so an import can stage a new version of an
    existing lead next to it.

    `phone` is the number as given (normalised); `phone_key` is its canonical
    form (E.164 with the account's country as the default region, else its
    digits: `engine.leads.numbers`), which do-not-call lookups and per-list
    uniqueness compare, through `lead_list_key` (visible rows: one seek per
    list of the account, rather than an index on the key alone that every
    import of millions of rows would also have to maintain). That index is
    not unique: two leads that an older release kept apart (`2125550100` and
    `+12125550100`) both stay, and both are found; writes never add a second.
    """

    id = peewee.AutoField()
    # no index of its own: lead_list_order starts with this column
    phone_list = peewee.ForeignKeyField(PhoneList, backref="leads", on_delete="CASCADE", index=False)
    phone = peewee.CharField(max_length=21)
    phone_key = peewee.CharField(max_length=24, null=True)  # always written; null only before migration 0004
    name = peewee.CharField(max_length=200, null=True)
    lead_id = peewee.CharField(max_length=100, null=True)
    priority = peewee.IntegerField(default=0)
    tags = peewee.CharField(max_length=500, null=True)
    ext_api_vars = JSONField(default=dict)
    import_id = peewee.IntegerField(null=True)


Lead.add_index(Lead.index(Lead.phone_list, Lead.phone, unique=True, where=Lead.import_id.is_null(),
                          name="lead_list_phone"))
Lead.add_index(Lead.index(Lead.phone_list, Lead.phone_key, where=Lead.import_id.is_null(), name="lead_list_key"))
Lead.add_index(Lead.index(Lead.phone_list, Lead.priority.desc(), Lead.id, name="lead_list_order"))
Lead.add_index(Lead.index(Lead.import_id, where=Lead.import_id.is_null(False), name="lead_by_import"))
