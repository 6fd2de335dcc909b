"""Users (vendor doc: Users): CRUD, search, login and logout."""
from __future__ import annotations

import ipaddress
import re
import zoneinfo
from typing import Annotated, Any

import peewee
import phonenumbers
from flask import Blueprint, make_response, request
from pydantic import AfterValidator, BeforeValidator, Field

from api.auth import MODULES, SESSION_COOKIE, Principal
from api.envelope import APIError, ok
from api.membership import QueueRows, memberships
from api.spec import Flag, Id, IdList, Page, Schema, endpoint, parse_json_text, split_list, submitted_fields
from engine.directory import users as service
from engine.store import fastq
from engine.store.models import PermissionGroup, User

bp = Blueprint("users", __name__, url_prefix="/api/user")

_TIMEZONES = frozenset(zoneinfo.available_timezones())
_COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)


def _timezone(value: str) -> str:
    if value not in _TIMEZONES:
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as 'Asia/Jerusalem')")
    return value


def _geo_limit(value: str) -> str:
    codes = [c.strip().upper() for c in value.split(",") if c.strip()]
    unknown = [c for c in codes if c not in _COUNTRIES]
    if unknown:
        raise ValueError(f"unknown country code(s): {', '.join(unknown)}")
    return ",".join(dict.fromkeys(codes))


