"""mod_xml_curl endpoints: FreeSWITCH fetches its directory, callcenter.conf and dialplan here.

Reachable only from allowed networks (loopback by default) and with HTTP
basic auth. Every answer is a `freeswitch/xml` document built with
ElementTree, so client strings are always escaped; "not found" makes
FreeSWITCH fall back to its local files, which the `freeswitch-conf/`
overlay leaves empty.

The answers for a device, a number or a queue are the same for every call
until the configuration changes: they are rendered once and kept in memory
(engine.directory.views.cached), dropped by the change notices of whatever
they were built from (DESIGN.md, "The hot path is compiled and cached").
"""
from __future__ import annotations

import functools
import hmac
import ipaddress
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import phonenumbers
from flask import Blueprint, Response, current_app, request

from api.spec import endpoint
from engine.callcenter import exits, fsconfig
from engine.directory import fscache, views
from engine.directory.views import AccountView, DeviceView
from engine.media import library
from engine.store.models import Account, Queue
from engine.voicemail import boxes

bp = Blueprint("freeswitch", __name__, url_prefix="/freeswitch")

DIAL_STRING = (
    "{^^:sip_invite_domain=${dialed_domain}:presence_id=${dialed_user}@${dialed_domain}}"
    "${sofia_contact(*/${dialed_user}@${dialed_domain})}"
)
CHECKIN = re.compile(r"^\*\*\*(\d{6,12})$")
PHONE = re.compile(r"^\+?\d{3,20}$")
GATEWAY = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Group pickup: `*8` or `*8<intercept group id>` (pickup_section).
PICKUP_PREFIX = "*8"
PICKUP = re.compile(r"^\*8([0-9]{0,9})$")
# Where a queue call goes once `callcenter` returns (engine.callcenter.exits): queue id, cc_cancel_reason, cc_exit_key.
EXIT = re.compile(r"^switchdesk_exit_(\d{1,16})_([A-Z_]{0,32})_([0-9*#]?)$")


def _render(section: ET.Element | None) -> bytes:
    doc = ET.Element("document", type="freeswitch/xml")
    if section is None:
        section = ET.Element("section", name="result")
        ET.SubElement(section, "result", status="not found")
    doc.append(section)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(doc, encoding="utf-8")


NOT_FOUND = _render(None)


def _respond(body: bytes | None) -> Response:
    return Response(NOT_FOUND if body is None else body, mimetype="text/xml")


def _xml(section: ET.Element | None) -> Response:
    return _respond(_render(section))


def not_found() -> Response:
    return _respond(None)


def _answer(key: tuple, build: Callable[[], tuple[Any, ET.Element | None]]) -> Response:
    """The rendered answer for `key`, from memory once built; `build` gives (the account id it depends on,
    or None when it found none; the section or None for "not found")."""
    def load() -> tuple[Any, bytes | None]:
        tag, section = build()
        return tag, None if section is None else _render(section)
    return _respond(views.cached(key, load))


