"""Call events: `call:ring`, `call:answer`, `call:start` (queue calls) and `call:end` from FreeSWITCH.

An Engine plugin (engine/engine.py, PLUGIN_MODULES). Each FreeSWITCH leg is
one `id`; the legs of one call share `call_id`, the Unique-ID of its first
leg. What each field is derived from is in the README ("Call events"); in
short: the channel variables our directory and dialplan put on every call we
route (`switchdesk_*`, `user_context`), mod_callcenter's own variables
(`cc_queue`, `cc_agent`, `cc_member_session_uuid`, `cc_cause`, ...) and
FreeSWITCH's timing variables on CHANNEL_HANGUP_COMPLETE (`*msec`).

Per leg, in this order and at most once each: `call:ring` (an inbound leg
when it is created, an outbound one at its first 180/183; also just before
`call:answer` for a leg answered without one), `call:answer`, `call:start`
(the caller's leg joining a queue), `call:end` (CHANNEL_HANGUP_COMPLETE).
Events may arrive in any order and twice: the `ActiveCall` row of the leg
records which events went out, and a late or repeated event emits nothing.
Legs of no account (no domain of ours) are ignored.

ESL has no replay (DESIGN.md, Events across outages). After every (re)connect
of the event connection — which includes a restart of switchdesk, since the
rows are in the database — the legs we recorded that `show channels` no
longer lists get their `call:end` with `"reconstructed": true` (timings and
cause unknown, so null). Rings and answers that happened while we could not
hear are not recovered.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import gevent
import gevent.lock
import peewee
import phonenumbers

from engine.callcenter import fsconfig
from engine.esl.client import ESLError
from engine.events.outbox import emit
from engine.store.db import connection, db
from engine.store.models import Account, ActiveCall, Device, Did, Extension, Lead, PhoneList, Queue, now

log = logging.getLogger("switchdesk.callevents")

EVENTS = (
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
)

# Every call event carries all of these keys (null when unknown or not applicable).
FIELDS = (
    "id", "call_id", "ts", "site_id", "type", "dst_num", "src_device_id", "dst_device_id", "src_user_id",
    "dst_user_id", "cid_num", "cid_name", "a2", "tags", "queue_id", "lead_id", "lead_name", "campaign_id",
    "dialer_id", "conference_id", "call_script", "waitms", "durationms", "progressms", "billms", "cc_wait",
    "hangup_cause", "canceled",
)
# Known only when the leg has ended: null on call:ring, call:answer and call:start.
END_FIELDS = ("waitms", "durationms", "progressms", "billms", "cc_wait", "hangup_cause", "canceled")
TYPES = frozenset({"inbound", "outbound", "internal", "queue", "fax", "conf"})
CANCEL_REASONS = frozenset({"NONE", "TIMEOUT", "NO_AGENT_TIMEOUT", "BREAK_OUT", "EXIT_WITH_KEY"})
# Feature codes (check-in `***<code>`) are not calls anyone wants reported, and the code is a secret.
FEATURE_PREFIX = "*"
KEEP_ENDED = 3600  # seconds an ended leg's row is kept so a repeated event changes nothing
PURGE_EVERY = 500  # ended legs between purges of old rows
RECONCILE_GRACE = 2.0  # seconds between the channel snapshot and ending: queued events finish first
RECONCILE_ATTEMPTS, RECONCILE_RETRY = 3, 5.0


# -- reading events --------------------------------------------------------------------------------


def _h(event: Any, name: str) -> str | None:
    """A header as stripped text; arrays joined like FreeSWITCH's `${var}`; empty is None."""
    value = event.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        value = "|".join(value)
    value = value.strip()
    return value or None


def _v(event: Any, name: str) -> str | None:
    return _h(event, "variable_" + name)


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _id(value: str | None) -> int | str | None:
    """Ids the client gave (dialer, conference): a number when it is one, else the text."""
    number = _int(value)
    return number if number is not None else value


def _ts(event: Any) -> int:
    stamp = _int(_h(event, "Event-Date-Timestamp"))
    return stamp // 1_000_000 if stamp else now()


