"""Users: create, update, delete, log in. Every write is one transaction.

Rights (README, Permissions): every write names its `Actor`. A non-admin may
only create, change, revoke or delete users whose rights (admin flag, and the
permission modules they hold, from their group and their own overrides) are
within its own, may not leave a user with more than it has, and never touches
an admin; only an admin makes an admin. The last active admin of an account
cannot be deleted, deactivated or demoted (409). The command line acts as
`SYSTEM`, which may do anything but break that last rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee

from engine.callcenter import queues
from engine.directory import extensions, geo, security
from engine.errors import ServiceError
from engine.store import fastq
from engine.store.changes import Pending
from engine.store.db import db, is_sqlite
from engine.store.models import Account, ApiKey, Device, LoginFailure, PermissionGroup, User, UserSession, now

LOCK_AFTER = 5  # failed logins in a row ...
LOCK_WINDOW = 15 * 60  # ... within this many seconds lock the username for LOCK_WINDOW
DEVICE_OVERRIDE_FIELDS = (
    "ecnam", "ecnum", "ocnam", "ocnum", "user_record", "cnum_by_country", "blf_ext",
    "rec_inb_ext", "rec_out_ext", "rec_inb_int", "rec_out_int",
)
# The complete list of permission modules (DESIGN.md).
MODULES = (
    "call_center_api", "users", "phone_lists", "queues", "agents", "devices",
    "pauses", "timegroups", "settings", "events", "reports", "media", "voicemail", "supervision", "recordings",
    "campaigns", "stats", "wallboards",
)
# Limits on a user that a non-admin may not lift from itself (someone with more rights set them).
# `listen_protected` too: an agent may not shield itself from its supervisors (engine.calls.supervision).
SELF_LOCKED_FIELDS = ("api_ip_ranges", "geo_limit", "listen_protected")
# Usernames and e-mails are unique across the installation (the username is the login name), so the
# user that holds one may be another account's: the messages say nothing about it.
TAKEN = {"username": "username: already taken", "email": "email: already taken"}
TAKEN_EITHER = "username or email: already taken"


# --- rights ----------------------------------------------------------------------------------------


def effective_permissions(user: User, group: PermissionGroup | None) -> frozenset[str]:
    """Admins have all; otherwise the group's grants, then the user's own overrides."""
    if user.is_admin:
        return frozenset(MODULES)
    return _permissions_of(group.permissions if group else None, user.permissions)


def _permissions_of(group_permissions: dict[str, bool] | None, own: dict[str, bool] | None) -> frozenset[str]:
    granted = {m for m, on in (group_permissions or {}).items() if on}
    for module, on in (own or {}).items():
        (granted.add if on else granted.discard)(module)
    return frozenset(granted & set(MODULES))


@dataclass(frozen=True)
class Actor:
    """Who asks for a change: an API caller (its user id and effective rights), or `SYSTEM` (the CLI)."""

    user_id: int | None
    is_admin: bool
    permissions: frozenset[str]


SYSTEM = Actor(None, True, frozenset(MODULES))


@dataclass(frozen=True)
class Rights:
    is_admin: bool
    permissions: frozenset[str]


def _group(account_id: int, group_id: int | None) -> PermissionGroup | None:
    if not group_id:
        return None
    group = PermissionGroup.get_or_none((PermissionGroup.id == group_id) & (PermissionGroup.account == account_id))
    if group is None:
        raise ServiceError(400, f"pgroup_id: permission group {group_id} does not exist")
    return group


def rights_of(user: User, fields: dict[str, Any] | None = None) -> Rights:
    """The user's rights, or what they would be with `fields` (is_admin, pgroup_id, permissions) applied."""
    fields = fields or {}
    is_admin = bool(fields.get("is_admin", user.is_admin))
    if is_admin:
        return Rights(True, frozenset(MODULES))
    group = _group(user.account_id, fields.get("pgroup_id", user.pgroup_id))
    return Rights(False, _permissions_of(group.permissions if group else None,
                                         fields.get("permissions", user.permissions)))


