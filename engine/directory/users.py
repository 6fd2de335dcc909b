"""Users: create, update, delete, log in. Every write is one transaction."""
from __future__ import annotations

from typing import Any

import peewee

from engine.callcenter import queues
from engine.directory import extensions, geo, security
from engine.errors import ServiceError
from engine.store import fastq
from engine.store.changes import Pending
from engine.store.db import db
from engine.store.models import Account, LoginFailure, PermissionGroup, User, UserSession, now

LOCK_AFTER = 5  # failed logins in a row ...
LOCK_WINDOW = 15 * 60  # ... within this many seconds lock the username for LOCK_WINDOW
DEVICE_OVERRIDE_FIELDS = (
    "ecnam", "ecnum", "ocnam", "ocnum", "user_record", "cnum_by_country", "blf_ext",
    "rec_inb_ext", "rec_out_ext", "rec_inb_int", "rec_out_int",
)


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
                raise ServiceError(409, f"{column}: {fields[column]} is already taken")


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


def create_user(account_id: int, fields: dict[str, Any]) -> User:
    password_hash = security.hash_password(fields["password"])
    fields = dict(fields)
    queue_perms = fields.pop("queue_perms", None)  # rows of engine.callcenter.queues.Membership, replace semantics
    pending = Pending()
    try:
        with db.atomic():
            _check_unique(fields)
            user = User(account=account_id, password_hash=password_hash)
            _apply(user, account_id, fields)
            user.save(force_insert=True)
            if queue_perms is not None:
                queues.write_user_queues(account_id, user, queue_perms, replace=True, pending=pending)
    except peewee.IntegrityError:
        raise ServiceError(409, "username or email is already taken") from None
    pending.send()
    return user


def update_user(account_id: int, user_id: int, fields: dict[str, Any]) -> User:
    password_hash = security.hash_password(fields["password"]) if fields.get("password") else None
    fields = dict(fields)
    queue_perms = fields.pop("queue_perms", None)  # rows of engine.callcenter.queues.Membership, replace semantics
    pending = Pending()
    try:
        with db.atomic():
            user = get_user(account_id, user_id)
            _check_unique(fields, exclude_id=user.id)
            _apply(user, account_id, fields)
            if password_hash:
                user.password_hash = password_hash
            user.save()
            if queue_perms is not None:
                queues.write_user_queues(account_id, user, queue_perms, replace=True, pending=pending)
            if password_hash or fields.get("active") == 0:
                # A new password or a disabled user ends every session of that user.
                UserSession.delete().where(UserSession.user == user.id).execute()
    except peewee.IntegrityError:
        raise ServiceError(409, "username or email is already taken") from None
    pending.send()
    return user


def delete_user(account_id: int, user_id: int, acting_user_id: int) -> None:
    pending = Pending()
    with db.atomic():
        user = get_user(account_id, user_id)
        if user.id == acting_user_id:
            raise ServiceError(400, "You cannot delete your own user")
        queues.drop_user_tiers(account_id, user.id, pending)
        # Numbers routed to the user would otherwise point at nothing; its devices stay, unassigned.
        extensions.delete_for("user", [user.id])
        user.delete_instance()
    pending.send()


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
