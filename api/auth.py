"""Who is calling: API keys (query, form, JSON body or Bearer) and session cookies; permissions.

Another account's rows are invisible: every lookup goes through the
principal's account, so a foreign id is a 404, never a 403.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import peewee
from flask import g, request
from peewee import JOIN

from api.body import key_may_be_in_body, request_json
from api.envelope import APIError
from engine.directory import security
from engine.directory.users import MODULES as MODULES  # re-exported: the API validates module names with it
from engine.directory.users import Actor, effective_permissions
from engine.store import fastq
from engine.store.db import db
from engine.store.models import Account, ApiKey, PermissionGroup, User, UserSession, now

SESSION_COOKIE = "switchdesk_session"
_LAST_USED_EVERY = 60  # seconds between writes of a key's last_used / a session's expiry


@dataclass
class Principal:
    user: User
    account: Account
    via: str  # "key" or "session"
    permissions: frozenset[str]
    session: UserSession | None = None

    @property
    def account_id(self) -> int:
        return self.account.id

    def can(self, module: str) -> bool:
        return module in self.permissions

    @property
    def actor(self) -> Actor:
        """The caller as the services see it (engine.directory.users: who may change whom)."""
        return Actor(self.user.id, bool(self.user.is_admin), self.permissions)


def credentials_outside_body() -> bool:
    """Does the request name its caller without its body (header, query or session cookie)?"""
    return bool(request.headers.get("Authorization") or request.args.get("api_key")
                or request.cookies.get(SESSION_COOKIE))


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    key = request.args.get("api_key")
    if key:
        return key
    if not key_may_be_in_body():
        return None  # a large body is never read (or parsed) to find who sent it
    if request.form and request.form.get("api_key"):
        return request.form["api_key"]
    if request.is_json:
        body = request_json()
        if isinstance(body, dict) and isinstance(body.get("api_key"), str):
            return body["api_key"]
    return None


def _unauthorized() -> APIError:
    return APIError(401, "Unauthorized")


def _principal_rows(query: peewee.ModelSelect) -> peewee.ModelSelect:
    return (query.join_from(User, Account, on=(User.account == Account.id))
            .join_from(User, PermissionGroup, JOIN.LEFT_OUTER, on=(User.pgroup == PermissionGroup.id)))


def _unpack(row: tuple, offset: int = 0) -> tuple[User, Account, PermissionGroup | None]:
    user = fastq.make(User, row, offset)
    offset += fastq.width(User)
    account = fastq.make(Account, row, offset)
    offset += fastq.width(Account)
    group = fastq.make(PermissionGroup, row, offset) if row[offset] is not None else None
    return user, account, group


def _load(user_id: int) -> tuple[User, Account, PermissionGroup | None]:
    """User, account and permission group in one query, compiled once (it runs on every request)."""
    sql, _ = fastq.compiled("principal", lambda: _principal_rows(
        User.select(User, Account, PermissionGroup)).where(User.id == 0))
    row = db.obj.execute_sql(sql, (user_id,)).fetchone()
    if row is None:
        raise _unauthorized()
    return _unpack(row)


def _api_key(prefix: str) -> tuple[ApiKey, User, Account, PermissionGroup | None] | None:
    """The key with its user, account and permission group: one query per API request."""
    sql, _ = fastq.compiled("api_key+principal", lambda: _principal_rows(
        ApiKey.select(ApiKey, User, Account, PermissionGroup).join(User, on=(ApiKey.user == User.id))
    ).where(ApiKey.prefix == ""))
    row = db.obj.execute_sql(sql, (prefix,)).fetchone()
    if row is None:
        return None
    return fastq.make(ApiKey, row), *_unpack(row, fastq.width(ApiKey))


def _remote_ip() -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return None


def _by_key(key: str) -> Principal:
    parts = security.split_api_key(key)
    if parts is None:
        raise _unauthorized()
    prefix, secret = parts
    found = _api_key(prefix)
    if found is None or not security.same_digest(found[0].digest, security.digest(secret)):
        raise _unauthorized()
    row, user, account, group = found
    if not user.active:
        raise _unauthorized()
    if user.api_ip_ranges:
        ip = _remote_ip()
        if ip is None or not any(ip in ipaddress.ip_network(net, strict=False) for net in user.api_ip_ranges):
            raise APIError(403, "API key not allowed from this address")
    t = now()
    if row.last_used is None or t - row.last_used >= _LAST_USED_EVERY:
        ApiKey.update(last_used=t).where(ApiKey.id == row.id).execute()
    principal = Principal(user, account, "key", effective_permissions(user, group))
    # The vendor API: a key works only for users with the Call Center API permission.
    if not principal.can("call_center_api"):
        raise APIError(403, "Permission denied: call_center_api")
    return principal


def session_ttl(user: User, account: Account) -> int:
    return user.effective("session_ttl", account)


def _by_session(token: str) -> Principal | None:
    row = UserSession.get_or_none(UserSession.digest == security.digest(token))
    t = now()
    if row is None or row.expires <= t:
        return None
    user, account, group = _load(row.user_id)
    if not user.active:
        return None
    ttl = session_ttl(user, account)
    # Sliding expiry: the session ends `session_ttl` seconds after its last use.
    if row.expires - t < ttl - _LAST_USED_EVERY:
        UserSession.update(expires=t + ttl).where(UserSession.id == row.id).execute()
        row.expires = t + ttl
    return Principal(user, account, "session", effective_permissions(user, group), row)


def authenticate() -> Principal:
    """The caller of this request; raises 401 when there is none."""
    if "principal" in g:
        return g.principal
    key = _presented_key()
    if key is not None:
        principal = _by_key(key)
    else:
        token = request.cookies.get(SESSION_COOKIE)
        principal = _by_session(token) if token else None
        if principal is None:
            raise _unauthorized()
    g.principal = principal
    return principal


def require_permission(principal: Principal, module: str) -> None:
    if not principal.can(module):
        raise APIError(403, f"Permission denied: {module}")
