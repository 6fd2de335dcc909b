"""The call:* event fields of a leg, derived from FreeSWITCH's events and what earlier events said.

What each documented field is made of (our channel variables, mod_callcenter's
variables and headers, FreeSWITCH's timings, the directory and the leads)
changes with the README's "Call events" and with FreeSWITCH's headers, apart
from when events are emitted (`callevents`) or how a missed `call:end` is
reconstructed (`reconcile`). Pure reads: nothing here writes.

On every event of every leg: accounts, devices, extensions, DIDs and queues
come from the directory's in-memory views (engine.directory.views), the rest
through SQL compiled once (engine.store.fastq).
"""
from __future__ import annotations

import functools
from typing import Any

import phonenumbers

from engine.callcenter import fsconfig
from engine.calls import legs
from engine.directory import views
from engine.directory.views import AccountView, RouteView
from engine.store import fastq
from engine.store.db import JSONField
from engine.store.models import ActiveCall, Lead, PhoneList, now

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


def header(event: Any, name: str) -> str | None:
    """A header as stripped text; arrays joined like FreeSWITCH's `${var}`; empty is None."""
    value = event.get(name)
    if value is None:
        return None
    if isinstance(value, list):
        value = "|".join(value)
    value = value.strip()
    return value or None


def _v(event: Any, name: str) -> str | None:
    return header(event, "variable_" + name)


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


def event_ts(event: Any) -> int:
    """When the event happened (Event-Date-Timestamp, in microseconds) as epoch seconds; now if absent."""
    stamp = _int(header(event, "Event-Date-Timestamp"))
    return stamp // 1_000_000 if stamp else now()


@functools.lru_cache(maxsize=8192)
def country_of_number(number: str | None, default_region: str | None) -> str | None:
    """ISO 3166-1 alpha-2 of a phone number, the account's country as the default region.

    Every event of a leg asks again for the same number: parsing it is kept (pure, bounded).
    """
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


def payload(data: dict[str, Any], ts: int, *, end: bool = False) -> dict[str, Any]:
    """The documented fields, every key present; the end-only ones null unless the leg has ended."""
    out = {key: data.get(key) for key in FIELDS}
    out["ts"] = ts
    if not end:
        for key in END_FIELDS:
            out[key] = None
    return out


def account_of(event: Any) -> AccountView | None:
    """The account of a leg: our variables first, then the domain in FreeSWITCH's own names."""
    account_id = _int(_v(event, "switchdesk_account_id"))
    if account_id is not None:
        account = views.account(account_id)
        if account is not None:
            return account
    domains: list[str] = []
    for name in (_v(event, "cc_queue"), _v(event, "cc_agent"), header(event, "CC-Queue")):
        parsed = fsconfig.parse_name(name or "")
        if parsed:
            domains.append(parsed[1])
    for name in ("variable_domain_name", "variable_user_context", "Caller-Context", "variable_dialed_domain"):
        value = header(event, name)
        if value:
            domains.append(value.lower())
    for domain in dict.fromkeys(domains):
        if domain in ("public", "default"):
            continue
        account = views.account_by_domain(domain)
        if account is not None:
            return account
    if header(event, "Caller-Context") == "public":  # a DID before our dialplan has run
        did = _did(header(event, "Caller-Destination-Number"))
        if did is not None:
            return views.account(did.account_id)
    return None


def _did(number: str | None) -> RouteView | None:
    if not number:
        return None
    return views.did(number)


def leg_fields(event: Any, account: AccountView, prior: dict[str, Any]) -> dict[str, Any]:
    """The sticky fields of the leg: what this event says, else what earlier ones said."""
    uid = header(event, "Unique-ID") or ""
    direction = header(event, "Call-Direction")
    data = dict(prior)
    data["id"] = uid
    if not data.get("call_id") or data["call_id"] == uid:
        data["call_id"] = _call_id(event, uid)
    first = _leg(data["call_id"]) if data["call_id"] != uid else {}
    other_uid = _v(event, "cc_agent_uuid") or (
        header(event, "Other-Leg-Unique-ID") if header(event, "Other-Type") == "originatee" else None)
    other = _leg(other_uid) if other_uid else {}

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
        dialed = _dialed_device(event, account)
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
        data["type"], routed_queue = _guess_type(event, account, direction, data.get("src_device_id"))

    sticky("dst_num", _v(event, "switchdesk_dst_num"), first)
    if data.get("dst_num") is None:
        data["dst_num"] = header(event, "Caller-Destination-Number")
    for key, name in (("cid_num", "Caller-Caller-ID-Number"), ("cid_name", "Caller-Caller-ID-Name")):
        sticky(key, header(event, name))

    # users: ours from click-to-call, the agent of mod_callcenter, else the device's user
    agent = fsconfig.parse_name(_v(event, "cc_agent") or "")
    agent_user = agent[0] if agent and agent[1] == account.domain else None
    src_user = _int(_v(event, "switchdesk_src_user_id"))
    if src_user is None and data.get("src_device_id") != old_src:
        src_user = _device_user(account.id, data.get("src_device_id"))
    sticky("src_user_id", src_user, first)
    dst_user = agent_user
    if dst_user is None and data.get("dst_device_id") != old_dst:
        dst_user = _device_user(account.id, data.get("dst_device_id"))
    sticky("dst_user_id", dst_user, other)

    queue = fsconfig.parse_name(_v(event, "cc_queue") or header(event, "CC-Queue") or "")
    queue_id = queue[0] if queue and queue[1] == account.domain else _int(_v(event, "switchdesk_queue_id"))
    queue_id = queue_id if queue_id is not None else routed_queue
    old_queue = data.get("queue_id")
    sticky("queue_id", queue_id, first)
    site = _int(_v(event, "switchdesk_site_id"))
    if site is None and data.get("queue_id") is not None and data.get("queue_id") != old_queue:
        queue_view = views.queue(account.id, data["queue_id"]) if isinstance(data["queue_id"], int) else None
        site = queue_view.site_id if queue_view is not None else None
    sticky("site_id", site, first)

    old_lead = data.get("lead_id")
    sticky("lead_id", _v(event, "switchdesk_lead_id"), first)
    named = _v(event, "switchdesk_lead_name")  # the dialer names its lead
    if named is not None:
        data["lead_name"] = named
    elif data.get("lead_id") != old_lead or "lead_name" not in data:
        data["lead_name"] = _lead_name(account.id, data.get("lead_id"))
    sticky("tags", _v(event, "switchdesk_tags"), first)
    sticky("campaign_id", _v(event, "switchdesk_campaign_id"), first)
    sticky("dialer_id", _id(_v(event, "switchdesk_dialer_id")), first)
    sticky("conference_id", _id(_v(event, "switchdesk_conference_id") or _v(event, "conference_name")), first)
    sticky("call_script", _v(event, "switchdesk_call_script"), first)

    number = data.get("dst_num") if data.get("type") == "outbound" else data.get("cid_num")
    data["a2"] = country_of_number(number, account.country)
    return data