def _listing(modules: frozenset[str]) -> str:
    return ", ".join(sorted(modules))


def _may_act_on(actor: Actor, user: User, doing: str) -> None:
    """403 unless the actor's rights cover the user's present rights (itself always qualifies)."""
    if actor.is_admin or user.id == actor.user_id:
        return
    current = rights_of(user)
    if current.is_admin:
        raise ServiceError(403, f"Permission denied: only an admin can {doing} an admin")
    excess = current.permissions - actor.permissions
    if excess:
        raise ServiceError(403, f"Permission denied: user {user.id} has permissions you do not have "
                                f"({_listing(excess)})")


def _may_grant(actor: Actor, after: Rights) -> None:
    """403 when the rights a write leaves a user with exceed the actor's."""
    if actor.is_admin:
        return
    if after.is_admin:
        raise ServiceError(403, "Permission denied: only an admin can make a user admin")
    excess = after.permissions - actor.permissions
    if excess:
        raise ServiceError(403, f"You cannot grant permissions you do not have: {_listing(excess)}")


def _authorize_update(actor: Actor, user: User, fields: dict[str, Any]) -> None:
    _may_act_on(actor, user, "change")
    if actor.is_admin:
        return
    _may_grant(actor, rights_of(user, fields))
    if user.id == actor.user_id:
        for name in SELF_LOCKED_FIELDS:
            if name in fields and (fields[name] or None) != (getattr(user, name) or None):
                raise ServiceError(403, f"Permission denied: you cannot change your own {name} (a limit "
                                        "someone else sets)")


def _active_admins(account_id: int) -> list[int]:
    """Ids of the account's active admins; on PostgreSQL locked in id order, so two writes that each
    remove an admin run one after the other and the second sees the first."""
    query = User.select(User.id).where(
        (User.account == account_id) & (User.is_admin == True) & (User.active != 0)  # noqa: E712
    ).order_by(User.id)
    return [row.id for row in (query if is_sqlite() else query.for_update())]


def _keep_an_admin(account_id: int, user: User, doing: str) -> None:
    """409 when `user` is its account's last active admin (inside the caller's transaction)."""
    if user.is_admin and user.active and not set(_active_admins(account_id)) - {user.id}:
        raise ServiceError(409, f"User {user.id} is the last active admin of the account and cannot be {doing}; "
                                "make another user admin first")


def get_user(account_id: int, user_id: int) -> User:
    user = fastq.get_scoped(User, account_id, user_id)
    if user is None:
        raise ServiceError(404, f"User {user_id} not found")
    return user


def _check_unique(fields: dict[str, Any], exclude_id: int | None = None) -> None:
    for column, key in (("username", "username_key"), ("email", "email_key")):
        if column in fields:
            query = User.select().where(getattr(User, key) == fields[column].lower())
            if exclude_id is not None:
                query = query.where(User.id != exclude_id)
            if query.exists():
                raise ServiceError(409, TAKEN[column])


