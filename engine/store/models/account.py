"""Accounts, users and their credentials."""
from __future__ import annotations

import peewee

from engine.store.db import JSONField
from engine.store.models.base import AccountScoped, BaseModel, now

# Account defaults that a user may override (vendor doc: "Overrides (of account defaults)").
ACCOUNT_DEFAULTS = {
    "session_ttl": 28800,
    "max_snooze": 3,
    "wrap_up_time": 10,
    "no_answer_delay_time": 10,
    "reject_delay_time": 10,
    "busy_delay_time": 10,
    "max_no_answer": 3,
}


class Account(BaseModel):
    id = peewee.AutoField()
    name = peewee.CharField(max_length=200)
    # FreeSWITCH domain: unique, lower-case, fixed once a device exists (DESIGN.md).
    domain = peewee.CharField(max_length=253, unique=True)
    country = peewee.CharField(max_length=2, default="US")
    timezone = peewee.CharField(max_length=64, default="UTC")
    event_push_url = peewee.CharField(max_length=2000, null=True)
    webhook_secret_enc = peewee.TextField(null=True)
    # Events per webhook request: 1 is the vendor's one-event body; more sends batches (engine.events.sender).
    event_push_batch = peewee.IntegerField(default=1, constraints=[peewee.SQL("DEFAULT 1")])
    outbound_gateway = peewee.CharField(max_length=200, null=True)
    session_ttl = peewee.IntegerField(default=ACCOUNT_DEFAULTS["session_ttl"])
    max_snooze = peewee.IntegerField(default=ACCOUNT_DEFAULTS["max_snooze"])
    wrap_up_time = peewee.IntegerField(default=ACCOUNT_DEFAULTS["wrap_up_time"])
    no_answer_delay_time = peewee.IntegerField(default=ACCOUNT_DEFAULTS["no_answer_delay_time"])
    reject_delay_time = peewee.IntegerField(default=ACCOUNT_DEFAULTS["reject_delay_time"])
    busy_delay_time = peewee.IntegerField(default=ACCOUNT_DEFAULTS["busy_delay_time"])
    max_no_answer = peewee.IntegerField(default=ACCOUNT_DEFAULTS["max_no_answer"])
    ts = peewee.IntegerField(default=now)


class PermissionGroup(AccountScoped):
    """A named set of module permissions; `permissions` maps module -> bool."""

    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="pgroups", on_delete="CASCADE")
    name = peewee.CharField(max_length=200)
    permissions = JSONField(default=dict)

    class Meta:
        indexes = ((("account", "name"), True),)


class User(AccountScoped):
    id = peewee.AutoField()
    account = peewee.ForeignKeyField(Account, backref="users", on_delete="CASCADE")
    active = peewee.IntegerField(default=1)
    is_admin = peewee.BooleanField(default=False)
    is_agent = peewee.BooleanField(default=False)
    in_reports = peewee.BooleanField(default=True)
    name = peewee.CharField(max_length=200)
    username = peewee.CharField(max_length=100)
    # Lower-cased copies keep uniqueness and search case-insensitive on every database.
    username_key = peewee.CharField(max_length=100, unique=True)
    email = peewee.CharField(max_length=254)
    email_key = peewee.CharField(max_length=254, unique=True)
    password_hash = peewee.CharField(max_length=255)
    timezone = peewee.CharField(max_length=64, default="UTC")
    sites = JSONField(default=list)
    groups = JSONField(default=list)
    intercept_groups = JSONField(default=list)
    intercept_other_groups = JSONField(default=list)
    geo_limit = peewee.CharField(max_length=400, default="")
    follow_me = peewee.IntegerField(default=0)
    last_login = peewee.IntegerField(null=True)
    ts = peewee.IntegerField(default=now)
    dr_id = peewee.IntegerField(null=True)
    call_timeout = peewee.IntegerField(null=True)
    vm_id = peewee.IntegerField(null=True)
    pgroup = peewee.ForeignKeyField(PermissionGroup, null=True, backref="users", on_delete="SET NULL")
    permissions = JSONField(default=dict)
    override_device = peewee.BooleanField(default=False)
    # supervision (engine.calls.supervision): nobody may listen to, whisper to or barge into this user's calls
    listen_protected = peewee.BooleanField(default=False)
    device_overrides = JSONField(default=dict)
    api_ip_ranges = JSONField(default=list)
    session_ttl = peewee.IntegerField(null=True)
    max_snooze = peewee.IntegerField(null=True)
    wrap_up_time = peewee.IntegerField(null=True)
    no_answer_delay_time = peewee.IntegerField(null=True)
    reject_delay_time = peewee.IntegerField(null=True)
    busy_delay_time = peewee.IntegerField(null=True)
    max_no_answer = peewee.IntegerField(null=True)

    def effective(self, setting: str, account: Account) -> int:
        """A user's value for an account default it may override."""
        value = getattr(self, setting)
        return getattr(account, setting) if value is None else value


class ApiKey(BaseModel):
    """An API key: only the SHA-256 digest of the secret part is stored."""

    id = peewee.AutoField()
    user = peewee.ForeignKeyField(User, backref="api_keys", on_delete="CASCADE")
    prefix = peewee.CharField(max_length=32, unique=True)
    digest = peewee.CharField(max_length=64)
    ts = peewee.IntegerField(default=now)
    last_used = peewee.IntegerField(null=True)


class UserSession(BaseModel):
    """A login session; the cookie carries the token, the table its SHA-256 digest."""

    id = peewee.AutoField()
    digest = peewee.CharField(max_length=64, unique=True)
    user = peewee.ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    ts = peewee.IntegerField(default=now)
    expires = peewee.IntegerField(index=True)


class LoginFailure(BaseModel):
    """Failed logins in a row for one username, for the lock-out rule."""

    username_key = peewee.CharField(max_length=100, primary_key=True)
    failures = peewee.IntegerField(default=0)
    first_failure = peewee.IntegerField(default=now)
    locked_until = peewee.IntegerField(default=0)
