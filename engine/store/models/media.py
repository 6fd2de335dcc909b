"""The media library: audio files converted for FreeSWITCH, per account (engine.media)."""
from __future__ import annotations

import peewee

from engine.store.models.account import Account
from engine.store.models.base import AccountScoped, now


class Media(AccountScoped):
    """One converted audio file. `file` is its name inside the account's folder of the media directory;
    `host` is the box whose disk holds it (DESIGN.md: media are files on the FreeSWITCH box)."""
    label = "Media"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="media", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    file = peewee.CharField(max_length=100)
    host = peewee.CharField(max_length=253)
    rate = peewee.IntegerField()
    duration_ms = peewee.IntegerField()
    size = peewee.IntegerField()
    source_name = peewee.CharField(max_length=255, default="")
    source_format = peewee.CharField(max_length=40, default="")
    source_rate = peewee.IntegerField(default=0)
    source_channels = peewee.IntegerField(default=0)
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "name"), True),)