def _apply(user: User, account_id: int, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if name == "password":
            continue  # hashed by the caller, outside the transaction
        if name == "pgroup_id":
            if value:
                if not PermissionGroup.select().where(
                    (PermissionGroup.id == value) & (PermissionGroup.account == account_id)
                ).exists():
                    raise ServiceError(400, f"pgroup_id: permission group {value} does not exist")
                user.pgroup = value
            else:
                user.pgroup = None
        elif name in DEVICE_OVERRIDE_FIELDS:
            overrides = dict(user.device_overrides or {})
            overrides[name] = value
            user.device_overrides = overrides
        else:
            setattr(user, name, value)
            if name in ("username", "email"):
                setattr(user, f"{name}_key", value.lower())


# What calls to and from a user do (api.freeswitch: user_actions, caller_id_variables): a change drops the
# kept directory and dialplan answers of the account.
ROUTING_FIELDS = ("follow_me", "call_timeout", "vm_id", "override_device", "ecnam", "ecnum", "ocnam", "ocnum",
                  "intercept_groups", "intercept_other_groups", "cnum_by_country", "blf_ext")


def _routing_value(user: User, name: str) -> Any:
    if name in DEVICE_OVERRIDE_FIELDS:
        return (user.device_overrides or {}).get(name)
    return getattr(user, name)


def _check_routing(account_id: int, fields: dict[str, Any], user_id: int | None = None) -> None:
    """References of the user's fields, inside the transaction that stores them: 400 for an id or an
    extension the account does not have, 409 for a `blf_ext` another user of the account has."""
    if fields.get("vm_id"):
        from engine.voicemail import boxes

        boxes.check_id(account_id, fields["vm_id"])
    if fields.get("sites"):
        from engine.directory import sites

        sites.check_ids(account_id, "sites", fields["sites"])
    blf = fields.get("blf_ext")
    if blf:
        from engine.store.models import Extension

        if not Extension.select(Extension.id).where(
                (Extension.account == account_id) & (Extension.number == blf)).exists():
            raise ServiceError(400, f"blf_ext: {blf} is not an extension of the account (POST /api/extension)")
        holders = [u.id for u in User.select(User.id, User.device_overrides).where(User.account == account_id)
                   if u.id != user_id and (u.device_overrides or {}).get("blf_ext") == blf]
        if holders:
            raise ServiceError(409, f"blf_ext: extension {blf} is already the BLF extension of user {holders[0]}")


def create_user(account_id: int, fields: dict[str, Any], actor: Actor) -> User:
    """A new user of the account; its rights must be within the actor's (403)."""
    _may_grant(actor, rights_of(User(account=account_id, is_admin=False, pgroup=None, permissions={}), fields))
    password_hash = security.hash_password(fields["password"])
    fields = dict(fields)
    queue_perms = fields.pop("queue_perms", None)  # rows of engine.callcenter.queues.Membership, replace semantics
    pending = Pending()
    try:
        with db.atomic():
            _may_grant(actor, rights_of(User(account=account_id, is_admin=False, pgroup=None, permissions={}),
                                        fields))  # again: the group may have changed meanwhile
            _check_unique(fields)
            _check_routing(account_id, fields)
            user = User(account=account_id, password_hash=password_hash)
            _apply(user, account_id, fields)
            user.save(force_insert=True)
            if queue_perms is not None:
                queues.write_user_queues(account_id, user, queue_perms, replace=True, pending=pending)
    except peewee.IntegrityError:
        raise ServiceError(409, TAKEN_EITHER) from None
    pending.send()
    return user


def update_user(account_id: int, user_id: int, fields: dict[str, Any], actor: Actor) -> User:
    """Change the submitted fields. The actor must cover the user's rights before and after (403); the
    last active admin stays an active admin (409). A new password, or deactivation, ends the user's
    sessions; its API keys stay (`revoke_credentials` ends both)."""
    _authorize_update(actor, get_user(account_id, user_id), fields)  # before the slow hash
    password_hash = security.hash_password(fields["password"]) if fields.get("password") else None
    fields = dict(fields)
    queue_perms = fields.pop("queue_perms", None)  # rows of engine.callcenter.queues.Membership, replace semantics
    pending = Pending()
    try:
        with db.atomic():
            user = get_user(account_id, user_id)
            _authorize_update(actor, user, fields)
            if ("is_admin" in fields and not fields["is_admin"]) or ("active" in fields and not fields["active"]):
                _keep_an_admin(account_id, user, "deactivated" if "active" in fields and not fields["active"]
                               else "demoted")
            _check_unique(fields, exclude_id=user.id)
            _check_routing(account_id, fields, user.id)
            routing = any(name in fields and fields[name] != _routing_value(user, name) for name in ROUTING_FIELDS)
            _apply(user, account_id, fields)
            if password_hash:
                user.password_hash = password_hash
            user.save()
            if routing:  # the directory and dialplan answers are built from these (engine.directory.views)
                pending.add("routing", account_id, [user.id])
            if queue_perms is not None:
                queues.write_user_queues(account_id, user, queue_perms, replace=True, pending=pending)
            if password_hash or fields.get("active") == 0:
                # A new password or a disabled user ends every session of that user.
                UserSession.delete().where(UserSession.user == user.id).execute()
    except peewee.IntegrityError:
        raise ServiceError(409, TAKEN_EITHER) from None
    pending.send()
    return user


def delete_user(account_id: int, user_id: int, actor: Actor) -> None:
    pending = Pending()
    with db.atomic():
        user = get_user(account_id, user_id)
        if user.id == actor.user_id:
            raise ServiceError(400, "You cannot delete your own user")
        _may_act_on(actor, user, "delete")
        _keep_an_admin(account_id, user, "deleted")
        queues.drop_user_tiers(account_id, user.id, pending)
        # Numbers routed to the user would otherwise point at nothing; its devices stay, unassigned.
        extensions.delete_for("user", [user.id], pending, account_id)
        pending.add("device", account_id, [d.id for d in Device.select(Device.id).where(Device.user == user.id)])
        user.delete_instance()
        pending.add("user", account_id, [user.id])
    pending.send()


def revoke_credentials(account_id: int, user_id: int, actor: Actor) -> dict[str, int]:
    """End every session of the user and delete all its API keys (the way to end everything at once;
    a password change alone keeps the keys). Returns how many of each were removed."""
    with db.atomic():
        user = get_user(account_id, user_id)
        _may_act_on(actor, user, "revoke the credentials of")
        sessions = UserSession.delete().where(UserSession.user == user.id).execute()
        keys = ApiKey.delete().where(ApiKey.user == user.id).execute()
    return {"sessions": sessions, "api_keys": keys}


# --- permission groups: a group is also a way to grant ------------------------------------------------


def get_group(account_id: int, group_id: int) -> PermissionGroup:
    group = PermissionGroup.get_or_none((PermissionGroup.id == group_id) & (PermissionGroup.account == account_id))
    if group is None:
        raise ServiceError(404, f"Permission group {group_id} not found")
    return group


def _on(permissions: dict[str, bool] | None) -> frozenset[str]:
    return frozenset(m for m, on in (permissions or {}).items() if on)


def _may_edit_group(actor: Actor, group: PermissionGroup, new_permissions: dict[str, bool] | None) -> None:
    """A non-admin edits or deletes only a group that holds nothing beyond its rights and whose members'
    rights, now and with `new_permissions`, are all within its own: otherwise changing the group
    would change a more privileged user."""
    if actor.is_admin:
        return
    excess = _on(group.permissions) - actor.permissions
    if excess:
        raise ServiceError(403, f"Permission denied: permission group {group.id} has permissions you do not have "
                                f"({_listing(excess)})")
    members = User.select(User.id, User.is_admin, User.permissions).where(User.pgroup == group.id).order_by(User.id)
    for member in members:
        if member.id == actor.user_id:
            continue  # its own rights are the actor's, and it cannot raise them (new_permissions is checked)
        before = _permissions_of(group.permissions, member.permissions)
        after = _permissions_of(new_permissions, member.permissions)
        if member.is_admin or not (before | after) <= actor.permissions:
            raise ServiceError(403, f"Permission denied: user {member.id} of permission group {group.id} has "
                                    "rights you do not have")


def save_group(account_id: int, group_id: int | None, fields: dict[str, Any], actor: Actor) -> PermissionGroup:
    """Create (`group_id` None) or change a permission group (`name`, `permissions`)."""
    if "permissions" in fields and not actor.is_admin:
        excess = _on(fields["permissions"]) - actor.permissions
        if excess:
            raise ServiceError(403, f"You cannot grant permissions you do not have: {_listing(excess)}")
    try:
        with db.atomic():
            if group_id is None:
                group = PermissionGroup(account=account_id, name=fields["name"],
                                        permissions=fields.get("permissions") or {})
            else:
                group = get_group(account_id, group_id)
                _may_edit_group(actor, group, fields.get("permissions", group.permissions))
                for name, value in fields.items():
                    setattr(group, name, value)
            group.save()
    except peewee.IntegrityError:
        raise ServiceError(409, f"name: a permission group named {fields.get('name')!r} exists") from None
    return group


def delete_group(account_id: int, group_id: int, actor: Actor) -> None:
    """Delete the group; its users keep their own overrides (and lose the group's grants)."""
    with db.atomic():
        group = get_group(account_id, group_id)
        _may_edit_group(actor, group, {})
        User.update(pgroup=None).where(User.pgroup == group.id).execute()
        group.delete_instance()


# --- recovery from the command line (engine/cli.py) --------------------------------------------------


def find_in_account(domain: str, username: str) -> User:
    """The user `username` of the account whose FreeSWITCH domain is `domain` (404 otherwise)."""
    user = (User.select().join(Account, on=(User.account == Account.id))
            .where((Account.domain == domain.strip().lower()) & (User.username_key == username.strip().lower()))
            .first())
    if user is None:
        raise ServiceError(404, f"no user {username} in the account of domain {domain}")
    return user


def set_password(user: User, password: str) -> User:
    """A new password (the documented rules apply), its sessions ended, its login lock-out lifted."""
    problem = security.password_problem(password)
    if problem:
        raise ServiceError(400, f"password: {problem}")
    updated = update_user(user.account_id, user.id, {"password": password}, SYSTEM)
    LoginFailure.delete().where(LoginFailure.username_key == updated.username_key).execute()
    return updated


def make_admin(user: User) -> User:
    """Admin with every permission, and active (recovery when no usable admin is left)."""
    return update_user(user.account_id, user.id, {"is_admin": True, "active": 1}, SYSTEM)


def _lock_state(username_key: str, t: int) -> LoginFailure | None:
    row = LoginFailure.get_or_none(LoginFailure.username_key == username_key)
    if row is not None and row.locked_until <= t and t - row.first_failure > LOCK_WINDOW:
        return None  # old failures have expired
    return row


def _record_failure(username_key: str, t: int) -> None:
    with db.atomic():
        row = _lock_state(username_key, t)
        if row is None:
            LoginFailure.insert(username_key=username_key, failures=1, first_failure=t, locked_until=0).on_conflict(
                conflict_target=[LoginFailure.username_key],
                update={LoginFailure.failures: 1, LoginFailure.first_failure: t, LoginFailure.locked_until: 0},
            ).execute()
            return
        failures = row.failures + 1
        locked_until = t + LOCK_WINDOW if failures >= LOCK_AFTER else row.locked_until
        LoginFailure.update(failures=failures, locked_until=locked_until).where(
            LoginFailure.username_key == username_key
        ).execute()


def login(username: str, password: str, ip: str) -> tuple[User, Account, str, int]:
    """Check credentials; returns (user, account, session token, expiry)."""
    key = username.strip().lower()
    t = now()
    state = _lock_state(key, t)
    if state is not None and state.locked_until > t:
        raise ServiceError(429, f"Too many failed logins: try again in {state.locked_until - t} seconds")
    user = User.get_or_none(User.username_key == key)
    valid = security.verify_password(user.password_hash if user else None, password)
    if not valid or user is None or not user.active:
        _record_failure(key, now())
        raise ServiceError(401, "Unauthorized")
    if not geo.login_allowed(user.geo_limit, ip):
        raise ServiceError(403, "Login is not allowed from your country")
    account = Account.get_by_id(user.account_id)
    ttl = user.effective("session_ttl", account)
    token = security.new_token()
    with db.atomic():
        LoginFailure.delete().where(LoginFailure.username_key == key).execute()
        UserSession.delete().where((UserSession.user == user.id) & (UserSession.expires <= t)).execute()
        UserSession.create(digest=security.digest(token), user=user, expires=t + ttl)
        user.last_login = t
        User.update(last_login=t).where(User.id == user.id).execute()
    return user, account, token, t + ttl


def logout(session: UserSession | None) -> None:
    if session is not None:
        UserSession.delete().where(UserSession.id == session.id).execute()
