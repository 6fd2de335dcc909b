"""``originate`` in the emulator: SIP phones that register, ring, answer, refuse or never answer.

Replies are those of originate-ok.esl / originate-fail.esl: ``+OK <uuid>\\n`` when
the leg answered, ``-ERR <CAUSE>\\n`` otherwise (USER_NOT_REGISTERED,
SUBSCRIBER_ABSENT, USER_BUSY, NO_ANSWER after ``originate_timeout``,
CHAN_NOT_IMPLEMENTED for an unknown endpoint), the ``-USAGE:`` line with no
arguments. Through ``bgapi`` the reply is the BACKGROUND_JOB body (the core's
``_run_job``), which comes after the leg's CHANNEL_ANSWER, or after its
CHANNEL_HANGUP on failure, as recorded. The leg's events carry the originate's
``{...}`` variables as ``variable_*`` headers, as FreeSWITCH's do.

Steer it from tests::

    phone = fs.calls.register("2001", "acme.test", answer_after=0.05)
    phone.answer_after = None        # rings until originate_timeout: NO_ANSWER
    phone.busy = True                # USER_BUSY
    fs.calls.unregister("2001", "acme.test")   # USER_NOT_REGISTERED
    fs.calls.originates[-1].variables          # what the client asked for, unescaped
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gevent

if TYPE_CHECKING:
    from .server import FakeSwitch

USAGE = (
    "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] [<cid_name>] "
    "[<cid_num>] [<timeout_sec>]\n"
)
DEFAULT_ORIGINATE_TIMEOUT = 60.0


@dataclass
class Phone:
    """A registered phone's behaviour when rung. ``answer_after`` None: it never answers."""

    user: str
    domain: str
    answer_after: float | None = 0.0
    busy: bool = False
    reject_cause: str | None = None  # e.g. CALL_REJECTED: refuses at once with this cause
    rung: int = 0


@dataclass
class Originate:
    """One originate as FreeSWITCH understood it."""

    line: str
    variables: dict[str, str]
    endpoint: str
    exten: str
    rest: list[str]
    uuid: str
    result: str = ""
    started: float = field(default_factory=time.monotonic)
    answered_at: float | None = None
    exten_number: str = ""  # the number dialled (user part or gateway number)


