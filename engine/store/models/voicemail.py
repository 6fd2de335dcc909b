"""Voicemail boxes (engine.voicemail): what a user's `vm_id` names."""
from __future__ import annotations

import peewee

from engine.store.models.account import Account
from engine.store.models.base import AccountScoped, now


class VoicemailBox(AccountScoped):
    """A box of FreeSWITCH's mod_voicemail, served through our directory as user `vm-<id>` of the account's
    domain. The PIN is kept only as mod_voicemail's `vm-a1-hash` (md5 of `vm-<id>:<domain>:<pin>`)."""
    label = "Voicemail box"

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="voicemail_boxes", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    pin_a1_hash = peewee.CharField(max_length=32, default="")
    greeting_id = peewee.IntegerField(null=True)  # a media played instead of mod_voicemail's spoken greeting
    ts = peewee.IntegerField(default=now)

    class Meta:
        indexes = ((("account", "name"), True),)