def _call_id(event: Any, uid: str) -> str:
    """The first leg: exported by our dialplan, mod_callcenter's caller leg, or the originating leg."""
    for value in (_v(event, "switchdesk_call_id"), _v(event, "cc_member_session_uuid")):
        if value:
            return value
    if header(event, "Other-Type") == "originator":
        other = header(event, "Other-Leg-Unique-ID")
        if other:
            return (_leg(other).get("call_id") or other)
    return uid


_DATA = JSONField()


def _leg(uid: str) -> dict[str, Any]:
    """Another leg's fields (the call's first leg, the other side): from memory if the plugin kept it."""
    kept = legs.get(uid)
    if kept is not None:
        return kept.data
    rows = fastq.select("call_fields.leg", lambda u: (
        ActiveCall.select(ActiveCall.data).where(ActiveCall.uuid == u).limit(1)), uid)
    return (_DATA.python_value(rows[0][0]) or {}) if rows else {}


def _guess_type(event: Any, account: AccountView, direction: str | None,
                src_device: int | None) -> tuple[str, int | None]:
    """Before our dialplan has marked the call: what it will route the number to (type, queue id)."""
    number = header(event, "Caller-Destination-Number") or ""
    if direction != "inbound":
        return ("internal" if _v(event, "switchdesk_device_id") else "outbound"), None
    if header(event, "Caller-Context") == "public":
        did = _did(number)
        if did is not None and did.target_type == "queue":
            return "queue", did.target_id
        return "inbound", None
    if src_device is None:
        return "inbound", None
    ext = views.extension(account.id, number)
    if ext is None:
        return "outbound", None
    return ("queue", ext.target_id) if ext.target_type == "queue" else ("internal", None)


def _dialed_device(event: Any, account: AccountView) -> int | None:
    user, domain = _v(event, "dialed_user"), (_v(event, "dialed_domain") or "").lower()
    if not user or domain != account.domain:
        return None
    device = views.device(account.id, user)
    return device.id if device is not None else None


def _device_user(account_id: int, device_id: int | None) -> int | None:
    if device_id is None:
        return None
    device = views.device_by_id(account_id, device_id)
    return device.user_id if device is not None else None


def _lead_name(account_id: int, lead_id: str | None) -> str | None:
    """Filled when exactly one visible lead of the account has that lead id (DESIGN.md, Event fields)."""
    if not lead_id:
        return None
    rows = fastq.select("call_fields.lead_name", lambda a, lead: (
        Lead.select(Lead.name).join(PhoneList)
        .where((PhoneList.account == a) & (Lead.lead_id == lead) & Lead.import_id.is_null()).limit(2)),
        account_id, lead_id)
    return rows[0][0] if len(rows) == 1 else None


def queue_end_fields(event: Any) -> dict[str, Any]:
    """member-queue-end: why a caller left the queue and how long it waited (CC-* headers)."""
    out: dict[str, Any] = {}
    joined = _int(header(event, "CC-Member-Joined-Time"))
    if (header(event, "CC-Cause") or "").lower() == "cancel":
        out["canceled"] = _cancel_reason(header(event, "CC-Cancel-Reason"))
        until = _int(header(event, "CC-Member-Leaving-Time"))
    else:
        until = _int(header(event, "CC-Agent-Answered-Time")) or _int(header(event, "CC-Member-Leaving-Time"))
    if joined and until:
        out["cc_wait"] = max(0, until - joined)
    return out


def end_fields(event: Any, data: dict[str, Any]) -> dict[str, Any]:
    """CHANNEL_HANGUP_COMPLETE: FreeSWITCH's own timings and, for queue legs, mod_callcenter's outcome."""
    out: dict[str, Any] = {
        "waitms": _ms(event, "waitmsec", "waitusec"),
        "durationms": _ms(event, "mduration", "uduration"),
        "progressms": _ms(event, "progressmsec", "progressusec"),
        "billms": _ms(event, "billmsec", "billusec"),
        "hangup_cause": header(event, "Hangup-Cause") or _v(event, "hangup_cause"),
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
