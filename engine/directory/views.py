"""In-memory views of the directory for the call path (DESIGN.md, "The hot path is compiled and cached").

FreeSWITCH asks for the same few things on every call — the account of a
domain, a device's credentials, where an extension or a DID routes — and the
call events ask again for every event of every leg. None of it changes
between calls, so it is read once (with SQL compiled once, `fastq`) and kept
here; the change notices (engine.store.changes) that every service already
sends after its commit drop what they may have changed:

* `account` (settings, domain, outbound gateway; a new account): everything;
* `device`, `extension`, `did`, `queue`, `user`, `routing`, `media`, `voicemail`, `site`: what the account holds, and
  every answer that said "nothing there" without knowing an account.

Agent and tier notices (runtime state, frequent during a call storm) drop
nothing. `cached()` also keeps whole answers (the rendered xml_curl
documents of api.freeswitch) under the same rules.

Never stale once a change is committed and noticed:

* a lookup that started before a notice does not keep what it read (the
  generation check), since it may have read the state before the commit;
* on PostgreSQL other boxes' changes arrive through engine.store.pgnotify:
  while no listener of this process hears them, nothing is cached or served
  from memory, and each new LISTEN starts from empty (what was committed while
  nobody listened was not heard);
* an answer that found nothing and knows no account (an unknown domain or
  DID) is also kept for `MISS_TTL` seconds only: on SQLite, `switchdesk account
  create` commits from another process, which this one never hears;
* a new database (tests, tools) starts from empty.

Writes that bypass the services (SQL by hand, tests writing models) send no
notice: `clear()` after them. `SWITCHDESK_DIRECTORY_CACHE=0` turns the views
off (every lookup reads the database, as before), for measuring and as a way
out.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee

from engine.store import changes, fastq
from engine.store.db import db
from engine.store.models import Account, Device, DeviceSite, Did, Extension, Media, Queue, Site, User, VoicemailBox

T = TypeVar("T")

ENV = "SWITCHDESK_DIRECTORY_CACHE"
# the kinds of change notice that can change what is kept here; `agent`, `tier`, `pause`, `timegroup` cannot
KINDS = frozenset({"account", "device", "extension", "did", "queue", "user", "media", "voicemail", "routing",
                   "site"})
MAX_ENTRIES = 200_000  # beyond this the oldest go first (a flood of unknown numbers must not grow memory)
MISS_TTL = 5.0  # seconds an answer that knows no account is kept (see the module docstring)
ANY = "*"  # tag of an answer that depends on every account (callcenter.conf with all queues)


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    domain: str
    country: str | None
    outbound_gateway: str | None


@dataclass(frozen=True, slots=True)
class DeviceView:
    id: int
    account_id: int
    user_id: int | None
    sip_username: str
    sip_a1_hash: str
    cid_name: str | None
    cid_num: str | None
    timeout: int | None
    site_id: int | None = None


@dataclass(frozen=True, slots=True)
class RouteView:
    """An extension or a DID: where a number routes."""
    id: int
    account_id: int
    number: str
    target_type: str
    target_id: int


@dataclass(frozen=True, slots=True)
class QueueView:
    id: int
    account_id: int
    site_id: int | None


# key -> (tag, value, expires): tag is the account id the value depends on, None for "found nothing and
# knows no account" (dropped by every relevant notice, and after MISS_TTL), ANY for "every account".
_entries: dict[Any, tuple[Any, Any, float]] = {}
_tags: dict[Any, set[Any]] = {}
_generation = 0  # bumped by every relevant notice: a lookup that started before it keeps nothing
_bound: Any = None  # the database the entries were read from
_epoch: Any = None  # changes.hearing_epoch() the entries were read under (PostgreSQL)


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def clear() -> None:
    """Forget everything (also ends any lookup in progress from keeping what it read)."""
    global _generation
    _generation += 1
    _entries.clear()
    _tags.clear()


def armed() -> bool:
    """Whether memory may be used now; empties it when what it was read under has changed."""
    global _bound, _epoch
    database = db.obj
    if database is not _bound:
        clear()
        _bound = database
    if not enabled():
        return False
    if changes.must_hear():  # PostgreSQL, or serve --workers: other processes write
        epoch = changes.hearing_epoch()
        if epoch != _epoch:
            clear()
            _epoch = epoch
        if epoch is None:
            return False  # other boxes' changes are not heard right now
    return True


def _on_change(kind: str, account_id: int, ids: list[int]) -> None:
    global _generation
    if kind not in KINDS:
        return
    _generation += 1
    if kind == "account":
        _entries.clear()
        _tags.clear()
        return
    for tag in (account_id, None, ANY):
        for key in _tags.pop(tag, ()):
            _entries.pop(key, None)


changes.listen(_on_change)


def cached(key: Any, load: Callable[[], tuple[Any, T]]) -> T:
    """The value `load()` gives for `key`, from memory when it was kept; `load` returns (tag, value)."""
    if not armed():
        return load()[1]
    entry = _entries.get(key)
    if entry is not None:
        if not entry[2] or entry[2] > time.monotonic():
            return entry[1]
        _forget(key)
    generation = _generation
    tag, value = load()
    if generation == _generation:  # no notice meanwhile: what was read is current
        if len(_entries) >= MAX_ENTRIES:
            _forget(next(iter(_entries)))
        _entries[key] = (tag, value, time.monotonic() + MISS_TTL if tag is None else 0.0)
        _tags.setdefault(tag, set()).add(key)
    return value


def _forget(key: Any) -> None:
    entry = _entries.pop(key, None)
    if entry is not None:
        keys = _tags.get(entry[0])
        if keys is not None:
            keys.discard(key)


# --- the views --------------------------------------------------------------------------------------

_ACCOUNT_COLUMNS = (Account.id, Account.domain, Account.country, Account.outbound_gateway)
_DEVICE_COLUMNS = (Device.id, Device.account, Device.user, Device.sip_username, Device.sip_a1_hash,
                   Device.cid_name, Device.cid_num, Device.timeout, DeviceSite.site)


def _devices() -> peewee.ModelSelect:
    """Devices with their site (engine.directory.sites), as DeviceView takes them."""
    return Device.select(*_DEVICE_COLUMNS).join(DeviceSite, peewee.JOIN.LEFT_OUTER,
                                                on=(DeviceSite.device == Device.id))


def _one(rows: list[tuple], make: Callable[..., T]) -> T | None:
    return make(*rows[0]) if rows else None


def _load_account_by_id(account_id: int) -> tuple[Any, AccountView | None]:
    view = _one(fastq.select("views.account", lambda a: Account.select(*_ACCOUNT_COLUMNS).where(Account.id == a),
                             account_id), AccountView)
    return (view.id if view else None), view


def _load_account_by_domain(domain: str) -> tuple[Any, AccountView | None]:
    view = _one(fastq.select("views.account_by_domain",
                             lambda d: Account.select(*_ACCOUNT_COLUMNS).where(Account.domain == d), domain),
                AccountView)
    return (view.id if view else None), view


def account(account_id: int) -> AccountView | None:
    return cached(("account", account_id), lambda: _load_account_by_id(account_id))


def account_by_domain(domain: str) -> AccountView | None:
    """The account whose domain is exactly `domain` (callers lower-case it where FreeSWITCH may not)."""
    return cached(("domain", domain), lambda: _load_account_by_domain(domain))


def device(account_id: int, sip_username: str) -> DeviceView | None:
    """The device of the account with exactly this SIP username (the directory's key)."""
    def load() -> tuple[Any, DeviceView | None]:
        return account_id, _one(fastq.select(
            "views.device", lambda a, u: _devices().where(
                (Device.account == a) & (Device.sip_username == u)), account_id, sip_username), DeviceView)
    return cached(("device", account_id, sip_username), load)


def device_by_id(account_id: int, device_id: int) -> DeviceView | None:
    def load() -> tuple[Any, DeviceView | None]:
        return account_id, _one(fastq.select(
            "views.device_by_id", lambda a, i: _devices().where(
                (Device.account == a) & (Device.id == i)), account_id, device_id), DeviceView)
    return cached(("device_id", account_id, device_id), load)


def devices_of_user(account_id: int, user_id: int) -> tuple[DeviceView, ...]:
    """The user's devices in the account, by id."""
    def load() -> tuple[Any, tuple[DeviceView, ...]]:
        rows = fastq.select("views.devices_of_user", lambda a, u: _devices().where(
            (Device.account == a) & (Device.user == u)).order_by(Device.id), account_id, user_id)
        return account_id, tuple(DeviceView(*row) for row in rows)
    return cached(("user_devices", account_id, user_id), load)


def extension(account_id: int, number: str) -> RouteView | None:
    def load() -> tuple[Any, RouteView | None]:
        return account_id, _one(fastq.select(
            "views.extension", lambda a, n: Extension.select(
                Extension.id, Extension.account, Extension.number, Extension.target_type, Extension.target_id)
            .where((Extension.account == a) & (Extension.number == n)), account_id, number), RouteView)
    return cached(("extension", account_id, number), load)


def did(number: str) -> RouteView | None:
    """The DID a carrier's destination number names: as given, or in E.164 when given without its '+'."""
    def load() -> tuple[Any, RouteView | None]:
        digits = number.lstrip("+")
        rows = fastq.select("views.did", lambda a, b: Did.select(
            Did.id, Did.account, Did.number, Did.target_type, Did.target_id)
            .where(Did.number.in_([a, b])).order_by(Did.id).limit(1), number, f"+{digits}")
        view = _one(rows, RouteView)
        return (view.account_id if view else None), view
    return cached(("did", number), load)


def queue(account_id: int, queue_id: int) -> QueueView | None:
    def load() -> tuple[Any, QueueView | None]:
        return account_id, _one(fastq.select(
            "views.queue", lambda a, q: Queue.select(Queue.id, Queue.account, Queue.site_id).where(
                (Queue.account == a) & (Queue.id == q)), account_id, queue_id), QueueView)
    return cached(("queue", account_id, queue_id), load)


# --- what a queue call plays and where it exits (api.freeswitch.queue_actions) ------------------------


@dataclass(frozen=True, slots=True)
class QueueCallView:
    """The parts of a queue the dialplan of a queue call is built from; media as file names in the
    account's media folder (None when the queue names none, or the media is gone)."""
    id: int
    account_id: int
    auto_answer: bool
    ring_timeout: int
    join_file: str | None
    pre_bridge_file: str | None
    exits: dict


def _media_file(account_id: int, media_id: int | None) -> str | None:
    if not media_id:
        return None
    rows = fastq.select("views.media_file", lambda a, m: Media.select(Media.file).where(
        (Media.account == a) & (Media.id == m)), account_id, media_id)
    return rows[0][0] if rows else None


def queue_call(account_id: int, queue_id: int) -> QueueCallView | None:
    """Kept like the other views; dropped by `queue` (and `media`) notices of the account."""
    def load() -> tuple[Any, QueueCallView | None]:
        rows = fastq.select("views.queue_call", lambda a, q: Queue.select(
            Queue.id, Queue.auto_answer, Queue.ring_timeout, Queue.join_announce, Queue.pre_bridge_announce,
            Queue.exits).where((Queue.account == a) & (Queue.id == q)), account_id, queue_id)
        if not rows:
            return account_id, None
        qid, auto_answer, ring_timeout, join_id, pre_bridge_id, exits = rows[0]
        if isinstance(exits, str):  # a raw JSON column as the compiled statement returns it
            import json

            exits = json.loads(exits or "{}")
        return account_id, QueueCallView(qid, account_id, bool(auto_answer), int(ring_timeout or 0),
                                         _media_file(account_id, join_id), _media_file(account_id, pre_bridge_id),
                                         exits or {})
    return cached(("queue_call", account_id, queue_id), load)


# --- what a call to a user does (api.freeswitch.user_actions) and its voicemail box -------------------


@dataclass(frozen=True, slots=True)
class UserCallView:
    id: int
    account_id: int
    follow_me: int
    call_timeout: int | None
    vm_id: int | None


@dataclass(frozen=True, slots=True)
class VoicemailBoxView:
    id: int
    account_id: int
    pin_a1_hash: str
    greeting_file: str | None


def user_call(account_id: int, user_id: int) -> UserCallView | None:
    """Dropped by `user` notices (users.ROUTING_FIELDS changes, deletes) and `voicemail` ones."""
    def load() -> tuple[Any, UserCallView | None]:
        return account_id, _one(fastq.select("views.user_call", lambda a, u: User.select(
            User.id, User.account, User.follow_me, User.call_timeout, User.vm_id).where(
            (User.account == a) & (User.id == u)), account_id, user_id), UserCallView)
    return cached(("user_call", account_id, user_id), load)


def voicemail_box(account_id: int, box_id: int) -> VoicemailBoxView | None:
    def load() -> tuple[Any, VoicemailBoxView | None]:
        rows = fastq.select("views.voicemail_box", lambda a, b: VoicemailBox.select(
            VoicemailBox.id, VoicemailBox.account, VoicemailBox.pin_a1_hash, VoicemailBox.greeting_id).where(
            (VoicemailBox.account == a) & (VoicemailBox.id == b)), account_id, box_id)
        if not rows:
            return account_id, None
        box_id_, account, a1, greeting = rows[0]
        return account_id, VoicemailBoxView(box_id_, account, a1, _media_file(account_id, greeting))
    return cached(("voicemail_box", account_id, box_id), load)


@dataclass(frozen=True, slots=True)
class CallerIdView:
    """A user's overrides of its devices' settings (`override_device`): caller ids ecnam/ecnum/ocnam/ocnum,
    `cnum_by_country` as (country, number) pairs, and `blf_ext` (the extension its presence lights)."""
    ecnam: str | None
    ecnum: str | None
    ocnam: str | None
    ocnum: str | None
    cnum_by_country: tuple[tuple[str, str], ...] = ()
    blf_ext: str | None = None


def _json(value: Any, empty: str) -> Any:
    if isinstance(value, str):  # a raw JSON column as the compiled statement returns it
        import json

        return json.loads(value or empty)
    return value


def caller_id(account_id: int, user_id: int) -> CallerIdView | None:
    """None unless the user overrides its devices' settings with something. Dropped by `user` notices."""
    def load() -> tuple[Any, CallerIdView | None]:
        rows = fastq.select("views.caller_id", lambda a, u: User.select(User.override_device, User.device_overrides)
                            .where((User.account == a) & (User.id == u)), account_id, user_id)
        if not rows or not rows[0][0]:
            return account_id, None
        overrides = _json(rows[0][1], "{}")
        overrides = overrides if isinstance(overrides, dict) else {}

        def text(key: str) -> str | None:
            value = overrides.get(key)
            return value if isinstance(value, str) and value else None
        by_country = overrides.get("cnum_by_country")
        pairs = tuple(sorted((c, n) for c, n in by_country.items() if isinstance(n, str) and n)
                      ) if isinstance(by_country, dict) else ()
        view = CallerIdView(*(text(k) for k in ("ecnam", "ecnum", "ocnam", "ocnum")), pairs, text("blf_ext"))
        return account_id, view if view != CallerIdView(None, None, None, None) else None
    return cached(("caller_id", account_id, user_id), load)


@dataclass(frozen=True, slots=True)
class SiteView:
    """What a site changes on its devices' outbound calls (engine.directory.sites)."""
    id: int
    account_id: int
    outbound_gateway: str | None
    cid_name: str | None
    cid_num: str | None


def site(account_id: int, site_id: int) -> SiteView | None:
    """Dropped by `site` notices of the account."""
    def load() -> tuple[Any, SiteView | None]:
        return account_id, _one(fastq.select("views.site", lambda a, i: Site.select(
            Site.id, Site.account, Site.outbound_gateway, Site.cid_name, Site.cid_num).where(
            (Site.account == a) & (Site.id == i)), account_id, site_id), SiteView)
    return cached(("site", account_id, site_id), load)


def intercept_groups(account_id: int, user_id: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The user's `intercept_groups` (its calls can be picked up there) and `intercept_other_groups` (it may
    pick up calls of those groups too). Dropped by `user` notices."""
    def load() -> tuple[Any, tuple[tuple[int, ...], tuple[int, ...]]]:
        rows = fastq.select("views.intercept_groups", lambda a, u: User.select(
            User.intercept_groups, User.intercept_other_groups).where((User.account == a) & (User.id == u)),
            account_id, user_id)
        if not rows:
            return account_id, ((), ())

        def ids(value: Any) -> tuple[int, ...]:
            if isinstance(value, str):
                import json

                value = json.loads(value or "[]")
            return tuple(i for i in value or () if isinstance(i, int) and not isinstance(i, bool) and i > 0)
        return account_id, (ids(rows[0][0]), ids(rows[0][1]))
    return cached(("intercept_groups", account_id, user_id), load)