def country_of_number(number: str | None, default_region: str | None) -> str | None:
    """ISO 3166-1 alpha-2 of a phone number, the account's country as the default region."""
    if not number or sum(c.isdigit() for c in number) < 4:
        return None
    try:
        parsed = phonenumbers.parse(number, (default_region or "US").upper())
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    region = phonenumbers.region_code_for_number(parsed)
    return region if region and region != "ZZ" else None


def _ms(event: Any, msec: str, usec: str) -> int | None:
    value = _int(_v(event, msec))
    if value is not None:
        return value
    micro = _int(_v(event, usec))
    return micro // 1000 if micro is not None else None


def _cancel_reason(value: str | None) -> str:
    reason = (value or "NONE").upper()
    return reason if reason in CANCEL_REASONS else reason[:40]


# -- the plugin ------------------------------------------------------------------------------------


class CallEvents:
    """Turns channel and callcenter events into call events; one instance per Engine."""

    def __init__(self, engine: Any, *, grace: float = RECONCILE_GRACE) -> None:
        self.engine = engine
        self.grace = grace
        self.reconciles = 0  # completed reconciliations (tests wait on it)
        self._ended = 0
        self._reconcile_lock = gevent.lock.Semaphore()

    # -- event handlers (run in event order on the ESL dispatcher; short DB work only) --

    def on_channel(self, event: Any) -> None:
        name = event.get("Event-Name")
        if name == "CHANNEL_CREATE":
            kind = "ring" if _h(event, "Call-Direction") == "inbound" else "record"
        elif name in ("CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA"):
            kind = "ring"
        elif name == "CHANNEL_ANSWER":
            kind = "answer"
        elif name == "CHANNEL_HANGUP_COMPLETE":
            kind = "end"
        elif name == "CHANNEL_BRIDGE":
            kind = "update"
        else:
            return
        self.handle(event, kind)

    def on_callcenter(self, event: Any) -> None:
        action = _h(event, "CC-Action")
        if action == "member-queue-start":
            self.handle(event, "start")
        elif action == "member-queue-end":
            self.handle(event, "update", queue_end=True)

    def handle(self, event: Any, kind: str, *, queue_end: bool = False) -> None:
        """Record what `event` says about its leg and emit the call events that are due."""
        uid = _h(event, "Unique-ID")
        if not uid:
            return
        with connection():
            row = ActiveCall.get_or_none(ActiveCall.uuid == uid)
            if row is None:
                if kind == "update" or (_h(event, "Caller-Destination-Number") or "").startswith(FEATURE_PREFIX):
                    return
                account = self._account(event)
                if account is None:
                    return  # not a call of ours
                prior: dict[str, Any] = {}
            else:
                if row.ended_at is not None:
                    return  # a late or repeated event of a leg that has ended: nothing is due
                account = Account.get_or_none(Account.id == row.account_id)
                if account is None:
                    return
                prior = row.data or {}
            data = self._fields(event, account, prior)
            if queue_end:
                data.update(self._queue_end(event))
            if kind == "end":
                data.update(self._end_fields(event, data))
            ts = _ts(event)
            with db.atomic():
                if row is None:
                    row = self._create(event, uid, account.id, data)
                elif data != prior or data["call_id"] != row.call_id:
                    ActiveCall.update(data=data, call_id=data["call_id"]).where(ActiveCall.uuid == uid).execute()
                self._emit_due(row, kind, data, ts)
            if kind == "end":
                self._ended += 1
                if self._ended % PURGE_EVERY == 0:
                    purge_ended()

    @staticmethod
    def _create(event: Any, uid: str, account_id: int, data: dict[str, Any]) -> ActiveCall:
        try:
            with db.atomic():
                return ActiveCall.create(
                    uuid=uid, account=account_id, call_id=data["call_id"],
                    fs_host=(_h(event, "FreeSWITCH-Hostname") or "")[:255],
                    seen_ms=int(time.time() * 1000), data=data,
                )
        except peewee.IntegrityError:  # recorded meanwhile (another engine on the same database)
            ActiveCall.update(data=data).where(ActiveCall.uuid == uid).execute()
            return ActiveCall.get(ActiveCall.uuid == uid)

    def _emit_due(self, row: ActiveCall, kind: str, data: dict[str, Any], ts: int) -> None:
        """Emit what `kind` calls for, each at most once per leg (conditional updates decide)."""
        live = (ActiveCall.uuid == row.uuid) & ActiveCall.ended_at.is_null()
        account_id = row.account_id

        def once(flag: peewee.Field, extra: peewee.Expression | None = None) -> bool:
            cond = live & (flag == False)  # noqa: E712 - SQL, not Python
            if extra is not None:
                cond &= extra
            return ActiveCall.update({flag: True}).where(cond).execute() == 1

        if kind == "ring" and once(ActiveCall.rang, ActiveCall.answered == False):  # noqa: E712
            emit(account_id, "call:ring", payload(data, ts), ts=ts)
        elif kind == "answer":
            if once(ActiveCall.rang):
                emit(account_id, "call:ring", payload(data, ts), ts=ts)
            if once(ActiveCall.answered):
                emit(account_id, "call:answer", payload(data, ts), ts=ts)
        elif kind == "start" and once(ActiveCall.started):
            emit(account_id, "call:start", payload(data, ts), ts=ts)
        elif kind == "end" and ActiveCall.update(ended_at=now()).where(live).execute() == 1:
            emit(account_id, "call:end", payload(data, ts, end=True), ts=ts)

    # -- deriving the fields --

    def _account(self, event: Any) -> Account | None:
        """The account of a leg: our variables first, then the domain in FreeSWITCH's own names."""
        account_id = _int(_v(event, "switchdesk_account_id"))
        if account_id is not None:
            account = Account.get_or_none(Account.id == account_id)
            if account is not None:
                return account
        domains: list[str] = []
        for name in (_v(event, "cc_queue"), _v(event, "cc_agent"), _h(event, "CC-Queue")):
            parsed = fsconfig.parse_name(name or "")
            if parsed:
                domains.append(parsed[1])
        for header in ("variable_domain_name", "variable_user_context", "Caller-Context", "variable_dialed_domain"):
            value = _h(event, header)
            if value:
                domains.append(value.lower())
        for domain in dict.fromkeys(domains):
            if domain in ("public", "default"):
                continue
            account = Account.get_or_none(Account.domain == domain)
            if account is not None:
                return account
        if _h(event, "Caller-Context") == "public":  # a DID before our dialplan has run
            did = self._did(_h(event, "Caller-Destination-Number"))
            if did is not None:
                return Account.get_or_none(Account.id == did.account_id)
        return None

    @staticmethod
    def _did(number: str | None) -> Did | None:
        if not number:
            return None
        digits = number.lstrip("+")
        return Did.get_or_none(Did.number.in_([number, f"+{digits}"]))

    def _fields(self, event: Any, account: Account, prior: dict[str, Any]) -> dict[str, Any]:
        """The sticky fields of the leg: what this event says, else what earlier ones said."""
        uid = _h(event, "Unique-ID") or ""
        direction = _h(event, "Call-Direction")
        data = dict(prior)
        data["id"] = uid
        if not data.get("call_id") or data["call_id"] == uid:
            data["call_id"] = self._call_id(event, uid)
        first = self._leg(data["call_id"]) if data["call_id"] != uid else {}
        other_uid = _v(event, "cc_agent_uuid") or (
            _h(event, "Other-Leg-Unique-ID") if _h(event, "Other-Type") == "originatee" else None)
        other = self._leg(other_uid) if other_uid else {}

        def sticky(key: str, value: Any, *fallbacks: dict[str, Any]) -> None:
            if value is None:
                value = data.get(key)
            for source in fallbacks:
                if value is None:
                    value = source.get(key)
            data[key] = value

        # devices: a leg from a device carries the directory's switchdesk_device_id; so does a leg to one
        device = _int(_v(event, "switchdesk_device_id"))
        src_device = _int(_v(event, "switchdesk_src_device_id"))
        dst_device = None
        if device is not None and direction == "inbound":
            src_device = src_device or device
        elif device is not None and device != src_device:
            dst_device = device
        elif direction == "outbound" and data.get("dst_device_id") is None:
            # FreeSWITCH adds the directory's variables to a `user/...` leg only once it is answered;
            # until then the leg names the dialed user and domain
            dialed = self._dialed_device(event, account)
            dst_device = dialed if dialed != (src_device or data.get("src_device_id")) else None
        old_src, old_dst = data.get("src_device_id"), data.get("dst_device_id")
        sticky("src_device_id", src_device, first)
        sticky("dst_device_id", dst_device, other)

        # type: what our dialplan / originate said, mod_callcenter's presence, else the first leg's or a guess
        explicit = _v(event, "switchdesk_call_type")
        if explicit in TYPES:
            data["type"] = explicit
        elif _v(event, "cc_queue"):
            data["type"] = "queue"
        elif _v(event, "conference_name"):
            data["type"] = "conf"
        else:
            sticky("type", None, first)
        routed_queue = None
        if data.get("type") is None:
            data["type"], routed_queue = self._guess_type(event, account, direction, data.get("src_device_id"))

        sticky("dst_num", _v(event, "switchdesk_dst_num"), first)
        if data.get("dst_num") is None:
            data["dst_num"] = _h(event, "Caller-Destination-Number")
        for key, header in (("cid_num", "Caller-Caller-ID-Number"), ("cid_name", "Caller-Caller-ID-Name")):
            sticky(key, _h(event, header))

        # users: ours from click-to-call, the agent of mod_callcenter, else the device's user
        agent = fsconfig.parse_name(_v(event, "cc_agent") or "")
        agent_user = agent[0] if agent and agent[1] == account.domain else None
        src_user = _int(_v(event, "switchdesk_src_user_id"))
        if src_user is None and data.get("src_device_id") != old_src:
            src_user = self._device_user(account.id, data.get("src_device_id"))
        sticky("src_user_id", src_user, first)
        dst_user = agent_user
        if dst_user is None and data.get("dst_device_id") != old_dst:
            dst_user = self._device_user(account.id, data.get("dst_device_id"))
        sticky("dst_user_id", dst_user, other)

        queue = fsconfig.parse_name(_v(event, "cc_queue") or _h(event, "CC-Queue") or "")
        queue_id = queue[0] if queue and queue[1] == account.domain else _int(_v(event, "switchdesk_queue_id"))
        queue_id = queue_id if queue_id is not None else routed_queue
        old_queue = data.get("queue_id")
        sticky("queue_id", queue_id, first)
        site = _int(_v(event, "switchdesk_site_id"))
        if site is None and data.get("queue_id") is not None and data.get("queue_id") != old_queue:
            site = (Queue.select(Queue.site_id)
                    .where((Queue.id == data["queue_id"]) & (Queue.account == account.id)).scalar())
        sticky("site_id", site, first)

        old_lead = data.get("lead_id")
        sticky("lead_id", _v(event, "switchdesk_lead_id"), first)
        if data.get("lead_id") != old_lead or "lead_name" not in data:
            data["lead_name"] = self._lead_name(account.id, data.get("lead_id"))
        sticky("tags", _v(event, "switchdesk_tags"), first)
        sticky("campaign_id", _v(event, "switchdesk_campaign_id"), first)
        sticky("dialer_id", _id(_v(event, "switchdesk_dialer_id")), first)
        sticky("conference_id", _id(_v(event, "switchdesk_conference_id") or _v(event, "conference_name")), first)
        sticky("call_script", _v(event, "switchdesk_call_script"), first)

        number = data.get("dst_num") if data.get("type") == "outbound" else data.get("cid_num")
        data["a2"] = country_of_number(number, account.country)
        return data

    def _call_id(self, event: Any, uid: str) -> str:
        """The first leg: exported by our dialplan, mod_callcenter's caller leg, or the originating leg."""
        for value in (_v(event, "switchdesk_call_id"), _v(event, "cc_member_session_uuid")):
            if value:
                return value
        if _h(event, "Other-Type") == "originator":
            other = _h(event, "Other-Leg-Unique-ID")
            if other:
                return (self._leg(other).get("call_id") or other)
        return uid

    @staticmethod
    def _leg(uid: str) -> dict[str, Any]:
        row = ActiveCall.select(ActiveCall.data).where(ActiveCall.uuid == uid).first()
        return (row.data or {}) if row is not None else {}

    def _guess_type(self, event: Any, account: Account, direction: str | None,
                    src_device: int | None) -> tuple[str, int | None]:
        """Before our dialplan has marked the call: what it will route the number to (type, queue id)."""
        number = _h(event, "Caller-Destination-Number") or ""
        if direction != "inbound":
            return ("internal" if _v(event, "switchdesk_device_id") else "outbound"), None
        if _h(event, "Caller-Context") == "public":
            did = self._did(number)
            if did is not None and did.target_type == "queue":
                return "queue", did.target_id
            return "inbound", None
        if src_device is None:
            return "inbound", None
        ext = Extension.get_or_none((Extension.account == account.id) & (Extension.number == number))
        if ext is None:
            return "outbound", None
        return ("queue", ext.target_id) if ext.target_type == "queue" else ("internal", None)

    @staticmethod
    def _dialed_device(event: Any, account: Account) -> int | None:
        user, domain = _v(event, "dialed_user"), (_v(event, "dialed_domain") or "").lower()
        if not user or domain != account.domain:
            return None
        return (Device.select(Device.id)
                .where((Device.account == account.id) & (Device.sip_username == user)).scalar())

    @staticmethod
    def _device_user(account_id: int, device_id: int | None) -> int | None:
        if device_id is None:
            return None
        return (Device.select(Device.user)
                .where((Device.id == device_id) & (Device.account == account_id)).scalar())

    @staticmethod
    def _lead_name(account_id: int, lead_id: str | None) -> str | None:
        """Filled when exactly one visible lead of the account has that lead id (DESIGN.md, Event fields)."""
        if not lead_id:
            return None
        rows = list(Lead.select(Lead.name).join(PhoneList)
                    .where((PhoneList.account == account_id) & (Lead.lead_id == lead_id) & Lead.import_id.is_null())
                    .limit(2))
        return rows[0].name if len(rows) == 1 else None

    @staticmethod
    def _queue_end(event: Any) -> dict[str, Any]:
        """member-queue-end: why a caller left the queue and how long it waited (CC-* headers)."""
        out: dict[str, Any] = {}
        joined = _int(_h(event, "CC-Member-Joined-Time"))
        if (_h(event, "CC-Cause") or "").lower() == "cancel":
            out["canceled"] = _cancel_reason(_h(event, "CC-Cancel-Reason"))
            until = _int(_h(event, "CC-Member-Leaving-Time"))
        else:
            until = _int(_h(event, "CC-Agent-Answered-Time")) or _int(_h(event, "CC-Member-Leaving-Time"))
        if joined and until:
            out["cc_wait"] = max(0, until - joined)
        return out

    @staticmethod
    def _end_fields(event: Any, data: dict[str, Any]) -> dict[str, Any]:
        """CHANNEL_HANGUP_COMPLETE: FreeSWITCH's own timings and, for queue legs, mod_callcenter's outcome."""
        out: dict[str, Any] = {
            "waitms": _ms(event, "waitmsec", "waitusec"),
            "durationms": _ms(event, "mduration", "uduration"),
            "progressms": _ms(event, "progressmsec", "progressusec"),
            "billms": _ms(event, "billmsec", "billusec"),
            "hangup_cause": _h(event, "Hangup-Cause") or _v(event, "hangup_cause"),
        }
        side = _v(event, "cc_side")
        joined = _int(_v(event, "cc_queue_joined_epoch"))
        until = None
        if side == "member":
            until = (_int(_v(event, "cc_queue_answered_epoch")) or _int(_v(event, "cc_queue_canceled_epoch"))
                     or _int(_v(event, "cc_queue_terminated_epoch")))
        elif side == "agent":
            until = _int(_v(event, "answer_epoch")) or None
        out["cc_wait"] = max(0, until - joined) if joined and until else data.get("cc_wait")
        cause = (_v(event, "cc_cause") or "").lower()
        if side == "member" and cause == "cancel":
            out["canceled"] = _cancel_reason(_v(event, "cc_cancel_reason") or data.get("canceled"))
        elif side == "member" and cause == "answered":
            out["canceled"] = None
        else:
            out["canceled"] = data.get("canceled")
        return out

    # -- after a (re)connect --

    def request_reconcile(self) -> None:
        self.engine.group.spawn(self._reconcile_safely)

    def _reconcile_safely(self) -> None:
        """Reconcile once the command connection is up; give up when the event connection drops
        again (its next connect asks anew)."""
        for attempt in range(RECONCILE_ATTEMPTS):
            while not self.engine.commands.wait_connected(1.0):
                if not self.engine.events.connected:
                    return
            try:
                self.reconcile()
                return
            except ESLError as exc:
                log.warning("call reconciliation attempt %d failed: %s", attempt + 1, exc)
            except Exception:
                log.exception("call reconciliation failed")
                return
            gevent.sleep(RECONCILE_RETRY)

    def reconcile(self) -> int:
        """End the recorded legs FreeSWITCH no longer has; returns how many were ended.

        The channel list is read on the command connection outside any transaction;
        only legs recorded before the list was asked for are candidates, and a
        leg whose real CHANNEL_HANGUP_COMPLETE arrives meanwhile ends normally.
        """
        with self._reconcile_lock:
            client = self.engine.commands.require_client()
            asked_ms = int(time.time() * 1000)
            host = client.api("hostname", timeout=10).strip()
            reply = client.api("show channels as json", timeout=30)
            try:
                parsed = json.loads(reply)
                rows = (parsed.get("rows") or []) if isinstance(parsed, dict) else None
                if rows is None or not isinstance(rows, list):
                    raise ValueError("no rows")
                live = {row.get("uuid") for row in rows if isinstance(row, dict)}
            except ValueError:
                log.warning("unreadable 'show channels as json' reply; nothing reconstructed: %r", reply[:200])
                return 0
            if self.grace:
                gevent.sleep(self.grace)
            ended = 0
            with connection():
                candidates = list(ActiveCall.select().where(
                    ActiveCall.ended_at.is_null() & (ActiveCall.seen_ms < asked_ms)
                    & ActiveCall.fs_host.in_([host, ""])
                ).order_by(ActiveCall.seen_ms))
                for row in candidates:
                    if row.uuid in live:
                        continue
                    stamp = now()
                    with db.atomic():
                        done = ActiveCall.update(ended_at=stamp).where(
                            (ActiveCall.uuid == row.uuid) & ActiveCall.ended_at.is_null()).execute()
                        if done:
                            data = payload(row.data or {}, stamp, end=True)
                            data["reconstructed"] = True
                            emit(row.account_id, "call:end", data, ts=stamp)
                            ended += done
                purge_ended()
            self.reconciles += 1
            if ended:
                log.info("reconstructed call:end for %d leg(s) that ended while we could not hear", ended)
            return ended


def purge_ended() -> int:
    """Forget legs that ended more than KEEP_ENDED seconds ago."""
    return ActiveCall.delete().where(ActiveCall.ended_at < now() - KEEP_ENDED).execute()


def payload(data: dict[str, Any], ts: int, *, end: bool = False) -> dict[str, Any]:
    """The documented fields, every key present; the end-only ones null unless the leg has ended."""
    out = {key: data.get(key) for key in FIELDS}
    out["ts"] = ts
    if not end:
        for key in END_FIELDS:
            out[key] = None
    return out


def attach(engine: Any) -> CallEvents:
    """Register the handlers on the engine's event connection and reconcile after each (re)connect."""
    plugin = CallEvents(engine)
    engine.callevents = plugin
    for name in EVENTS:
        engine.events.on_event(name, plugin.on_channel)
    engine.events.on_event("callcenter::info", plugin.on_callcenter)
    engine.events.on_connect(lambda _client: plugin.request_reconcile())
    return plugin
