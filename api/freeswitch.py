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

from flask import Blueprint, Response, current_app, request

from api.spec import endpoint
from engine.callcenter import fsconfig
from engine.directory import views
from engine.directory.views import AccountView, DeviceView
from engine.store.models import Account, Queue

bp = Blueprint("freeswitch", __name__, url_prefix="/freeswitch")

DIAL_STRING = (
    "{^^:sip_invite_domain=${dialed_domain}:presence_id=${dialed_user}@${dialed_domain}}"
    "${sofia_contact(*/${dialed_user}@${dialed_domain})}"
)
CHECKIN = re.compile(r"^\*\*\*(\d{6,12})$")
PHONE = re.compile(r"^\+?\d{3,20}$")
GATEWAY = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


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
    _params(user, "param", [("a1-hash", device.sip_a1_hash)])
    variables = [("switchdesk_device_id", str(device.id)), ("user_context", account.domain)]
    if device.cid_name:
        variables.append(("effective_caller_id_name", device.cid_name))
    if device.cid_num:
        variables.append(("effective_caller_id_number", device.cid_num))
    _params(user, "variable", variables)
    return section


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
    return _answer(("directory", domain, username), build)


# --- configuration: callcenter.conf ---------------------------------------------------------------


def callcenter_section(queues: list[tuple[Queue, str]]) -> ET.Element:
    """Settings and queues only: agents and tiers always come over ESL (DESIGN.md)."""
    section = ET.Element("section", name="configuration")
    conf = ET.SubElement(section, "configuration", name="callcenter.conf", description="switchdesk")
    ET.SubElement(conf, "settings")
    holder = ET.SubElement(conf, "queues")
    for queue, domain in queues:
        element = ET.SubElement(holder, "queue", name=fsconfig.queue_name(queue.id, domain))
        for name, value in fsconfig.queue_params(queue):
            ET.SubElement(element, "param", name=name, value=value)
    return section


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
        if views.queue(account.id, target_id) is None:
            return None
        return [
            ("set", "hangup_after_bridge=true"),
            ("set", f"switchdesk_queue_id={target_id}"),
            ("answer", ""),
            ("callcenter", fsconfig.queue_name(target_id, account.domain)),
            ("hangup", ""),
        ]
    devices: list[DeviceView] | tuple[DeviceView, ...]
    if target_type == "device":
        device = views.device_by_id(account.id, target_id)
        devices = [device] if device is not None else []
    elif target_type == "user":
        devices = views.devices_of_user(account.id, target_id)
    else:
        return None
    if not devices:
        return None
    timeout = max((d.timeout for d in devices), default=30) or 30
    dial = ",".join(fsconfig.device_contact(d, account) for d in devices)
    return [("set", f"call_timeout={timeout}"), ("set", "hangup_after_bridge=true"), ("bridge", dial)]


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


def dialplan_section(account: AccountView, number: str) -> ET.Element | None:
    section = ET.Element("section", name="dialplan", description="switchdesk")
    context = ET.SubElement(section, "context", name=account.domain)
    if CHECKIN.match(number):
        host, port = current_app.config.get("OUTBOUND_SOCKET", ("127.0.0.1", 8040))
        _extension(context, "switchdesk_checkin", number, [
            ("set", f"switchdesk_account_id={account.id}"),
            ("socket", f"{host}:{port} async full"),
        ])
        return section
    ext = views.extension(account.id, number)
    if ext is not None:
        actions = route_actions(account, ext.target_type, ext.target_id)
        if actions:
            exports = call_exports(account, _route_type(ext.target_type, "internal"))
            _extension(context, f"switchdesk_ext_{ext.id}", number, exports + actions)
            return section
        return None
    gateway = account.outbound_gateway
    if gateway and GATEWAY.match(gateway) and PHONE.match(number):
        _extension(context, "switchdesk_outbound", number, [
            *call_exports(account, "outbound"),
            ("set", "hangup_after_bridge=true"),
            ("bridge", f"sofia/gateway/{gateway}/{number}"),
        ])
        return section
    return None


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

    def build() -> tuple[Any, ET.Element | None]:
        if context == "public":
            did = views.did(number)
            return (did.account_id if did is not None else None), _public_section(number)
        account = views.account_by_domain(context)
        if account is None:
            return None, None
        return account.id, dialplan_section(account, number)
    return _answer(("dialplan", context, number, present, current_app.config.get("OUTBOUND_SOCKET")), build)


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