@functools.lru_cache(maxsize=32)
def _networks(networks: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def _allowed() -> bool:
    try:
        ip = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    networks = _networks(tuple(current_app.config.get("XMLCURL_ALLOW", ("127.0.0.0/8", "::1/128"))))
    if not any(ip in network for network in networks):
        return False
    password = current_app.config.get("XMLCURL_PASSWORD")
    if not password:
        return False  # never served without credentials
    auth = request.authorization
    user = current_app.config.get("XMLCURL_USER", "freeswitch")
    return bool(
        auth is not None and auth.type == "basic"
        and hmac.compare_digest((auth.username or "").encode(), user.encode())
        and hmac.compare_digest((auth.password or "").encode(), password.encode())
    )


def _denied() -> Response:
    response = not_found()
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="switchdesk"'
    return response


class _UrlencodedForm:
    """The few fields an answer needs, found in the raw body of FreeSWITCH's form.

    A dialplan request carries every channel variable (~6 KB, 200+ fields); decoding all of
    them (werkzeug's `request.form`) cost more than the rest of a kept answer. A value is the
    first one of its name, decoded as werkzeug decodes it (`+` and `%XX`, UTF-8); names are
    matched as sent, which is how FreeSWITCH sends ours (letters, digits, `_`, `-`).
    """

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = b"&" + body

    def get(self, name: str, default: str = "") -> str:
        key = b"&" + name.encode() + b"="
        start = self.body.find(key)
        if start < 0:
            return default
        start += len(key)
        end = self.body.find(b"&", start)
        raw = self.body[start:] if end < 0 else self.body[start:end]
        if b"%" not in raw and b"+" not in raw:
            return raw.decode("utf-8", "replace")
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")


_FORM = "switchdesk.xmlcurl_form"


def _field(name: str) -> str:
    form = request.environ.get(_FORM)
    if form is None:
        if request.mimetype == "application/x-www-form-urlencoded":
            form = _UrlencodedForm(request.get_data(cache=True))
        else:
            form = request.form
        request.environ[_FORM] = form
    return form.get(name, "")


def _params(parent: ET.Element, tag: str, items: Iterable[tuple[str, str]]) -> None:
    holder = ET.SubElement(parent, tag + "s")
    for name, value in items:
        ET.SubElement(holder, tag, name=name, value=value)


# --- directory ----------------------------------------------------------------------------------


def directory_section(account: AccountView, device: DeviceView) -> ET.Element:
    section = ET.Element("section", name="directory")
    domain = ET.SubElement(section, "domain", name=account.domain)
    _params(domain, "param", [("dial-string", DIAL_STRING)])
    _params(domain, "variable", [
        ("user_context", account.domain),
        ("switchdesk_account_id", str(account.id)),
    ])
    user = ET.SubElement(domain, "user", id=device.sip_username)
    ttl = fscache.cacheable()
    if ttl:
        user.set("cacheable", ttl)  # FreeSWITCH keeps it; engine.directory.fscache flushes it on changes
    params = [("a1-hash", device.sip_a1_hash)]
    variables = [("switchdesk_device_id", str(device.id)), ("user_context", account.domain)]
    if device.site_id:  # the site's gateway and caller id on outbound calls (dialplan_section); call events' site_id
        variables.append(("switchdesk_site_id", str(device.site_id)))
    if device.cid_name:
        variables.append(("effective_caller_id_name", device.cid_name))
    if device.cid_num:
        variables.append(("effective_caller_id_number", device.cid_num))
    overrides = views.caller_id(account.id, device.user_id) if device.user_id else None
    variables = caller_id_variables(overrides, variables)
    if overrides is not None and overrides.blf_ext:
        # the user's BLF lamp (mod_sofia presence, manage-presence): the device's calls, both ways, are
        # presence of `<blf_ext>@<domain>`; calls from it through this variable, calls to it through its dial string
        presence = f"{overrides.blf_ext}@{account.domain}"
        variables.append(("presence_id", presence))
        params.append(("dial-string", DIAL_STRING.replace("${dialed_user}@${dialed_domain}}", presence + "}", 1)))
    _params(user, "param", params)
    _params(user, "variable", variables)
    return section


def caller_id_variables(overrides: views.CallerIdView | None,
                        variables: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The owner's caller-ID overrides (`override_device`): `ecnam`/`ecnum` replace the device's caller id
    (FreeSWITCH's effective_caller_id_*, what every call shows), `ocnam`/`ocnum` become the
    outbound_caller_id_* that calls through the outbound gateway show, `cnum_by_country` becomes
    `switchdesk_cnum_<country>` that outbound calls to that country show (outbound_caller_id). A value that
    FreeSWITCH would expand (`$`) is left out."""
    if overrides is None:
        return variables
    replaced = {"effective_caller_id_name": overrides.ecnam, "effective_caller_id_number": overrides.ecnum,
                "outbound_caller_id_name": overrides.ocnam, "outbound_caller_id_number": overrides.ocnum}
    replaced.update({f"switchdesk_cnum_{country}": number for country, number in overrides.cnum_by_country})
    safe = {k: v for k, v in replaced.items() if v and "$" not in v}
    return [(k, v) for k, v in variables if k not in safe] + list(safe.items())


def _directory() -> Response:
    domain = _field("domain") or _field("key_value")
    username = _field("user")
    if _field("purpose") or not domain or not username:
        return not_found()
    domain = domain.lower()

    def build() -> tuple[Any, ET.Element | None]:
        account = views.account_by_domain(domain)
        if account is None:
            return None, None
        device = views.device(account.id, username)
        return account.id, directory_section(account, device) if device is not None else None
    box = boxes.BOX_USER.match(username)
    if box and _field("action") != "sip_auth":  # never for SIP authentication: a box is no phone
        return _voicemail_directory(domain, username, int(box.group(1)), build)
    return _answer(("directory", domain, username), build)


def _voicemail_directory(domain: str, username: str, box_id: int,
                         device_build: Callable[[], tuple[Any, ET.Element | None]]) -> Response:
    """mod_voicemail's lookup of box `vm-<id>` (a device of that name, if any, comes first)."""
    def build() -> tuple[Any, ET.Element | None]:
        tag, section = device_build()
        if section is not None or tag is None:
            return tag, section
        account = views.account(tag)
        found = views.voicemail_box(tag, box_id) if account is not None else None
        return tag, voicemail_directory_section(account, found) if found is not None else None
    return _answer(("voicemail_directory", domain, username), build)


# --- configuration: callcenter.conf ---------------------------------------------------------------


def callcenter_section(queues: list[tuple[Queue, str]]) -> ET.Element:
    """Settings and queues only: agents and tiers always come over ESL (DESIGN.md)."""
    section = ET.Element("section", name="configuration")
    conf = ET.SubElement(section, "configuration", name="callcenter.conf", description="switchdesk")
    ET.SubElement(conf, "settings")
    holder = ET.SubElement(conf, "queues")
    media = queue_media_paths([queue for queue, _ in queues])
    for queue, domain in queues:
        element = ET.SubElement(holder, "queue", name=fsconfig.queue_name(queue.id, domain))
        for name, value in fsconfig.queue_params(queue, media.get(queue.account_id)):
            ET.SubElement(element, "param", name=name, value=value)
    return section


def queue_media_paths(queues: list[Queue]) -> dict[int, dict[int, str]]:
    """account id -> {media id: file} for the media these queues play (one query per account)."""
    wanted: dict[int, set[int]] = {}
    for queue in queues:
        wanted.setdefault(queue.account_id, set()).update(fsconfig.media_ids(queue))
    return {account_id: library.paths_of(account_id, ids) for account_id, ids in wanted.items() if ids}


def _configuration() -> Response:
    if _field("key_value") != "callcenter.conf":
        return not_found()
    wanted = _field("CC-Queue")
    parsed = fsconfig.parse_name(wanted) if wanted else None
    if wanted and parsed is None:
        return not_found()

    def build() -> tuple[Any, ET.Element | None]:
        query = Queue.select(Queue, Account).join(Account)
        if parsed is not None:
            query = query.where((Queue.id == parsed[0]) & (Account.domain == parsed[1]))
        queues = [(q, q.account.domain) for q in query.order_by(Queue.id)]
        if parsed is None:
            return views.ANY, callcenter_section(queues)
        return (queues[0][0].account_id, callcenter_section(queues)) if queues else (None, None)
    return _answer(("callcenter.conf", wanted), build)


# --- dialplan -----------------------------------------------------------------------------------


def _extension(context: ET.Element, name: str, number: str, actions: list[tuple[str, str]]) -> None:
    ext = ET.SubElement(context, "extension", name=name)
    cond = ET.SubElement(ext, "condition", field="destination_number", expression=f"^{re.escape(number)}$")
    for app, data in actions:
        attrs = {"application": app}
        if data:
            attrs["data"] = data
        ET.SubElement(cond, "action", **attrs)


def route_actions(account: AccountView, target_type: str, target_id: int) -> list[tuple[str, str]] | None:
    """The dialplan actions that reach an extension's target, or None when it is gone."""
    if target_type == "queue":
        return queue_actions(account, target_id)
    devices: list[DeviceView] | tuple[DeviceView, ...]
    if target_type == "device":
        device = views.device_by_id(account.id, target_id)
        devices = [device] if device is not None else []
    elif target_type == "user":
        return user_actions(account, target_id)
    else:
        return None
    if not devices:
        return None
    timeout = max((d.timeout for d in devices), default=30) or 30
    dial = ",".join(fsconfig.device_contact(d, account) for d in devices)
    return [("set", f"call_timeout={timeout}"), ("set", "hangup_after_bridge=true"), ("bridge", dial)]


def outbound_caller_id(extension: ET.Element | None, country: str | None = None) -> None:
    """A call through the outbound gateway shows the caller's outbound caller id when its directory entry
    has one (caller_id_variables): before the route's last action (the bridge), conditions that never
    break set it; then, for a destination in `country`, the user's number for that country
    (`switchdesk_cnum_<country>`, cnum_by_country); the bridge follows in a condition of its own on the
    same number. The variables are the caller's own (its directory entry): one kept answer serves every
    caller of the number."""
    route = extension.find("condition") if extension is not None else None
    if route is None:
        return
    bridge = route.findall("action")[-1]
    route.remove(bridge)
    sources = [(kind, f"outbound_caller_id_{kind}") for kind in ("name", "number")]
    if country:
        sources.append(("number", f"switchdesk_cnum_{country}"))
    for kind, variable in sources:
        condition = ET.SubElement(extension, "condition", field=f"${{{variable}}}",
                                  expression="^.+$", attrib={"break": "never"})
        ET.SubElement(condition, "action", application="set", data=f"effective_caller_id_{kind}=${{{variable}}}")
    ET.SubElement(extension, "condition", field=route.get("field"), expression=route.get("expression")).append(bridge)


def destination_country(number: str, default_region: str | None) -> str | None:
    """The country (ISO 3166-1 alpha-2) of a dialled number: national numbers in the account's country."""
    try:
        parsed = phonenumbers.parse(number, (default_region or "").upper() or None)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.region_code_for_number(parsed)


def outbound_section(account: AccountView, number: str, site_id: int | None) -> ET.Element | None:
    """A number outside the account, through the gateway of the caller's site (its device's `site_id`) or else
    the account's; the site's caller id unless the user overrides it (ocnam/ocnum, cnum_by_country)."""
    site = views.site(account.id, site_id) if site_id else None
    gateway = (site.outbound_gateway if site is not None else None) or account.outbound_gateway
    if not (gateway and GATEWAY.match(gateway) and PHONE.match(number)):
        return None
    section = ET.Element("section", name="dialplan", description="switchdesk")
    context = ET.SubElement(section, "context", name=account.domain)
    actions = [*call_exports(account, "outbound"), ("set", "hangup_after_bridge=true")]
    if site is not None:
        shown = (("name", site.cid_name), ("number", site.cid_num))
        actions += [("set", f"effective_caller_id_{kind}={value}")
                    for kind, value in shown if value and "$" not in value]
    _extension(context, "switchdesk_outbound", number, [*actions, ("bridge", f"sofia/gateway/{gateway}/{number}")])
    outbound_caller_id(context.find("extension"), destination_country(number, account.country))
    return section


# --- queue calls: media, agent offers, exits -------------------------------------------------------


def queue_actions(account: AccountView, queue_id: int) -> list[tuple[str, str]] | None:
    """A caller entering a queue: its join announcement, what the agent's offer carries, then the exit.

    mod_callcenter plays hold music and the periodic announcement itself (callcenter.conf); the
    rest is channel variables it reads from the caller's leg: `cc_exit_keys` (keys that end the
    wait), `cc_outbound_announce` (played to the agent once it answers, before the bridge) and
    `cc_export_vars` (copied onto the agent's leg: `sip_auto_answer`, `originate_timeout` for the
    queue's ring_timeout). Once `callcenter` returns without a bridge the caller is sent to
    `switchdesk_exit_<queue>_${cc_cancel_reason}_${cc_exit_key}` (exit_section), when the queue has exits.
    """
    queue = views.queue_call(account.id, queue_id)
    if queue is None:
        return None
    actions = [("set", "hangup_after_bridge=true"), ("set", f"switchdesk_queue_id={queue_id}")]
    keys = exits.exit_keys(queue.exits)
    if keys:
        actions.append(("set", f"cc_exit_keys={keys}"))
    if queue.pre_bridge_file:
        actions.append(("set", f"cc_outbound_announce={library.file_path(account.id, queue.pre_bridge_file)}"))
    exported = []
    if queue.auto_answer:
        actions.append(("set", "sip_auto_answer=true"))
        exported.append("sip_auto_answer")
    if queue.ring_timeout > 0:
        actions.append(("set", f"originate_timeout={queue.ring_timeout}"))
        exported.append("originate_timeout")
    if exported:
        actions.append(("set", f"cc_export_vars={','.join(exported)}"))
    actions.append(("answer", ""))
    if queue.join_file:
        actions.append(("playback", library.file_path(account.id, queue.join_file)))
    actions.append(("callcenter", fsconfig.queue_name(queue_id, account.domain)))
    if queue.ring_timeout > 0:
        actions.append(("unset", "originate_timeout"))
    if queue.exits:
        actions.append(("transfer", f"switchdesk_exit_{queue_id}_${{cc_cancel_reason}}_${{cc_exit_key}} XML "
                                    f"{account.domain}"))
    actions.append(("hangup", ""))
    return actions


def exit_actions(account: AccountView, target: dict[str, Any]) -> list[tuple[str, str]] | None:
    """The actions of one exit (engine.callcenter.exits); None when its target is gone."""
    kind = target.get("type")
    if kind == "hangup":
        return [("hangup", "NORMAL_CLEARING")]
    if kind == "queue":
        return queue_actions(account, int(target["target"]))
    if kind in ("extension", "number"):
        return [("transfer", f"{target['target']} XML {account.domain}")]
    if kind == "voicemail":
        return voicemail_actions(account, int(target["target"]))
    return None


def exit_section(account: AccountView, number: str, queue_id: int, reason: str, key: str) -> ET.Element | None:
    """`switchdesk_exit_<queue>_<cc_cancel_reason>_<cc_exit_key>`: where the queue sends a caller it gave up on.
    Without a matching exit (the caller hung up, was bridged, or the queue has none for it): hang up."""
    queue = views.queue_call(account.id, queue_id)
    chosen = exits.for_reason(queue.exits, reason, key) if queue is not None else None
    actions = (exit_actions(account, chosen) if chosen else None) or [("hangup", "NORMAL_CLEARING")]
    section = ET.Element("section", name="dialplan", description="switchdesk")
    context = ET.SubElement(section, "context", name=account.domain)
    _extension(context, f"switchdesk_exit_{queue_id}", number,
               [("set", f"switchdesk_queue_exit={reason or 'NONE'}"), *actions])
    return section


def voicemail_actions(account: AccountView, user_id: int) -> list[tuple[str, str]] | None:
    """The user's voicemail box (mod_voicemail, box `vm-<vm_id>`), or None when it has none."""
    user = views.user_call(account.id, user_id)
    box = views.voicemail_box(account.id, user.vm_id) if user is not None and user.vm_id else None
    if box is None:
        return None
    actions = [("answer", ""), ("set", f"switchdesk_voicemail_box={box.id}")]
    if box.greeting_file:  # the box's own greeting (a media) instead of mod_voicemail's spoken one
        actions += [("playback", library.file_path(account.id, box.greeting_file)),
                    ("set", "skip_greeting=true"), ("set", "skip_instructions=true")]
    return [*actions, ("voicemail", f"default {account.domain} {boxes.box_user(box.id)}"), ("hangup", "")]


def user_actions(account: AccountView, user_id: int) -> list[tuple[str, str]] | None:
    """A call to a user: its devices all at once (`follow_me` 0) or one after another, `follow_me` seconds
    each (`|`: the next one once the previous did not answer); `call_timeout` (else the devices' own
    timeout) bounds the ringing; then, unanswered, the user's voicemail box. None when it has neither."""
    user = views.user_call(account.id, user_id)
    if user is None:
        return None
    devices = views.devices_of_user(account.id, user_id)
    voicemail = voicemail_actions(account, user_id)
    actions: list[tuple[str, str]] = []
    if devices:
        budget = user.call_timeout or max((d.timeout or fsconfig.DEFAULT_RING_SECONDS for d in devices), default=30)
        # members of the user's intercept groups may pick the call up while it rings (pickup_actions)
        pickups = [pickup_key(account, g) for g in views.intercept_groups(account.id, user_id)[0]]
        if user.follow_me > 0 and len(devices) > 1:
            legs = []
            for device in devices:
                seconds = min(user.follow_me, budget - sum(t for t, _ in legs))
                if seconds <= 0:
                    break
                legs.append((seconds, fsconfig.device_contact(device, account)))
            dial = "|".join(",".join(f"[leg_timeout={seconds}]{leg}" for leg in [contact, *pickups])
                            for seconds, contact in legs)
        else:
            dial = ",".join([*(fsconfig.device_contact(d, account) for d in devices), *pickups])
        actions = [("set", f"call_timeout={budget}"), ("set", "hangup_after_bridge=true")]
        if voicemail:
            actions.append(("set", "continue_on_fail=true"))
        actions.append(("bridge", dial))
    if voicemail:
        return actions + voicemail
    return actions or None


def pickup_key(account: AccountView, group: int) -> str:
    """The `pickup/<key>` leg a call to a group member rings, and what `pickup <key>` takes."""
    return f"pickup/switchdesk-{account.id}-{int(group)}"


def pickup_section(account: AccountView, number: str, device_id: str) -> tuple[Any, ET.Element | None]:
    """`*8` (the first of the caller's groups) or `*8<group>`: pick up a ringing call of an intercept group the
    calling device's user is in (`intercept_groups`) or may intercept (`intercept_other_groups`)."""
    device = views.device_by_id(account.id, int(device_id)) if device_id.isdigit() else None
    if device is None or not device.user_id:
        return account.id, None
    own, others = views.intercept_groups(account.id, device.user_id)
    wanted = number[len(PICKUP_PREFIX):]
    group = int(wanted) if wanted else (own or others or (0,))[0]
    if not group or group not in (*own, *others):
        return account.id, None
    section = ET.Element("section", name="dialplan", description="switchdesk")
    context = ET.SubElement(section, "context", name=account.domain)
    _extension(context, "switchdesk_pickup", number, [
        *call_exports(account, "internal"), ("pickup", pickup_key(account, group).removeprefix("pickup/"))])
    return account.id, section


def voicemail_directory_section(account: AccountView, box: views.VoicemailBoxView) -> ET.Element:
    """mod_voicemail's box `vm-<id>`: its PIN hash; a SIP password nobody has (no registration, no calls)."""
    section = ET.Element("section", name="directory")
    domain = ET.SubElement(section, "domain", name=account.domain)
    user = ET.SubElement(domain, "user", id=boxes.box_user(box.id))
    params = [("a1-hash", "!" * 32), ("vm-enabled", "true")]
    if box.pin_a1_hash:
        params.append(("vm-a1-hash", box.pin_a1_hash))
    _params(user, "param", params)
    _params(user, "variable", [("switchdesk_voicemail_box", str(box.id))])
    return section


# Set by click-to-call (engine.calls.originate) on its first leg; re-exported so bridged legs carry them too.
CALL_VARIABLES = ("switchdesk_src_device_id", "switchdesk_src_user_id", "switchdesk_lead_id", "switchdesk_tags",
                  "switchdesk_lead_name", "switchdesk_campaign_id", "switchdesk_dialer_id", "switchdesk_call_script")


def call_exports(account: AccountView, call_type: str) -> list[tuple[str, str]]:
    """`export`s that let the call events (engine.calls.callevents) attribute every leg of a call we route.

    Exported, so the legs this one bridges to inherit them: the account, the
    first leg's uuid (`call_id`), the call's type and dialed number. What the
    channel already carries (click-to-call sets its own type and number) is
    kept and re-exported, never replaced. Values are ids, our own words or
    channel-variable references that FreeSWITCH expands once, never client text.
    """
    def keep(name: str, value: str) -> tuple[str, str]:
        return ("export", f"{name}=${{{name}}}" if _field(f"variable_{name}") else f"{name}={value}")

    actions = [
        ("export", f"switchdesk_account_id={account.id}"),
        keep("switchdesk_call_id", "${uuid}"),
        keep("switchdesk_call_type", call_type),
        keep("switchdesk_dst_num", "${destination_number}"),
    ]
    actions += [("export", f"{name}=${{{name}}}") for name in CALL_VARIABLES if _field(f"variable_{name}")]
    return actions


def _route_type(target_type: str, default: str) -> str:
    return "queue" if target_type == "queue" else default


# Which of the channel's own variables `call_exports` keeps: part of the key of a kept dialplan answer.
_EXPORTED = ("switchdesk_call_id", "switchdesk_call_type", "switchdesk_dst_num", *CALL_VARIABLES)


def dialplan_section(account: AccountView, number: str, site_id: int | None = None) -> ET.Element | None:
    section = ET.Element("section", name="dialplan", description="switchdesk")
    context = ET.SubElement(section, "context", name=account.domain)
    if CHECKIN.match(number):
        host, port = current_app.config.get("OUTBOUND_SOCKET", ("127.0.0.1", 8040))
        _extension(context, "switchdesk_checkin", number, [
            ("set", f"switchdesk_account_id={account.id}"),
            ("socket", f"{host}:{port} async full"),
        ])
        return section
    exit_match = EXIT.match(number)
    if exit_match:
        return exit_section(account, number, int(exit_match.group(1)), exit_match.group(2), exit_match.group(3))
    ext = views.extension(account.id, number)
    if ext is not None:
        actions = route_actions(account, ext.target_type, ext.target_id)
        if actions:
            exports = call_exports(account, _route_type(ext.target_type, "internal"))
            _extension(context, f"switchdesk_ext_{ext.id}", number, exports + actions)
            return section
        return None
    return outbound_section(account, number, site_id)


def _public_section(number: str) -> ET.Element | None:
    # DIDs are stored in E.164; carriers often send the international number without its '+'.
    did = views.did(number)
    if did is None:
        return None
    account = views.account(did.account_id)
    if account is None:
        return None
    actions = route_actions(account, did.target_type, did.target_id)
    if not actions:
        return None
    section = ET.Element("section", name="dialplan", description="switchdesk")
    context = ET.SubElement(section, "context", name="public")
    _extension(context, f"switchdesk_did_{did.id}", number,
               [*call_exports(account, _route_type(did.target_type, "inbound")),
                ("set", f"domain_name={account.domain}"), *actions])
    return section


def _dialplan() -> Response:
    context = _field("Hunt-Context") or _field("Caller-Context")
    number = _field("Hunt-Destination-Number") or _field("Caller-Destination-Number")
    if not context or not number:
        return not_found()
    present = tuple(bool(_field(f"variable_{name}")) for name in _EXPORTED)
    if PICKUP.match(number) and context != "public":  # depends on who dials: the device is part of the key
        device_id = _field("variable_switchdesk_device_id")

        def build_pickup() -> tuple[Any, ET.Element | None]:
            account = views.account_by_domain(context)
            return (None, None) if account is None else pickup_section(account, number, device_id)
        return _answer(("pickup", context, number, device_id, present), build_pickup)

    site = _field("variable_switchdesk_site_id")  # the calling device's site (its directory entry)
    site_id = int(site) if site.isdigit() and len(site) <= 15 else None

    def build() -> tuple[Any, ET.Element | None]:
        if context == "public":
            did = views.did(number)
            return (did.account_id if did is not None else None), _public_section(number)
        account = views.account_by_domain(context)
        if account is None:
            return None, None
        return account.id, dialplan_section(account, number, site_id)
    return _answer(("dialplan", context, number, present, site_id, current_app.config.get("OUTBOUND_SOCKET")),
                   build)


_SECTIONS = {"directory": _directory, "configuration": _configuration, "dialplan": _dialplan}


_XML = {"type": "string", "description": "a freeswitch/xml document (`result status=\"not found\"` when there "
                                         "is nothing to serve)"}


@endpoint(bp, "/<section>", ["POST"], summary="mod_xml_curl lookups (directory, configuration, dialplan)",
          tag="freeswitch", auth=False, response=_XML, media_type="text/xml",
          errors={401: {"description": "not from an allowed network, or wrong HTTP basic auth (a not-found document)",
                        "content": {"text/xml": {"schema": _XML}}}})
def xml_curl(section: str):
    """FreeSWITCH's own requests; HTTP basic auth from allowed networks only. Answers `freeswitch/xml`."""
    if not _allowed():
        return _denied()
    handler = _SECTIONS.get(_field("section") or section)
    return handler() if handler else not_found()