def split_args(text: str) -> list[str]:
    """Originate's own split (switch_separate_string): on spaces outside single quotes, the quotes
    removed. ``&transfer(1 XML d)`` unquoted is three words, and transfer gets ``1`` alone."""
    words: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif char == " " and not quoted:
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def split_variables(text: str) -> dict[str, str]:
    """``a=1,b='x y',c=p\\,q`` as FreeSWITCH reads a ``{...}`` list: unescaped commas split,
    single quotes group, a backslash keeps the next character."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if current:
        items.append("".join(current))
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if sep:
            out[name] = value
    return out


def _closing_brace(text: str) -> int:
    """Index of the ``}`` that ends a ``{...}`` list starting at 0 (escapes and quotes honoured)."""
    quoted = False
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "'":
            quoted = not quoted
        elif ch == "}" and not quoted:
            return i
        i += 1
    return -1


class Calls:
    """The emulator's phones and the originate api."""

    def __init__(self, fs: FakeSwitch) -> None:
        self.fs = fs
        self.phones: dict[str, Phone] = {}
        # None: every user exists (switchdesk's directory answers); a set: others are SUBSCRIBER_ABSENT.
        self.directory: set[str] | None = None
        self.originates: list[Originate] = []
        self.live: dict[str, Originate] = {}  # answered legs by uuid, until uuid_kill
        # dialer_floor.py: how a number with no registered phone (or behind a gateway) behaves, and what
        # runs the originate's application (``&callcenter(q)``) once answered; None: not emulated
        self.lead: Any = None
        self.time_scale = 1.0  # dialer_floor.py compresses time: originate_timeout is in its seconds
        self.on_app: Any = None
        fs.commands["originate"] = self.originate
        self._next_kill = fs.commands.get("uuid_kill")
        self._next_exists = fs.commands.get("uuid_exists")
        fs.commands["uuid_kill"] = self._uuid_kill
        fs.commands["uuid_exists"] = self._uuid_exists

    # -- steering ----------------------------------------------------------------------------------

    def register(self, user: str, domain: str, **behaviour: Any) -> Phone:
        """A phone registers (and, for subscribers, the ``sofia::register`` event is sent)."""
        phone = Phone(user, domain.lower(), **behaviour)
        self.phones[f"{user}@{phone.domain}"] = phone
        self.fs.push_event(self.fs.make_event("CUSTOM", {
            "profile-name": "internal", "from-user": user, "from-host": phone.domain,
            "contact": f'"{user}" <sip:{user}@127.0.0.1:5070>', "status": "Registered(UDP)",
            "expires": "3600", "to-user": user, "network-ip": "127.0.0.1", "network-port": "5070",
            "username": user, "realm": phone.domain, "user-agent": "fakeswitch-phone",
        }, subclass="sofia::register", calling=("sofia_reg.c", "sofia_reg_handle_register_token", "2113")))
        return phone

    def unregister(self, user: str, domain: str) -> None:
        self.phones.pop(f"{user}@{domain.lower()}", None)

    # -- the api -----------------------------------------------------------------------------------

    def originate(self, args: str) -> str:
        line = args.strip()
        if not line:
            return USAGE
        variables: dict[str, str] = {}
        if line.startswith("{"):
            end = _closing_brace(line)
            if end < 0:
                return "-ERR INVALID_ARGUMENTS\n"  # what a broken list gives is not recorded; never sent by us
            variables = split_variables(line[1:end])
            line = line[end + 1:]
        words = split_args(line)
        if len(words) < 2:
            return USAGE
        endpoint, exten, rest = words[0], words[1], words[2:]
        call = Originate(args, variables, endpoint, exten, rest, variables.get("origination_uuid") or str(uuid.uuid4()))
        self.originates.append(call)
        call.result = self._place(call)
        return call.result

    def _place(self, call: Originate) -> str:
        kind, _, target = call.endpoint.partition("/")
        phone: Phone | None
        if kind == "sofia" and target.startswith("gateway/") and self.lead is not None:
            call.exten_number = target.rsplit("/", 1)[-1]
            phone = self.lead(call.exten_number)
        elif kind != "user":
            return "-ERR CHAN_NOT_IMPLEMENTED\n"
        else:
            target = target.lower()
            call.exten_number = target.partition("@")[0]
            if self.directory is not None and target not in self.directory:
                return "-ERR SUBSCRIBER_ABSENT\n"
            phone = self.phones.get(target)
            if phone is None and self.lead is not None:
                phone = self.lead(call.exten_number)
            if phone is None:
                return "-ERR USER_NOT_REGISTERED\n"
        phone.rung += 1
        self._event(call, "CHANNEL_OUTGOING", "RINGING")
        self._event(call, "CHANNEL_CREATE", "RINGING")
        self._event(call, "CHANNEL_ORIGINATE", "RINGING")
        if phone.busy or phone.reject_cause:
            return self._fail(call, "USER_BUSY" if phone.busy else phone.reject_cause or "CALL_REJECTED")
        self._event(call, "CHANNEL_PROGRESS", "RINGING")
        limit = float(call.variables.get("originate_timeout") or DEFAULT_ORIGINATE_TIMEOUT) / self.time_scale
        if phone.answer_after is None or phone.answer_after >= limit:
            gevent.sleep(limit)
            return self._fail(call, "NO_ANSWER")
        gevent.sleep(phone.answer_after)
        call.answered_at = time.monotonic()
        self._event(call, "CHANNEL_ANSWER", "ACTIVE")
        self.live[call.uuid] = call
        app = call.exten
        if app.startswith("&"):
            # The application runs after the BACKGROUND_JOB (originate-ok.esl: EXECUTE after the job).
            name, _, data = app[1:].partition("(")
            gevent.spawn_later(0.005, self._event, call, "CHANNEL_EXECUTE", "ACTIVE",
                               {"Application": name, "Application-Data": data.rstrip(")")})
            if self.on_app is not None:
                gevent.spawn_later(0.006, self.on_app, call, name, data.rstrip(")"))
        return f"+OK {call.uuid}\n"

    def _fail(self, call: Originate, cause: str) -> str:
        self._event(call, "CHANNEL_HANGUP", "HANGUP", {"Hangup-Cause": cause})
        self._event(call, "CHANNEL_HANGUP_COMPLETE", "HANGUP", {"Hangup-Cause": cause})
        return f"-ERR {cause}\n"

    def _uuid_kill(self, args: str) -> str:
        words = args.split()
        call = self.live.pop(words[0], None) if words else None
        if call is None:
            return self._next_kill(args) if self._next_kill else "-ERR No such channel!\n"
        cause = words[1] if len(words) > 1 else "NORMAL_CLEARING"
        gevent.spawn(self._fail, call, cause)
        return "+OK\n"

    def _uuid_exists(self, args: str) -> str:
        if args.strip() in self.live:
            return "true"
        return self._next_exists(args) if self._next_exists else "false"

    # -- events ------------------------------------------------------------------------------------

    def _event(self, call: Originate, name: str, call_state: str, extra: dict[str, str] | None = None) -> None:
        user, _, domain = call.endpoint.partition("/")[2].partition("@")
        if call.endpoint.startswith("sofia/gateway/"):
            user, domain = call.exten_number, call.endpoint.split("/")[2]
        channel = f"sofia/internal/{user}@{domain}"
        v = call.variables
        answer_state = {"RINGING": "ringing", "ACTIVE": "answered", "HANGUP": "hangup"}[call_state]
        headers = self.fs.make_event(name, calling=("switch_channel.c", "switch_channel_perform_event", "0"))
        headers.update({
            "Channel-State": "CS_HANGUP" if call_state == "HANGUP" else "CS_EXECUTE",
            "Channel-Call-State": call_state,
            "Channel-Name": channel,
            "Unique-ID": call.uuid,
            "Call-Direction": "outbound",
            "Presence-Call-Direction": "outbound",
            "Channel-Presence-ID": f"{user}@{domain}",
            "Channel-Call-UUID": call.uuid,
            "Answer-State": answer_state,
        })
        if extra:
            headers.update(extra)
        headers.update({
            "Caller-Direction": "outbound",
            "Caller-Logical-Direction": "outbound",
            "Caller-Caller-ID-Name": v.get("origination_caller_id_name", "Outbound Call"),
            "Caller-Caller-ID-Number": v.get("origination_caller_id_number", "0000000000"),
            "Caller-Callee-ID-Name": "Outbound Call",
            "Caller-Callee-ID-Number": user,
            "Caller-Destination-Number": user,
            "Caller-Unique-ID": call.uuid,
            "Caller-Context": "default",
            "Caller-Channel-Name": channel,
            "variable_direction": "outbound",
            "variable_is_outbound": "true",
            "variable_uuid": call.uuid,
            "variable_call_uuid": call.uuid,
            "variable_channel_name": channel,
            "variable_dialed_user": user,
            "variable_dialed_domain": domain,
        })
        for key, value in v.items():
            headers[f"variable_{key}"] = value
        self.fs.push_event(headers)