def _password(value: str) -> str:
    from engine.directory.security import password_problem

    problem = password_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _email(value: str) -> str:
    if not re.fullmatch(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+", value) or len(value) > 254:
        raise ValueError("not a valid e-mail address")
    return value


def _permissions(value: dict[str, bool]) -> dict[str, bool]:
    unknown = sorted(set(value) - set(MODULES))
    if unknown:
        raise ValueError(f"unknown permission module(s): {', '.join(unknown)}; known: {', '.join(MODULES)}")
    return value


MAX_CNUM_COUNTRIES = 300  # more than there are countries


def _cnum_by_country(value: dict[str, str]) -> dict[str, str]:
    """{country: caller number}: ISO 3166-1 alpha-2 codes phonenumbers knows (upper-cased), numbers as
    ocnum takes them but not empty."""
    if len(value) > MAX_CNUM_COUNTRIES:
        raise ValueError(f"at most {MAX_CNUM_COUNTRIES} countries")
    out: dict[str, str] = {}
    for country, number in value.items():
        code = country.strip().upper()
        if code not in _COUNTRIES:
            raise ValueError(f"{country[:10]!r} is not a country code (ISO 3166-1 alpha-2, e.g. 'GB')")
        if code in out:
            raise ValueError(f"country {code} given twice")
        if not re.fullmatch(r"\+?[0-9]{3,20}", number):
            raise ValueError(f"{code}: {number[:40]!r} is not a caller number (3 to 20 digits, optionally after +)")
        out[code] = number
    return dict(sorted(out.items()))


def _blf_ext(value: str) -> str:
    from engine.directory.extensions import extension_problem

    problem = extension_problem(value) if value else None
    if problem:
        raise ValueError(problem)
    return value


def _cidrs(value: list[str]) -> list[str]:
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP range in CIDR form") from None
    return out


Name = Annotated[str, Field(min_length=1, max_length=200)]
Username = Annotated[str, Field(pattern=r"^[A-Za-z0-9._@-]{3,100}$")]
Password = Annotated[str, AfterValidator(_password)]
Email = Annotated[str, AfterValidator(_email)]
Timezone = Annotated[str, AfterValidator(_timezone)]
ShortText = Annotated[str, Field(max_length=100)]
Permissions = Annotated[dict[str, bool], BeforeValidator(parse_json_text), AfterValidator(_permissions)]
CnumByCountry = Annotated[dict[Annotated[str, Field(max_length=10)], Annotated[str, Field(max_length=40)]],
                          BeforeValidator(parse_json_text), AfterValidator(_cnum_by_country), Field(description=(
                              "outbound caller number per destination country (with override_device): "
                              "{\"GB\": \"+442071234567\", \"US\": \"+14155550100\"}; the destination's country "
                              "is read from the dialled number (the account's country for national numbers); "
                              "{} or null clears"))]
BlfExt = Annotated[str, AfterValidator(_blf_ext), Field(max_length=15, description=(
    "with override_device: an extension of the account (unique among its users) whose BLF lamp shows this "
    "user's devices' calls (SIP presence, dialog events); empty or null clears"))]


class UserFields(Schema):
    """Writable user fields. On PUT only the submitted ones change."""

    active: Flag | None = None
    is_admin: bool | None = Field(None, description="all permissions; only an admin may set it (403 otherwise); "
                                                    "the last active admin cannot lose it (409)")
    is_agent: bool | None = None
    in_reports: bool | None = None
    name: Name | None = None
    username: Username | None = None
    password: Password | None = Field(None, description="write-only; " + "8+ chars with a digit, lower and upper case")
    email: Email | None = None
    timezone: Timezone | None = None
    sites: Annotated[IdList, Field(description="ids of sites of the account (GET /api/site) the user works at",
                                   max_length=1000)] | None = None
    groups: IdList | None = None
    intercept_groups: IdList | None = None
    intercept_other_groups: IdList | None = None
    geo_limit: Annotated[str, Field(max_length=400), AfterValidator(_geo_limit)] | None = None
    follow_me: Annotated[int, Field(ge=0, le=3600)] | None = None
    dr_id: Id | None = None
    call_timeout: Annotated[int, Field(ge=0, le=3600)] | None = None
    vm_id: Id | None = None
    pgroup_id: Annotated[int, Field(ge=0)] | None = None
    permissions: Permissions | None = None
    override_device: bool | None = None
    listen_protected: bool | None = Field(None, description="1: nobody may listen to, whisper to or barge into "
                                                          "this user's calls; not settable on oneself (403)")
    ecnam: ShortText | None = None
    ecnum: Annotated[str, Field(pattern=r"^\+?[0-9*#]{0,32}$")] | None = None
    ocnam: ShortText | None = None
    ocnum: Annotated[str, Field(pattern=r"^\+?[0-9*#]{0,32}$")] | None = None
    user_record: Flag | None = None
    cnum_by_country: CnumByCountry | None = None
    blf_ext: BlfExt | None = None
    rec_inb_ext: Flag | None = None
    rec_out_ext: Flag | None = None
    rec_inb_int: Flag | None = None
    rec_out_int: Flag | None = None
    session_ttl: Annotated[int, Field(ge=60, le=31536000)] | None = None
    max_snooze: Annotated[int, Field(ge=0, le=100)] | None = None
    wrap_up_time: Annotated[int, Field(ge=0, le=86400)] | None = None
    no_answer_delay_time: Annotated[int, Field(ge=0, le=86400)] | None = None
    reject_delay_time: Annotated[int, Field(ge=0, le=86400)] | None = None
    busy_delay_time: Annotated[int, Field(ge=0, le=86400)] | None = None
    max_no_answer: Annotated[int, Field(ge=0, le=1000)] | None = None
    api_ip_ranges: Annotated[list[str], BeforeValidator(split_list), AfterValidator(_cidrs)] | None = None
    queue_perms: Annotated[QueueRows, Field(description="the agent's queues; replaces them all (needs the "
                                                        "`queues` permission too)")] | None = None


class UserCreate(UserFields):
    name: Name
    username: Username
    password: Password
    email: Email


class UserQuery(Page):
    q: Annotated[str, Field(max_length=200)] | None = None
    is_agent: Flag | None = None


class LoginBody(Schema):
    username: Annotated[str, Field(min_length=1, max_length=100)]  # as long as a username can be
    password: Annotated[str, Field(min_length=1, max_length=1024)]


# Fields that must be set explicitly to null to fall back to the account default.
_NULLABLE = {
    "dr_id", "vm_id", "call_timeout", "session_ttl", "max_snooze", "wrap_up_time",
    "no_answer_delay_time", "reject_delay_time", "busy_delay_time", "max_no_answer", "pgroup_id",
}
_DEFAULT_WHEN_NULL = {
    "sites": [], "groups": [], "intercept_groups": [], "intercept_other_groups": [], "geo_limit": "",
    "permissions": {}, "api_ip_ranges": [], "timezone": "UTC", "follow_me": 0, "queue_perms": [],
}


def submitted(body: UserFields) -> dict[str, Any]:
    """The fields the client sent, with explicit nulls kept only where null means something."""
    fields = submitted_fields(body, _NULLABLE | set(service.DEVICE_OVERRIDE_FIELDS), _DEFAULT_WHEN_NULL)
    if "queue_perms" in fields:
        fields["queue_perms"] = memberships(fields["queue_perms"])
    return fields


def user_record(user: User, group: PermissionGroup | None, extras: dict[str, Any] | None = None) -> dict[str, Any]:
    """The user as the API returns it (never the password)."""
    extras = extras or {}
    overrides = user.device_overrides or {}
    record = {
        "id": user.id,
        "account_id": user.account_id,
        "active": user.active,
        "is_admin": user.is_admin,
        "is_agent": user.is_agent,
        "in_reports": user.in_reports,
        "name": user.name,
        "username": user.username,
        "email": user.email,
        "timezone": user.timezone,
        "sites": user.sites or [],
        "groups": user.groups or [],
        "intercept_groups": user.intercept_groups or [],
        "intercept_other_groups": user.intercept_other_groups or [],
        "geo_limit": user.geo_limit,
        "follow_me": user.follow_me,
        "last_login": user.last_login,
        "ts": user.ts,
        "devices": extras.get("devices", []),
        "extensions": extras.get("extensions", ""),
        "dids": extras.get("dids", ""),
        "dr_id": user.dr_id,
        "call_timeout": user.call_timeout,
        "vm_id": user.vm_id,
        "vm_name": extras.get("vm_name"),
        "pgroup_id": user.pgroup_id or 0,
        "pgroup": group.name if group else None,
        "permissions": user.permissions or {},
        "queue_perms": extras.get("queue_perms", []),
        "override_device": user.override_device,
        "listen_protected": user.listen_protected,
        "pause_id": extras.get("pause_id"),
        "online": extras.get("online", 0),
        "queues": extras.get("queues", []),
        "device_id": extras.get("device_id"),
        "status": extras.get("status"),
        "state": extras.get("state"),
        "activity_id": extras.get("activity_id", 0),
        "api_ip_ranges": user.api_ip_ranges or [],
    }
    for name in service.DEVICE_OVERRIDE_FIELDS:
        record[name] = overrides.get(name)
    for name in ("session_ttl", "max_snooze", "wrap_up_time", "no_answer_delay_time",
                 "reject_delay_time", "busy_delay_time", "max_no_answer"):
        record[name] = getattr(user, name)
    return record


# Later features (devices, queues, agent state) register functions here that add their
# read-only fields for a batch of users in a constant number of queries.
EXTRA_PROVIDERS: list = []


def records(users: list[User]) -> list[dict[str, Any]]:
    ids = [u.id for u in users]
    extras: dict[int, dict[str, Any]] = {i: {} for i in ids}
    for provider in EXTRA_PROVIDERS:
        for user_id, values in provider(ids).items():
            extras.setdefault(user_id, {}).update(values)
    group_ids = sorted({u.pgroup_id for u in users if u.pgroup_id})
    groups = {row[0]: fastq.make(PermissionGroup, row) for row in fastq.select(
        "users.groups", lambda some: PermissionGroup.select().where(PermissionGroup.id.in_(some)), group_ids,
    )} if group_ids else {}
    return [user_record(u, groups.get(u.pgroup_id), extras.get(u.id)) for u in users]


def record(user: User) -> dict[str, Any]:
    return records([user])[0]


def _check_grants(principal: Principal, fields: dict[str, Any]) -> None:
    """Writing queue_perms needs the `queues` module too. Who may change whom, and grant what, is the
    service's rule (engine.directory.users: rights within the caller's, admins only by admins)."""
    if "queue_perms" in fields and not principal.can("queues"):
        raise APIError(403, "Permission denied: queues (needed to write queue_perms)")


def _contains_pattern(text: str) -> str:
    """The LIKE pattern of peewee's `contains()`: the text's own `%`, `_` and `\\` match themselves."""
    return "%" + text.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"


def _like(field: peewee.Field, pattern: str) -> peewee.Expression:
    return peewee.Expression(field, peewee.OP.ILIKE, peewee.NodeList((
        peewee.Value(pattern, converter=False), peewee.SQL("ESCAPE"), peewee.Value("\\", converter=False))))


def _listed(account_id: int, query: UserQuery) -> list[User]:
    """The users a list asks for; the SQL is compiled once per combination of the filters used."""
    paged = "limit" if query.limit else "offset" if query.offset else ""
    args: list[Any] = [account_id]
    if query.q:
        args.append(_contains_pattern(query.q))
    args += [query.limit, query.offset] if paged == "limit" else [query.offset] if paged else []

    def build(account: int, *rest: Any) -> peewee.Query:
        rest_of = list(rest)
        rows = User.select().where(User.account == account).order_by(User.id)
        if query.q:
            pattern = rest_of.pop(0)
            rows = rows.where(_like(User.name, pattern) | _like(User.username, pattern) | _like(User.email, pattern))
        if query.is_agent is not None:
            rows = rows.where(User.is_agent == bool(query.is_agent))
        if paged == "limit":
            rows = rows.limit(rest_of[0]).offset(rest_of[1])
        elif paged:
            rows = rows.offset(rest_of[0])
        return rows

    key = f"users.list:{bool(query.q)}:{query.is_agent}:{paged}"
    return [fastq.make(User, row) for row in fastq.select(key, build, *args)]


@endpoint(bp, "", ["GET"], summary="List users", tag="users", permission="users", query=UserQuery)
def list_users(principal: Principal, query: UserQuery):
    """`q` matches name, username or email case-insensitively; `is_agent=1` lists agents only."""
    return ok(records(_listed(principal.account_id, query)))


@endpoint(bp, "/<int:user_id>", ["GET"], summary="Get a user", tag="users")
def get_user(principal: Principal, user_id: int):
    """Any user may read its own record; other users need the `users` permission."""
    if user_id == principal.user.id:
        return ok(record(principal.user))  # loaded with the principal, in this request
    if not principal.can("users"):
        raise APIError(403, "Permission denied: users")
    return ok(record(service.get_user(principal.account_id, user_id)))


@endpoint(bp, "", ["POST"], summary="Create a user", tag="users", permission="users", body=UserCreate,
          errors={409: "the username or e-mail is taken"})
def create_user(principal: Principal, body: UserCreate):
    """The new user's rights (is_admin, pgroup_id's and its own permissions) must be within the caller's
    (403). A username or e-mail already taken anywhere in the installation is 409."""
    fields = submitted(body)
    _check_grants(principal, fields)
    return ok(record(service.create_user(principal.account_id, fields, principal.actor)))


@endpoint(bp, "/<int:user_id>", ["PUT"], summary="Update a user (only submitted fields)", tag="users",
          permission="users", body=UserFields,
          errors={409: "the username or e-mail is taken, or this is the account's last active admin"})
def update_user(principal: Principal, user_id: int, body: UserFields):
    """A caller without admin rights changes only users whose rights are within its own, never an admin,
    and cannot leave a user (itself included) with more than it has, nor lift its own `api_ip_ranges` or
    `geo_limit` (403). The last active admin cannot be deactivated or lose `is_admin` (409). A new
    password ends the user's sessions; its API keys stay (see `POST /api/user/{id}/revoke`)."""
    fields = submitted(body)
    _check_grants(principal, fields)
    return ok(record(service.update_user(principal.account_id, user_id, fields, principal.actor)))


@endpoint(bp, "/<int:user_id>", ["DELETE"], summary="Delete a user", tag="users", permission="users")
def delete_user(principal: Principal, user_id: int):
    """Not yourself (400); only users whose rights are within yours, an admin only by an admin (403);
    never the account's last active admin (409)."""
    service.delete_user(principal.account_id, user_id, principal.actor)
    return ok()


_REVOKED = {"type": "object", "properties": {
    "sessions": {"type": "integer", "description": "sessions ended"},
    "api_keys": {"type": "integer", "description": "API keys deleted"}}}


@endpoint(bp, "/<int:user_id>/revoke", ["POST"], summary="End all of a user's sessions and delete its API keys",
          tag="users", response=_REVOKED)
def revoke_user(principal: Principal, user_id: int):
    """Logs the user out everywhere and deletes every API key it has (integrations using them stop
    working). Yourself: always allowed; another user needs `users` and rights covering that user's,
    an admin needs an admin (403). A password change alone ends sessions but keeps API keys."""
    if user_id != principal.user.id and not principal.can("users"):
        raise APIError(403, "Permission denied: users")
    return ok(service.revoke_credentials(principal.account_id, user_id, principal.actor))


def _cookie_secure() -> bool:
    return request.is_secure


@endpoint(bp, "/login", ["POST"], summary="Log in: sets the session cookie", tag="users", auth=False,
          body=LoginBody, errors={401: "wrong username or password", 429: "locked out after repeated failures"})
def login(body: LoginBody):
    """The session lasts the user's `session_ttl` (or the account default) after its last use.

    Five failed logins in a row within 15 minutes lock the username for 15 minutes (429).
    """
    user, account, token, _expires = service.login(body.username, body.password, request.remote_addr or "")
    response, status = ok(record(user))
    response = make_response(response, status)
    response.set_cookie(
        SESSION_COOKIE, token, max_age=user.effective("session_ttl", account), httponly=True,
        samesite="Strict", secure=_cookie_secure(), path="/",
    )
    return response


@endpoint(bp, "/logout", ["GET", "POST"], summary="Log out: ends the session", tag="users")
def logout(principal: Principal):
    service.logout(principal.session)
    response, status = ok()
    response = make_response(response, status)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
