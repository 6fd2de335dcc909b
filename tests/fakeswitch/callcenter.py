"""A pure-Python port of FreeSWITCH 1.10.12 ``mod_callcenter``'s state and dispatch.

The emulator needs replies that are byte-identical to the recordings and a
dispatcher whose choices match the real module, because switchdesk's fairness
and pause decisions (DESIGN.md, "Decisions that refine the issues") rest on
exactly how ``mod_callcenter`` orders and filters agents.  Nothing here opens a
socket: the emulator drives :class:`CallCenter` and ships the events it returns.

Source references are to ``src/mod/applications/mod_callcenter/mod_callcenter.c``
(v1.10.x; function names are given because line numbers drift between builds).
Where SQLite would decide an order that the SQL leaves open (ties), insertion
(rowid) order is used.
"""

from __future__ import annotations

import json
import random
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

try:  # imported as part of the tests.fakeswitch package
    from ._fixture_events import Event, load_events
except ImportError:  # pragma: no cover - run with tests/fakeswitch on sys.path
    from _fixture_events import Event, load_events  # type: ignore[no-redef]

__all__ = [
    "CC_CONFIG_API_SYNTAX",
    "Agent",
    "CallCenter",
    "Event",
    "Member",
    "Offer",
    "Queue",
    "Tier",
    "separate_string",
]

# --- tables (mod_callcenter.c: STATE_CHART, AGENT_STATUS_CHART, AGENT_STATE_CHART) ---

TIER_STATES = ("No Answer", "Ready", "Offering", "Active Inbound", "Standby")
AGENT_STATUSES = ("Logged Out", "Available", "Available (On Demand)", "On Break")
AGENT_STATES = ("Waiting", "Receiving", "In a queue call", "Idle", "Reserved")
AGENT_TYPES = ("Callback", "uuid-standby")

LOGGED_OUT, AVAILABLE, ON_DEMAND, ON_BREAK = AGENT_STATUSES
WAITING, RECEIVING, IN_A_QUEUE_CALL, IDLE, _RESERVED = AGENT_STATES
T_NO_ANSWER, T_READY, T_OFFERING, T_ACTIVE_INBOUND, T_STANDBY = TIER_STATES
M_WAITING, M_TRYING, M_ANSWERED, M_ABANDONED = "Waiting", "Trying", "Answered", "Abandoned"
SYSTEM = "single_box"

CC_CONFIG_API_SYNTAX = (
    "callcenter_config <target> <args>,\n"
    "\tcallcenter_config agent add [name] [type] | \n"
    "\tcallcenter_config agent del [name] | \n"
    "\tcallcenter_config agent reload [name] | \n"
    "\tcallcenter_config agent set status [agent_name] [status] | \n"
    "\tcallcenter_config agent set state [agent_name] [state] | \n"
    "\tcallcenter_config agent set contact [agent_name] [contact] | \n"
    "\tcallcenter_config agent set ready_time [agent_name] [wait till epoch] | \n"
    "\tcallcenter_config agent set reject_delay_time [agent_name] [wait second] | \n"
    "\tcallcenter_config agent set busy_delay_time [agent_name] [wait second] | \n"
    "\tcallcenter_config agent set no_answer_delay_time [agent_name] [wait second] | \n"
    "\tcallcenter_config agent get status [agent_name] | \n"
    "\tcallcenter_config agent get state [agent_name] | \n"
    "\tcallcenter_config agent get uuid [agent_name] | \n"
    "\tcallcenter_config agent list [[agent_name]] | \n"
    "\tcallcenter_config tier add [queue_name] [agent_name] [[level]] [[position]] | \n"
    "\tcallcenter_config tier set state [queue_name] [agent_name] [state] | \n"
    "\tcallcenter_config tier set level [queue_name] [agent_name] [level] | \n"
    "\tcallcenter_config tier set position [queue_name] [agent_name] [position] | \n"
    "\tcallcenter_config tier del [queue_name] [agent_name] | \n"
    "\tcallcenter_config tier reload [queue_name] [agent_name] | \n"
    "\tcallcenter_config tier list | \n"
    "\tcallcenter_config queue load [queue_name] | \n"
    "\tcallcenter_config queue unload [queue_name] | \n"
    "\tcallcenter_config queue reload [queue_name] | \n"
    "\tcallcenter_config queue list | \n"
    "\tcallcenter_config queue list agents [queue_name] [status] [state] | \n"
    "\tcallcenter_config queue list members [queue_name] | \n"
    "\tcallcenter_config queue list tiers [queue_name] | \n"
    "\tcallcenter_config queue count | \n"
    "\tcallcenter_config queue count agents [queue_name] [status] [state] | \n"
    "\tcallcenter_config queue count members [queue_name] | \n"
    "\tcallcenter_config queue count tiers [queue_name]"
)

AGENT_COLUMNS = (
    "name", "instance_id", "uuid", "type", "contact", "status", "state", "max_no_answer",
    "wrap_up_time", "reject_delay_time", "busy_delay_time", "no_answer_delay_time",
    "last_bridge_start", "last_bridge_end", "last_offered_call", "last_status_change",
    "no_answer_count", "calls_answered", "talk_time", "ready_time", "external_calls_count",
)
MEMBER_COLUMNS = (
    "queue", "instance_id", "uuid", "session_uuid", "cid_number", "cid_name", "system_epoch",
    "joined_epoch", "rejoined_epoch", "bridge_epoch", "abandoned_epoch", "base_score",
    "skill_score", "serving_agent", "serving_system", "state",
)
TIER_COLUMNS = ("queue", "agent", "state", "level", "position")
QUEUE_LIST_HEADER = (
    "name|strategy|moh_sound|time_base_score|tier_rules_apply|tier_rule_wait_second|"
    "tier_rule_wait_multiply_level|tier_rule_no_agent_no_wait|discard_abandoned_after|"
    "abandoned_resume_allowed|max_wait_time|max_wait_time_with_no_agent|"
    "max_wait_time_with_no_agent_time_reached|record_template|calls_answered|calls_abandoned|"
    "ring_progressively_delay|skip_agents_with_external_calls|agent_no_answer_status\n"
)


def _lookup(table: Iterable[str], value: str) -> str | None:
    """``cc_*_str2*``: case-insensitive match, returning the canonical spelling."""
    for name in table:
        if name.lower() == value.lower():
            return name
    return None


def _atoi(value: str | None) -> int:
    """C ``atoi``/``atol``: leading sign and digits, 0 when there are none."""
    if not value:
        return 0
    s = value.lstrip(" \t\n\r\f\v")
    i = 1 if s[:1] in "+-" else 0
    j = i
    while j < len(s) and s[j].isdigit():
        j += 1
    return int(s[:j]) if j > i else 0


def _switch_true(value: str) -> bool:
    """``switch_true``: the spellings FreeSWITCH accepts as a true boolean."""
    v = value.strip().lower()
    if v in ("yes", "on", "true", "t", "enabled", "active", "allow"):
        return True
    return _atoi(v) != 0


# --- argument splitting (switch_utils.c: switch_separate_string, blank delimiter) ---

_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup_separated_string(s: str) -> str:
    """``cleanup_separated_string``: drop paired single quotes, unescape, trim trailing blanks."""
    i = 0
    while i < len(s) and s[i] == " ":
        i += 1
    out: list[str] = []
    end = 0
    inside = False
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            e = s[i + 1]
            if e in ("'", '"', " ", "\\") or e in _UNESCAPE:
                out.append(_UNESCAPE.get(e, e))
                end = len(out)
                i += 2
                continue
        if c == "'" and (inside or "'" in s[i + 1:]):
            inside = not inside
            if inside:
                end = len(out)
        else:
            out.append(c)
            if c != " " or inside:
                end = len(out)
        i += 1
    return "".join(out[:end])


def separate_string(data: str, max_args: int = 8) -> list[str]:
    """Split like ``switch_separate_string(buf, ' ', argv, 8)``: quotes group, the last arg keeps the rest."""
    parts: list[str] = []
    i, n = 0, len(data)
    while i < n and data[i] == " ":
        i += 1
    while i < n and len(parts) < max_args:
        start = i
        if len(parts) == max_args - 1:
            parts.append(data[start:])
            break
        inside = False
        while i < n:
            c = data[i]
            if c == "\\":
                i += 2
                continue
            if c == "'":
                inside = not inside
            elif c == " " and not inside:
                break
            i += 1
        parts.append(data[start:i])
        while i < n and data[i] == " ":
            i += 1
    return [_cleanup_separated_string(p) for p in parts]


# --- the switch_core_hash iteration order of the queue table ---


def _sdbm(key: str) -> int:
    h = 0
    for c in key.encode():
        h = (c + (h << 6) + (h << 16) - h) & 0xFFFFFFFF
    return h


def _hash_mix(i: int) -> int:
    """``hash()`` of switch_hashtable.c (the java 1.4 mix over ``switch_hash_default``)."""
    i = (i + (~(i << 9) & 0xFFFFFFFF)) & 0xFFFFFFFF
    i ^= ((i >> 14) | (i << 18)) & 0xFFFFFFFF
    i = (i + (i << 4)) & 0xFFFFFFFF
    i ^= ((i >> 10) | (i << 22)) & 0xFFFFFFFF
    return i


_PRIMES = (53, 97, 193, 389, 769, 1543, 3079, 6151, 12289, 24593, 49157, 98317)


class _SwitchHash:
    """Keeps the iteration order of ``switch_core_hash`` so ``queue list`` rows come out as on the wire."""

    def __init__(self) -> None:
        self._size_idx = 0
        self._buckets: list[list[str]] = [[] for _ in range(_PRIMES[0])]
        self._values: dict[str, Queue] = {}

    def _index(self, key: str) -> int:
        return _hash_mix(_sdbm(key)) % len(self._buckets)

    def insert(self, key: str, value: Queue) -> None:
        if key in self._values:
            self._buckets[self._index(key)].remove(key)
        self._buckets[self._index(key)].insert(0, key)
        self._values[key] = value
        if len(self._values) > len(self._buckets) * 0.65 and self._size_idx + 1 < len(_PRIMES):
            old = [k for b in self._buckets for k in b]
            self._size_idx += 1
            self._buckets = [[] for _ in range(_PRIMES[self._size_idx])]
            for k in old:
                self._buckets[self._index(k)].insert(0, k)

    def delete(self, key: str) -> Queue | None:
        if key not in self._values:
            return None
        self._buckets[self._index(key)].remove(key)
        return self._values.pop(key)

    def get(self, key: str) -> Queue | None:
        return self._values.get(key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for b in self._buckets:
            for k in b:
                yield self._values[k]

    def __len__(self) -> int:
        return len(self._values)


# --- the state tables ---


@dataclass
class Agent:
    """One row of the ``agents`` table; ``None`` is SQL NULL (printed empty, left out of JSON)."""

    name: str
    type: str
    instance_id: str = SYSTEM
    uuid: str | None = None
    contact: str | None = None
    status: str = LOGGED_OUT
    state: str = WAITING
    max_no_answer: int = 0
    wrap_up_time: int = 0
    reject_delay_time: int = 0
    busy_delay_time: int = 0
    no_answer_delay_time: int = 0
    last_bridge_start: int = 0
    last_bridge_end: int = 0
    last_offered_call: int = 0
    last_status_change: int = 0
    no_answer_count: int = 0
    calls_answered: int = 0
    talk_time: int = 0
    ready_time: int = 0
    external_calls_count: int = 0

    def row(self) -> list[str | None]:
        return [None if getattr(self, c) is None else str(getattr(self, c)) for c in AGENT_COLUMNS]


@dataclass
class Tier:
    """One row of ``tiers``: an agent's membership of a queue."""

    queue: str
    agent: str
    state: str = T_READY
    level: int = 1
    position: int = 1

    def row(self) -> list[str | None]:
        return [self.queue, self.agent, self.state, str(self.level), str(self.position)]


@dataclass
class Member:
    """One row of ``members`` plus the caller channel data the events need."""

    queue: str
    uuid: str
    session_uuid: str
    cid_number: str
    cid_name: str
    system_epoch: int
    joined_epoch: int
    base_score: int = 0
    skill_score: int = 0
    instance_id: str = SYSTEM
    rejoined_epoch: int = 0
    bridge_epoch: int = 0
    abandoned_epoch: int = 0
    serving_agent: str = ""
    serving_system: str = ""
    state: str = M_WAITING
    channel: list[tuple[str, str]] = field(default_factory=list, repr=False)
    variables: dict[str, str] = field(default_factory=dict, repr=False)
    t_member_called: int = 0
    dnis: str = ""
    agent_found: bool = False

    def row(self, now: int) -> list[str | None]:
        cols: list[str | None] = [str(getattr(self, c)) for c in MEMBER_COLUMNS]
        cols.append(str(now - self.joined_epoch + self.base_score + self.skill_score))
        return cols


@dataclass
class Queue:
    """``cc_queue_t``: configuration from callcenter.conf plus the in-memory counters."""

    name: str
    strategy: str = "longest-idle-agent"
    moh_sound: str | None = None
    announce_sound: str | None = None
    announce_frequency: int = 0
    record_template: str | None = None
    time_base_score: str = "queue"
    ring_progressively_delay: int = 0
    tier_rules_apply: bool = False
    tier_rule_wait_second: int = 0
    tier_rule_wait_multiply_level: bool = False
    tier_rule_no_agent_no_wait: bool = True
    discard_abandoned_after: int = 60
    abandoned_resume_allowed: bool = False
    max_wait_time: int = 0
    max_wait_time_with_no_agent: int = 0
    max_wait_time_with_no_agent_time_reached: int = 5
    agent_no_answer_status: str = ON_BREAK
    skip_agents_with_external_calls: bool = True
    calls_answered: int = 0
    calls_abandoned: int = 0
    last_agent_exist: int = 0
    last_agent_exist_check: int = 0


# queue_set_config(): XML param name -> (attribute, kind)
_QUEUE_PARAMS: dict[str, tuple[str, str]] = {
    "strategy": ("strategy", "str"),
    "moh-sound": ("moh_sound", "str"),
    "announce-sound": ("announce_sound", "str"),
    "announce-frequency": ("announce_frequency", "int"),
    "record-template": ("record_template", "str"),
    "time-base-score": ("time_base_score", "str"),
    "ring-progressively-delay": ("ring_progressively_delay", "int"),
    "tier-rules-apply": ("tier_rules_apply", "bool"),
    "tier-rule-wait-second": ("tier_rule_wait_second", "int"),
    "tier-rule-wait-multiply-level": ("tier_rule_wait_multiply_level", "bool"),
    "tier-rule-no-agent-no-wait": ("tier_rule_no_agent_no_wait", "bool"),
    "discard-abandoned-after": ("discard_abandoned_after", "int"),
    "abandoned-resume-allowed": ("abandoned_resume_allowed", "bool"),
    "max-wait-time": ("max_wait_time", "int"),
    "max-wait-time-with-no-agent": ("max_wait_time_with_no_agent", "int"),
    "max-wait-time-with-no-agent-time-reached": ("max_wait_time_with_no_agent_time_reached", "int"),
    "agent-no-answer-status": ("agent_no_answer_status", "str"),
    "skip-agents-with-external-calls": ("skip_agents_with_external_calls", "bool"),
}


@dataclass
class Offer:
    """A running ``outbound_agent_thread_run``: one agent being offered one member."""

    queue: str
    member_uuid: str
    agent_name: str
    agent_type: str
    agent_status: str
    agent_uuid: str | None
    originate_string: str
    strategy: str
    no_answer_count: int
    max_no_answer: int
    reject_delay_time: int
    busy_delay_time: int
    no_answer_delay_time: int
    agent_no_answer_status: str
    t_agent_called: int = 0
    t_agent_answered: int = 0
    member_session_uuid: str = ""
    leg_uuid: str = ""
    leg_channel: list[tuple[str, str]] = field(default_factory=list, repr=False)
    bridged: bool = False
    done: bool = False


class _Candidate(NamedTuple):
    """A row of the agent-selection SELECT in ``members_callback``."""

    agent: Agent
    tier: Tier


QueueConfigProvider = Callable[[str], "dict[str, Any] | None"]


# --- event templates taken from the recordings ---

_STD = (
    "Core-UUID", "FreeSWITCH-Hostname", "FreeSWITCH-Switchname", "FreeSWITCH-IPv4", "FreeSWITCH-IPv6",
)
_DYNAMIC_CHANNEL = {
    "Channel-State", "Channel-Call-State", "Channel-State-Number", "Answer-State", "Hangup-Cause",
    "Channel-HIT-Dialplan", "Caller-Profile-Index", "Caller-Transfer-Source",
}


@dataclass
class _Template:
    calling: tuple[str, str, str]
    channel: list[tuple[str, str]]
    ts_us: int
    ids: dict[str, str] = field(default_factory=dict)


class _Templates:
    """Header lists of real events, cut into 'who raised it' and 'which channel' parts."""

    CALL = "queue-call-answered.plain.esl"
    MEMBER_UUID = "326edd3d-327c-4b3c-ab51-8f828f38d687"
    AGENT_LEG = "e7806906-3258-4099-8735-714e2d135631"
    FALLBACK_CALLING = {
        "member-queue-resume": ("mod_callcenter.c", "callcenter_function", "3113"),
        "agent-max-no-answer": ("mod_callcenter.c", "outbound_agent_thread_run", "2068"),
        "bridge-agent-fail": ("mod_callcenter.c", "outbound_agent_thread_run", "2089"),
    }

    def __init__(self) -> None:
        self.cc: dict[str, _Template] = {}
        self.chan: dict[tuple[str, str], _Template] = {}
        self.std: list[tuple[str, str]] = []
        self.loaded = False
        try:
            self._load()
            self.loaded = True
        except (OSError, LookupError, ValueError):
            self.std = [("Core-UUID", str(uuidlib.uuid4())), ("FreeSWITCH-Hostname", "vm"),
                        ("FreeSWITCH-Switchname", "vm"), ("FreeSWITCH-IPv4", "192.0.2.2"),
                        ("FreeSWITCH-IPv6", "::1")]

    @staticmethod
    def _split(ev: Event, ids: dict[str, str] | None = None) -> _Template:
        h = ev.headers
        calling = (ev.get("Event-Calling-File") or "", ev.get("Event-Calling-Function") or "",
                   ev.get("Event-Calling-Line-Number") or "")
        seq_at = next(i for i, (k, _) in enumerate(h) if k == "Event-Sequence")
        rest = h[seq_at + 1:]
        cut = next((i for i, (k, _) in enumerate(rest) if k.startswith("CC-")), len(rest))
        return _Template(calling, list(rest[:cut]), _atoi(ev.get("Event-Date-Timestamp")), dict(ids or {}))

    def _load(self) -> None:
        files = (self.CALL, "agent-no-answer.plain.esl", "abandon-while-ringing.plain.esl",
                 "abandon-no-agent.plain.esl")
        for f in files:
            evs = load_events(f)
            ids = {
                "leg": next((e.get("Unique-ID") or "" for e in evs if e.get("Event-Name") == "CHANNEL_OUTGOING"), ""),
                "session": next((e.get("CC-Member-Session-UUID") or "" for e in evs
                                 if e.get("CC-Action") == "member-queue-start"), ""),
                "member": next((e.get("CC-Member-UUID") or "" for e in evs
                                if e.get("CC-Action") == "member-queue-start"), ""),
            }
            for ev in evs:
                name = ev.get("Event-Name") or ""
                if not self.std:
                    self.std = [(k, ev.get(k) or "") for k in _STD]
                if name == "CUSTOM" and ev.get("Event-Subclass") == "callcenter::info":
                    self.cc.setdefault(ev.get("CC-Action") or "", self._split(ev, ids))
                elif f == self.CALL and name.startswith("CHANNEL_"):
                    uid = ev.get("Unique-ID")
                    leg = "agent" if uid == self.AGENT_LEG else "member" if uid == self.MEMBER_UUID else ""
                    if leg:
                        self.chan.setdefault((leg, name), self._split(ev, ids))
        # the ORIGINATOR_CANCEL leg of abandon-while-ringing is the template for a ringing leg's end
        ring = load_events("abandon-while-ringing.plain.esl")
        ids = {
            "leg": next((e.get("Unique-ID") or "" for e in ring if e.get("Event-Name") == "CHANNEL_OUTGOING"), ""),
            "session": next((e.get("CC-Member-Session-UUID") or "" for e in ring
                             if e.get("CC-Action") == "member-queue-start"), ""),
            "member": next((e.get("CC-Member-UUID") or "" for e in ring
                            if e.get("CC-Action") == "member-queue-start"), ""),
        }
        for ev in ring:
            if ev.get("Event-Name") in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY") \
                    and ev.get("Unique-ID") == ids["leg"]:
                self.chan.setdefault(("ringing", ev.get("Event-Name") or ""), self._split(ev, ids))

    def calling(self, action: str) -> tuple[str, str, str]:
        t = self.cc.get(action)
        if t:
            return t.calling
        return self.FALLBACK_CALLING.get(action, ("mod_callcenter.c", "cc_agent_update", "0"))


_TEMPLATES: _Templates | None = None


def _templates() -> _Templates:
    global _TEMPLATES
    if _TEMPLATES is None:
        _TEMPLATES = _Templates()
    return _TEMPLATES


# --- the module ---


class CallCenter:
    """mod_callcenter's tables, queue hash, API and dispatcher; every epoch comes from ``now``.

    ``queue_config_provider(name)`` stands in for the mod_xml_curl fetch of
    callcenter.conf with ``CC-Queue=name``: it returns the queue's ``<param>``
    values as a dict (or ``{"params": {...}, "agents": [...], "tiers": [...]}``
    for a whole document) or ``None`` when the queue is not in the answer.
    """

    def __init__(
        self,
        queue_config_provider: QueueConfigProvider,
        *,
        now: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        next_sequence: Callable[[], int] | None = None,
        new_uuid: Callable[[], str] = lambda: str(uuidlib.uuid4()),
        conf_provider: Callable[[], dict[str, Any] | None] | None = None,
    ) -> None:
        self.queue_config_provider = queue_config_provider
        self.conf_provider = conf_provider
        self._now = now
        self.rng = rng or random.Random(0)
        self._seq = 0
        self._next_sequence = next_sequence
        self.new_uuid = new_uuid
        self.queues = _SwitchHash()
        self.agents: list[Agent] = []
        self.tiers: list[Tier] = []
        # lookups by name, as fast as a dict: the tables themselves keep mod_callcenter's row order
        self._agent_index: dict[str, Agent] = {}
        self._tier_index: dict[tuple[str, str], Tier] = {}
        self.members: list[Member] = []
        self.offers: list[Offer] = []
        self.last_events: list[Event] = []
        self.fired: list[Event] = []
        self.tpl = _templates()
        self._pending_cancel: list[str] = []

    # ----- clock, events -----

    def epoch(self) -> int:
        """``local_epoch_time_now``: whole seconds."""
        return int(self._now())

    def _sequence(self) -> int:
        if self._next_sequence is not None:
            return self._next_sequence()
        self._seq += 1
        return self._seq

    def _prefix(self, name: str, calling: tuple[str, str, str], subclass: str | None) -> list[tuple[str, str]]:
        now = self._now()
        dt = datetime.fromtimestamp(now, UTC)
        head: list[tuple[str, str]] = [("Event-Subclass", subclass)] if subclass else []
        head.append(("Event-Name", name))
        head += self.tpl.std
        head += [
            ("Event-Date-Local", dt.strftime("%Y-%m-%d %H:%M:%S")),
            ("Event-Date-GMT", dt.strftime("%a, %d %b %Y %H:%M:%S GMT")),
            ("Event-Date-Timestamp", str(int(now * 1_000_000))),
            ("Event-Calling-File", calling[0]),
            ("Event-Calling-Function", calling[1]),
            ("Event-Calling-Line-Number", calling[2]),
            ("Event-Sequence", str(self._sequence())),
        ]
        return head

    def _fire(self, ev: Event) -> None:
        self.last_events.append(ev)
        self.fired.append(ev)

    def _cc_event(self, action: str, cc: list[tuple[str, str | None]], *, leg: str | None = None,
                  m: Member | None = None, o: Offer | None = None) -> None:
        """A ``CUSTOM callcenter::info``; headers with empty values are left out as FreeSWITCH does.

        ``leg`` names the channel whose data ``switch_channel_event_set_data`` adds (member or agent).
        """
        headers = self._prefix("CUSTOM", self.tpl.calling(action), "callcenter::info")
        if leg == "member" and m is not None and m.channel:
            headers += m.channel
        elif leg:
            tpl = self.tpl.cc.get(action)
            overlay = o.leg_channel if (leg == "agent" and o is not None) else (m.channel if m else [])
            headers += self._block(tpl, overlay, m, o) if tpl else list(overlay)
        headers += [(k, v) for k, v in cc if v]
        self._fire(Event(headers, None))

    @staticmethod
    def _block(tpl: _Template, overlay: list[tuple[str, str]], m: Member | None, o: Offer | None,
               extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
        """A recorded channel block with this call's identifiers and the leg's own headers laid over it."""
        new = {"leg": o.leg_uuid if o else "", "session": m.session_uuid if m else "",
               "member": m.uuid if m else ""}
        subst = [(old, new[r]) for r, old in tpl.ids.items() if old and new.get(r)]
        merged = dict(overlay)
        body: list[tuple[str, str]] = []
        for k, v in tpl.channel:
            if extra and k in extra:
                v = extra[k]
            elif k in merged and k not in _DYNAMIC_CHANNEL:
                v = merged[k]
            else:
                for old, nv in subst:
                    if old in v:
                        v = v.replace(old, nv)
            body.append((k, v))
        if extra:
            have = {k for k, _ in body}
            body += [(k, v) for k, v in extra.items() if k not in have]
        return body

    def _channel_event(self, leg: str, name: str, m: Member | None, o: Offer | None,
                       extra: dict[str, str] | None = None) -> None:
        """A CHANNEL_* event for a leg, from the recorded one with this call's identifiers."""
        tpl = self.tpl.chan.get((leg, name)) or self.tpl.chan.get(
            ("agent" if leg == "ringing" else leg, name))
        overlay = (m.channel if m else []) if leg == "member" else (o.leg_channel if o else [])
        if tpl is None:
            calling = ("switch_channel.c", "switch_channel_perform_" + name.lower(), "0")
            body = list(overlay) + list((extra or {}).items())
        else:
            calling = tpl.calling
            body = self._block(tpl, overlay, m, o, extra)
        self._fire(Event(self._prefix(name, calling, None) + body, None))

    def _begin(self) -> None:
        self.last_events = []
        self._pending_cancel = []
        self._discard_abandoned()

    # ----- lookups -----

    def agent(self, name: str) -> Agent | None:
        """The agent row called ``name`` (the first one; names are unique in practice)."""
        agent = self._agent_index.get(name)
        if agent is None and len(self._agent_index) != len(self.agents):  # rows added elsewhere: look slowly
            agent = next((a for a in self.agents if a.name == name), None)
            if agent is not None:
                self._agent_index[name] = agent
        return agent

    def tier(self, queue: str, agent: str) -> Tier | None:
        tier = self._tier_index.get((queue, agent))
        if tier is None and len(self._tier_index) != len(self.tiers):
            tier = next((t for t in self.tiers if t.queue == queue and t.agent == agent), None)
            if tier is not None:
                self._tier_index[(queue, agent)] = tier
        return tier

    def member(self, member_uuid: str) -> Member | None:
        return next((m for m in self.members if m.uuid == member_uuid), None)

    def member_by_session(self, session_uuid: str) -> Member | None:
        return next((m for m in self.members if m.session_uuid == session_uuid and session_uuid), None)

    def _offer(self, member_uuid: str, agent_name: str | None = None) -> Offer | None:
        return next((o for o in self.offers if o.member_uuid == member_uuid and not o.done
                     and (agent_name is None or o.agent_name == agent_name)), None)

    # ----- queues (load_queue / get_queue / destroy_queue) -----

    def _parse_queue(self, name: str, params: dict[str, Any]) -> Queue | None:
        """``switch_xml_config_parse_event`` over ``queue_set_config``: a bad value fails the load."""
        q = Queue(name)
        for key, raw in params.items():
            spec = _QUEUE_PARAMS.get(key)
            if spec is None:
                continue
            attr, kind = spec
            value = str(raw)
            if kind == "int":
                if not value.strip().lstrip("-").isdigit():
                    return None
                n = int(value)
                if not 0 <= n <= 86400:
                    return None
                setattr(q, attr, n)
            elif kind == "bool":
                setattr(q, attr, _switch_true(value))
            else:
                setattr(q, attr, value)
        if _lookup(AGENT_STATUSES, q.agent_no_answer_status) is None:
            q.agent_no_answer_status = ON_BREAK
        return q

    def _load_queue(self, name: str, request_agents: bool, request_tiers: bool) -> Queue | None:
        doc = self.queue_config_provider(name)
        if doc is None:
            return None
        params = doc.get("params", doc) if isinstance(doc.get("params"), dict) else doc
        q = self._parse_queue(name, params)
        if q is None:
            return None
        self.queues.insert(name, q)
        if request_agents:
            for a in doc.get("agents", []) or []:
                self._load_agent_xml(a)
        if request_tiers and doc.get("tiers"):
            for t in doc["tiers"]:
                self._load_tier(t.get("queue", ""), t.get("agent", ""), t.get("level"), t.get("position"))
        return q

    def get_queue(self, name: str) -> Queue | None:
        """``get_queue``: a queue not in memory is fetched from the configuration on first use."""
        q = self.queues.get(name)
        if q is None:
            q = self._load_queue(name, False, False)
        return q

    # ----- agents and tiers (cc_agent_add / cc_agent_update / cc_tier_*) -----

    def _agent_add(self, name: str, type_: str) -> str:
        if _lookup(AGENT_TYPES, type_) is None:
            return "type"
        if self.agent(name):
            return "exists"
        self.agents.append(Agent(name=name, type=type_))
        self._agent_index[name] = self.agents[-1]
        self._cc_event("agent-add", [("CC-Agent", name), ("CC-Agent-Type", type_), ("CC-Action", "agent-add")])
        return "ok"

    def _agent_del(self, name: str) -> None:
        self.agents = [a for a in self.agents if a.name != name]
        self.tiers = [t for t in self.tiers if t.agent != name]
        self._agent_index.pop(name, None)
        self._tier_index = {k: t for k, t in self._tier_index.items() if k[1] != name}

    def _agent_update(self, key: str, value: str, name: str) -> str:
        """``cc_agent_update``; returns ok / notfound / status / state / type / key."""
        a = self.agent(name)
        if a is None:
            return "notfound"
        k = key.lower()
        now = self.epoch()
        if k == "status":
            status = _lookup(AGENT_STATUSES, value)
            if status is None:
                return "status"
            if status == AVAILABLE:
                # Reset values on Available only, and only when it was not Available already.
                if a.status != value:
                    a.status, a.last_status_change = value, now
                    a.talk_time = a.calls_answered = a.no_answer_count = 0
            else:
                a.status, a.last_status_change = value, now
                # "Used to stop any active callback": ring-cancel the member this agent is offered.
                m = next((m for m in self.members if m.serving_agent == name and m.serving_system == SYSTEM
                          and m.state != M_ANSWERED), None)
                if m is not None:
                    self._pending_cancel.append(m.uuid)
            self._cc_event("agent-status-change", [("CC-Agent", name), ("CC-Action", "agent-status-change"),
                                                   ("CC-Agent-Status", value)])
        elif k == "state":
            state = _lookup(AGENT_STATES, value)
            if state is None:
                return "state"
            a.state = value
            if state == RECEIVING:
                a.last_offered_call = now
            self._cc_event("agent-state-change", [("CC-Agent", name), ("CC-Action", "agent-state-change"),
                                                  ("CC-Agent-State", value)])
        elif k == "uuid":
            a.uuid, a.instance_id = value, SYSTEM
        elif k == "contact":
            a.contact, a.instance_id = value, SYSTEM
            self._cc_event("agent-contact-change", [("CC-Agent", name), ("CC-Action", "agent-contact-change"),
                                                    ("CC-Agent-Contact", value)])
        elif k in ("ready_time", "busy_delay_time", "reject_delay_time", "no_answer_delay_time",
                   "max_no_answer", "wrap_up_time"):
            setattr(a, k, _atoi(value))
            a.instance_id = SYSTEM
        elif k == "type":
            if _lookup(AGENT_TYPES, value) is None:
                return "type"
            a.type = value
        elif k == "state_if_waiting":
            if _lookup(AGENT_STATES, value) is None:
                return "state"
            if a.state == WAITING and a.status in (AVAILABLE, ON_DEMAND):
                a.state = value
                self._cc_event("agent-state-change", [("CC-Agent", name), ("CC-Action", "agent-state-change"),
                                                      ("CC-Agent-State", value)])
            else:
                return "notfound"
        else:
            return "key"
        return "ok"

    def _agent_get(self, key: str, name: str) -> tuple[str, str]:
        a = self.agent(name)
        if a is None:
            return "notfound", ""
        k = key.lower()
        if k not in ("status", "state", "uuid"):
            return "key", ""
        res = getattr(a, k) or ""
        header = "CC-Agent-UUID" if k == "uuid" else "CC-Agent-" + key[0].upper() + key[1:]
        self._cc_event(f"agent-{key}-get", [("CC-Agent", name), ("CC-Action", f"agent-{key}-get"), (header, res)])
        return "ok", res

    def _tier_add(self, queue: str, agent: str, state: str, level: int, position: int) -> str:
        if self.get_queue(queue) is None:
            return "queue"
        if self.agent(agent) is None:
            return "agent"
        if self.tier(queue, agent):
            return "exists"
        self.tiers.append(Tier(queue, agent, state, level, position))
        self._tier_index[(queue, agent)] = self.tiers[-1]
        return "ok"

    def _tier_update(self, key: str, value: str, queue: str, agent: str) -> str:
        t = self.tier(queue, agent)
        if t is None:
            return "tiernotfound"
        if self.agent(agent) is None:
            return "agent"
        if self.get_queue(queue) is None:
            return "queue"
        k = key.lower()
        if k == "state":
            st = _lookup(TIER_STATES, value)
            if st is None:
                return "state"
            t.state = value
        elif k == "level":
            t.level = _atoi(value)
        elif k == "position":
            t.position = _atoi(value)
        else:
            return "key"
        return "ok"

    def _load_agent_xml(self, attrs: dict[str, Any]) -> None:
        """``load_agent`` for one ``<agent>`` of a configuration document."""
        name, type_ = attrs.get("name"), attrs.get("type")
        if not name or not type_:
            return
        res = self._agent_add(name, type_)
        if res not in ("ok", "exists"):
            return
        for xml_key, key in (("contact", "contact"), ("status", "status"), ("wrap-up-time", "wrap_up_time"),
                             ("max-no-answer", "max_no_answer"), ("reject-delay-time", "reject_delay_time"),
                             ("busy-delay-time", "busy_delay_time"),
                             ("no-answer-delay-time", "no_answer_delay_time")):
            if attrs.get(xml_key) is not None:
                self._agent_update(key, str(attrs[xml_key]), name)
        if res == "exists":
            self._agent_update("type", type_, name)

    def _load_tier(self, queue: str, agent: str, level: Any, position: Any) -> None:
        """``load_tier``: add when missing, otherwise rewrite level and position (default 1)."""
        lv = str(level) if level not in (None, "") else ""
        pos = str(position) if position not in (None, "") else ""
        if self._tier_update("unknown", "unknown", queue, agent) == "tiernotfound":
            self._tier_add(queue, agent, T_READY, _atoi(lv) if lv else 1, _atoi(pos) if pos else 1)
        else:
            self._tier_update("level", lv or "1", queue, agent)
            self._tier_update("position", pos or "1", queue, agent)

    # ----- the callcenter_config API (cc_config_api_function) -----

    def command(self, args: str) -> str:
        """The exact body FreeSWITCH answers to ``api callcenter_config <args>``."""
        self._begin()
        out = self._command(args)
        for member_uuid in self._pending_cancel:
            self._cancel_ringing(member_uuid, "ORIGINATOR_CANCEL")
        # mod_event_socket answers "-ERR no reply" when the API wrote nothing.
        return out or "-ERR no reply\n"

    def _command(self, cmd: str) -> str:
        if not cmd.strip():
            return f"-USAGE: \n{CC_CONFIG_API_SYNTAX}\n"
        argv = separate_string(cmd, 8)
        argc = len(argv)
        if argc < 2:
            return "-ERR Invalid!\n"
        section, action = argv[0].lower(), argv[1].lower()
        rest = argv[2:]
        n = argc - 2

        def arg(i: int) -> str | None:
            return rest[i] if i < len(rest) else None

        if section == "agent":
            if action == "add":
                if n < 2:
                    return "-ERR Invalid!\n"
                r = self._agent_add(rest[0], rest[1])
                return {"ok": "+OK\n", "exists": "-ERR Agent already exist!\n",
                        "type": "-ERR Agent type invalid!\n"}[r]
            if action == "del":
                if n < 1:
                    return "-ERR Invalid!\n"
                self._agent_del(rest[0])
                return "+OK\n"
            if action == "reload":
                if n < 1:
                    return "-ERR Invalid!\n"
                doc = self.conf_provider() if self.conf_provider else {}
                for a in (doc or {}).get("agents", []) or []:
                    if a.get("name") == rest[0]:
                        self._load_agent_xml(a)
                return "+OK\n"
            if action == "set":
                if n < 3:
                    return "-ERR Invalid!\n"
                r = self._agent_update(rest[0], rest[2], rest[1])
                return {"ok": "+OK\n", "status": "-ERR Invalid Agent Status!\n",
                        "state": "-ERR Invalid Agent State!\n", "type": "-ERR Invalid Agent Type!\n",
                        "key": "-ERR Invalid Agent Update KEY!\n", "notfound": "-ERR Agent not found!\n"}[r]
            if action == "get":
                if n < 2:
                    return "-ERR Invalid!\n"
                r, value = self._agent_get(rest[0], rest[1])
                return {"ok": value[:63], "key": "-ERR Invalid Agent Update KEY!\n",
                        "notfound": "-ERR Agent not found!\n"}[r]
            if action == "list":
                if n > 1:
                    return "-ERR Invalid!\n"
                found = self.agent(rest[0]) if n else None
                rows = [a.row() for a in self.agents] if n == 0 else [found.row()] if found else []
                return _table(AGENT_COLUMNS, rows) + "+OK\n"
            return ""
        if section == "tier":
            if action == "add":
                if n < 2:
                    return "-ERR Invalid!\n"
                level = _atoi(arg(2)) if arg(2) else 1
                position = _atoi(arg(3)) if arg(3) else 1
                r = self._tier_add(rest[0], rest[1], T_READY, level, position)
                return {"ok": "+OK\n", "queue": "-ERR Queue not found!\n", "agent": "-ERR Agent not found!\n",
                        "exists": "-ERR Tier already exist!\n"}[r]
            if action == "set":
                if n < 4:
                    return "-ERR Invalid!\n"
                r = self._tier_update(rest[0], rest[3], rest[1], rest[2])
                return {"ok": "+OK\n", "state": "-ERR Invalid Tier State!\n",
                        "key": "-ERR Invalid Tier Update KEY!\n", "agent": "-ERR Agent not found!\n",
                        "queue": "-ERR Agent not found!\n"}.get(r, "-ERR Unknown Error!\n")
            if action == "del":
                if n < 2:
                    return "-ERR Invalid!\n"
                self.tiers = [t for t in self.tiers if not (t.queue == rest[0] and t.agent == rest[1])]
                self._tier_index.pop((rest[0], rest[1]), None)
                return "+OK\n"
            if action == "reload":
                if n < 1:
                    return "-ERR Invalid!\n"
                return "+OK\n" if self._tier_reload(rest[0], arg(1)) else "-ERR Unknown Error!\n"
            if action == "list":
                rows = [t.row() for t in sorted(self.tiers, key=lambda t: (t.level, t.position))]
                return _table(TIER_COLUMNS, rows) + "+OK\n"
            return ""
        if section == "queue":
            if action in ("load", "reload", "unload"):
                if n < 1:
                    return "-ERR Invalid!\n"
                name = rest[0]
                if action in ("unload", "reload"):
                    self.queues.delete(name)
                if action == "unload":
                    return "+OK\n"
                return "+OK\n" if self._load_queue(name, True, True) else "-ERR Invalid Queue not found!\n"
            if action == "list":
                if n < 1:
                    return QUEUE_LIST_HEADER + "".join(_queue_line(q) for q in self.queues) + "+OK\n"
                sub, qname = rest[0].lower(), arg(1)
                if sub == "agents":
                    rows = [a.row() for a in self._queue_agents(qname, arg(2), arg(3))]
                    return _table(AGENT_COLUMNS, rows) + "+OK\n"
                if sub == "members":
                    return _table((*MEMBER_COLUMNS, "score"), self._member_rows(qname)) + "+OK\n"
                if sub == "tiers":
                    return _table(TIER_COLUMNS, [t.row() for t in self.tiers if t.queue == qname]) + "+OK\n"
                return "-ERR Invalid!\n"
            if action == "count":
                if n < 1:
                    return f"{len(self.queues)}\n"
                sub, qname = rest[0].lower(), arg(1)
                if sub == "agents":
                    count = len(self._queue_agents(qname, arg(2), arg(3)))
                elif sub == "members":
                    count = sum(1 for m in self.members if m.queue == qname)
                elif sub == "tiers":
                    count = sum(1 for t in self.tiers if t.queue == qname)
                else:
                    return "-ERR Invalid!\n"
                return f"{count}\n"
            return ""
        return ""

    def _tier_reload(self, queue: str, agent: str | None) -> bool:
        """``load_tiers(FALSE, queue, agent)`` against callcenter.conf fetched without ``CC-Queue``."""
        doc = self.conf_provider() if self.conf_provider else {}
        found = False
        load_all = queue.lower() == "all"
        for t in (doc or {}).get("tiers", []) or []:
            tq, ta = t.get("queue", ""), t.get("agent", "")
            if load_all or (agent and ta.lower() == agent.lower() and tq.lower() == queue.lower()) \
                    or (not agent and tq.lower() == queue.lower()):
                self._load_tier(tq, ta, t.get("level"), t.get("position"))
                found = True
        return found

    def _queue_agents(self, queue: str | None, status: str | None, state: str | None) -> list[Agent]:
        """``SELECT agents.* FROM agents,tiers WHERE tiers.agent = agents.name AND tiers.queue = ...``."""
        out = []
        for a in self.agents:
            for t in self.tiers:
                if t.agent != a.name or t.queue != queue:
                    continue
                if status is not None and a.status != status:
                    continue
                if state is not None and a.state != state:
                    continue
                out.append(a)
        return out

    def _member_rows(self, queue: str | None) -> list[list[str | None]]:
        now = self.epoch()
        rows = [(m, m.row(now)) for m in self.members if queue is None or m.queue == queue]
        if queue is None:
            rows.sort(key=lambda r: (r[0].queue, -_atoi(r[1][-1])))
        else:
            rows.sort(key=lambda r: -_atoi(r[1][-1]))
        return [r for _, r in rows]

    # ----- the json API (json_callcenter_config_function + mod_commands' envelope) -----

    def json_api(self, request: dict[str, Any]) -> str:
        """The body of ``api json {"command":"callcenter_config","data":{...}}``."""
        self._begin()
        data = request.get("data") or {}
        arguments = (data.get("arguments") or "").lower()
        qname = data.get("queue_name")
        response: Any
        if arguments == "agent list":
            response = [_json_row(AGENT_COLUMNS, a.row()) for a in self.agents]
        elif arguments == "queue list":
            response = [_queue_json(q) for q in self.queues]
        elif arguments in ("queue list agents", "queue list members", "queue list tiers") and not qname:
            response = {"error": "Missing data attribute: queue_name"}
            return _json_line(request, "error", response)
        elif arguments == "queue list agents":
            response = [_json_row(AGENT_COLUMNS, a.row()) for a in self._queue_agents(qname, None, None)]
        elif arguments == "queue list members":
            response = [_json_row((*MEMBER_COLUMNS, "score"), r) for r in self._member_rows(qname)]
        elif arguments == "queue list tiers":
            response = [_json_row(TIER_COLUMNS, t.row()) for t in self.tiers if t.queue == qname]
        elif arguments == "member list":
            now = self.epoch()
            rows = sorted((m.row(now) for m in self.members), key=lambda r: -_atoi(r[-1]))
            response = [_json_row((*MEMBER_COLUMNS, "score"), r) for r in rows]
        elif arguments == "tier list":
            ordered = sorted(self.tiers, key=lambda t: (t.level, t.position))
            response = [_json_row(TIER_COLUMNS, t.row()) for t in ordered]
        else:
            return _json_line(request, "error", None)
        return _json_line(request, "success", response)

    def break_command(self, args: str) -> str:
        """``api callcenter_break agent <uuid>``: release a bridged agent leg (CC_APP_SHOULD_BREAK)."""
        argv = separate_string(args, 2) if args.strip() else []
        if len(argv) < 2:
            return "-ERR Usage: callcenter_break agent <uuid>\n"
        offer = next((o for o in self.offers if o.leg_uuid == argv[1] and not o.done), None)
        if offer is None:
            return f"-ERR Session not found for uuid {argv[1]}\n"
        # The flag only ends the agent thread's wait (the legs stay up); the emulator then calls
        # bridge_end().  The API writes nothing, so mod_event_socket answers "-ERR no reply".
        return "-ERR no reply\n"

    # ----- dispatch (cc_agent_dispatch_thread_run / members_callback / agents_callback) -----

    def _discard_abandoned(self) -> None:
        """The abandoned-member cleanup of ``members_callback`` (run on every pass of the 100 ms loop)."""
        now = self.epoch()
        keep = []
        for m in self.members:
            if m.state == M_ABANDONED:
                q = self.queues.get(m.queue)
                discard = q.discard_abandoned_after if q else 60
                abandoned = m.abandoned_epoch or m.joined_epoch
                if abandoned + discard < now:
                    continue
            keep.append(m)
        self.members = keep

    def _dispatch_members(self, queue: str | None) -> list[Member]:
        """The dispatch SELECT: Waiting, Abandoned, or ring-all/progressively Trying, by score."""
        now = self.epoch()
        ms = [m for m in self.members
              if (m.state in (M_WAITING, M_ABANDONED)
                  or (m.state == M_TRYING and m.serving_agent in ("ring-all", "ring-progressively")))
              and m.instance_id == SYSTEM and (queue is None or m.queue == queue)]
        ms.sort(key=lambda m: -(now - m.joined_epoch + m.base_score + m.skill_score))
        return ms

    def dispatch(self, queue: str | None = None, first_only: bool = False) -> list[Offer]:
        """One pass of the dispatch thread; returns the offers it started (events in ``last_events``)."""
        self._begin()
        return self._dispatch(queue, first_only)

    def _dispatch(self, queue: str | None, first_only: bool) -> list[Offer]:
        started: list[Offer] = []
        for m in self._dispatch_members(queue):
            if m not in self.members:
                continue
            started += self._members_callback(m, first_only)
            if first_only and started:
                break
        return started

    def next_offer(self, queue: str) -> tuple[Agent, Member] | None:
        """The next (agent, member) the dispatcher offers in ``queue``, or None; events in ``last_events``."""
        self._begin()
        offers = self._dispatch(queue, True)
        if not offers:
            return None
        o = offers[0]
        a, m = self.agent(o.agent_name), self.member(o.member_uuid)
        assert a is not None and m is not None
        return a, m

    def tick(self) -> list[Event]:
        """What the module's threads do on their own: wait-time limits, then a dispatch pass."""
        self._begin()
        for m in list(self.members):
            if m.state in (M_WAITING, M_TRYING) and m.session_uuid:
                self._member_thread_check(m)
        self._dispatch(None, False)
        return self.last_events

    def _member_thread_check(self, m: Member) -> None:
        """``cc_member_thread_run``: max-wait-time and max-wait-time-with-no-agent."""
        q = self.get_queue(m.queue)
        if q is None or m.agent_found:
            return
        now = self.epoch()
        reason = None
        if q.max_wait_time > 0 and q.max_wait_time <= now - m.t_member_called:
            reason = "TIMEOUT"
        elif q.max_wait_time_with_no_agent > 0 and q.last_agent_exist_check > q.last_agent_exist \
                and m.t_member_called <= q.last_agent_exist_check \
                and q.last_agent_exist_check - q.last_agent_exist >= q.max_wait_time_with_no_agent:
            if q.max_wait_time_with_no_agent_time_reached > 0:
                if q.last_agent_exist_check - m.t_member_called >= \
                        q.max_wait_time_with_no_agent_time_reached + q.max_wait_time_with_no_agent:
                    reason = "NO_AGENT_TIMEOUT"
            else:
                reason = "NO_AGENT_TIMEOUT"
        if reason:
            self._member_leave(m, reason, hangup_member=False)

    def _candidates(self, q: Queue, m: Member) -> list[_Candidate]:
        """The agent SELECT of ``members_callback`` for the queue's strategy, in its ORDER BY."""
        pool = [_Candidate(a, t) for a in self.agents for t in self.tiers
                if t.agent == a.name and t.queue == q.name and a.status in (AVAILABLE, ON_BREAK, ON_DEMAND)]
        strategy = q.strategy.lower()
        if strategy == "top-down":
            position = _atoi(m.variables.get("cc_last_agent_tier_position"))
            level = _atoi(m.variables.get("cc_last_agent_tier_level"))
            first = [c for c in pool if c.tier.position > position and c.tier.level == level]
            second = [c for c in pool if c.tier.level > level]
            key = lambda c: (c.tier.level, c.tier.position, c.agent.last_offered_call)  # noqa: E731
            return sorted(first, key=key) + sorted(second, key=key)
        if strategy == "round-robin":
            offered = [c for c in self._all_tier_rows(q.name) if c.agent.last_offered_call > 0]
            key = lambda c: (c.tier.level, c.tier.position, c.agent.last_offered_call)  # noqa: E731
            first: list[_Candidate] = []
            if offered:
                last = max(offered, key=lambda c: c.agent.last_offered_call)
                first = [c for c in pool if c.tier.position > last.tier.position and c.tier.level == last.tier.level]
            return sorted(first, key=key) + sorted(pool, key=key)
        if strategy == "longest-idle-agent":
            return sorted(pool, key=lambda c: (c.tier.level, c.agent.last_bridge_end, c.tier.position))
        if strategy == "agent-with-least-talk-time":
            return sorted(pool, key=lambda c: (c.tier.level, c.agent.talk_time, c.tier.position))
        if strategy == "agent-with-fewest-calls":
            return sorted(pool, key=lambda c: (c.tier.level, c.agent.calls_answered, c.tier.position))
        if strategy in ("ring-all", "ring-progressively"):
            return sorted(pool, key=lambda c: (c.tier.level, c.tier.position))
        if strategy == "random":
            keyed = [(c.tier.level, self.rng.random(), c) for c in pool]
            return [c for _, _, c in sorted(keyed, key=lambda x: (x[0], x[1]))]
        # sequentially-by-agent-order and any unknown strategy name
        return sorted(pool, key=lambda c: (c.tier.level, c.tier.position, c.agent.last_offered_call))

    def _all_tier_rows(self, queue: str) -> list[_Candidate]:
        return [_Candidate(a, t) for a in self.agents for t in self.tiers if t.agent == a.name and t.queue == queue]

    def _members_callback(self, m: Member, first_only: bool) -> list[Offer]:
        q = self.get_queue(m.queue)
        if q is None:
            self.members.remove(m)
            return []
        if m.state == M_ABANDONED:
            return []  # cleanup already done in _discard_abandoned()
        strategy = q.strategy.lower()
        # Tracking queue strategy changes
        if m.serving_agent == "ring-all" and strategy != "ring-all":
            if m.state == M_TRYING:
                if strategy == "ring-progressively":
                    m.serving_agent = "ring-progressively"
                else:
                    m.serving_agent, m.state = "", M_WAITING
        elif m.serving_agent == "ring-progressively" and strategy != "ring-progressively":
            if m.state == M_TRYING:
                if strategy == "ring-all":
                    m.serving_agent = "ring-all"
                else:
                    m.serving_agent, m.state = "", M_WAITING
        elif strategy in ("ring-all", "ring-progressively") and m.serving_agent != strategy:
            if m.serving_agent in ("ring-all", "ring-progressively") and m.state == M_TRYING:
                m.serving_agent = strategy
            elif m.serving_agent == "" and m.state == M_WAITING:
                m.serving_agent, m.state = strategy, M_TRYING

        if strategy in ("ring-all", "ring-progressively") and m.state == M_WAITING:
            m.state = M_TRYING
        candidates = self._candidates(q, m)

        if strategy == "ring-progressively":
            last = m.variables.get("cc_last_originated_call")
            delay = q.ring_progressively_delay or 10
            if last and self.epoch() < _atoi(last) + delay and not m.agent_found:
                return []

        started: list[Offer] = []
        tier, tier_agent_available, agent_found = 0, 0, False
        for c in candidates:
            agent_found = True
            a, t = c.agent, c.tier
            now = self.epoch()
            # Tier rules: may we move on to this (higher) level yet?
            if q.tier_rules_apply and t.level > tier:
                waited = now - m.joined_epoch
                wait = q.tier_rule_wait_second * (t.level if q.tier_rule_wait_multiply_level else 1)
                if q.tier_rule_no_agent_no_wait and tier_agent_available == 0:
                    tier = t.level
                elif waited >= wait:
                    tier, tier_agent_available = t.level, 0
                else:
                    break
            tier_agent_available += 1
            if t.state not in (T_NO_ANSWER, T_READY):
                continue
            if a.state != WAITING:
                continue
            if not a.last_bridge_end < now - a.wrap_up_time:
                continue
            if not a.ready_time <= now:
                continue
            if a.status == ON_BREAK:
                continue
            if q.skip_agents_with_external_calls and a.external_calls_count > 0:
                continue
            if a.instance_id != SYSTEM:
                if strategy == "ring-all":
                    break
                continue
            if strategy in ("ring-all", "ring-progressively"):
                if m.serving_agent != strategy:
                    break
            else:
                if m.state != M_WAITING:
                    break
                m.serving_agent, m.serving_system, m.state = a.name, a.instance_id, M_TRYING
            started.append(self._start_offer(q, m, c))
            if strategy != "ring-all" or first_only:
                break
        q.last_agent_exist_check = self.epoch()
        if agent_found:
            q.last_agent_exist = q.last_agent_exist_check
        elif strategy == "top-down":
            m.variables.pop("cc_last_agent_tier_position", None)
            m.variables.pop("cc_last_agent_tier_level", None)
        return started

    def _start_offer(self, q: Queue, m: Member, c: _Candidate) -> Offer:
        """The thread start in ``agents_callback`` and the offering part of ``outbound_agent_thread_run``."""
        a, t = c.agent, c.tier
        strategy = q.strategy.lower()
        o = Offer(q.name, m.uuid, a.name, a.type, a.status, a.uuid, a.contact or "", strategy,
                  a.no_answer_count, a.max_no_answer, a.reject_delay_time, a.busy_delay_time,
                  a.no_answer_delay_time, q.agent_no_answer_status)
        o.member_session_uuid = m.session_uuid
        if strategy == "ring-progressively":
            m.variables["cc_last_originated_call"] = str(self.epoch())
        if strategy == "top-down":
            m.variables["cc_last_agent_tier_position"] = str(t.position)
            m.variables["cc_last_agent_tier_level"] = str(t.level)
        self._agent_update("state", RECEIVING, a.name)
        for tt in self.tiers:
            if tt.agent == a.name and tt.queue == q.name:
                tt.state = T_OFFERING
            elif tt.agent == a.name and tt.state == T_READY:
                tt.state = T_STANDBY
        self.offers.append(o)
        self._cc_event("agent-offering", [
            ("CC-Queue", q.name), ("CC-Action", "agent-offering"), ("CC-Agent", a.name),
            ("CC-Agent-Type", a.type), ("CC-Agent-System", a.instance_id), ("CC-Member-UUID", m.uuid),
            ("CC-Member-Session-UUID", m.session_uuid), ("CC-Member-CID-Name", m.cid_name),
            ("CC-Member-CID-Number", m.cid_number), ("CC-Member-DNIS", m.dnis)])
        o.t_agent_called = self.epoch()
        if a.type.lower() == "callback":
            o.leg_uuid = self.new_uuid()
            o.leg_channel = self._agent_leg_channel(o, m)
            for name in ("CHANNEL_OUTGOING", "CHANNEL_CREATE", "CHANNEL_ORIGINATE", "CHANNEL_PROGRESS"):
                self._channel_event("agent", name, m, o)
        elif a.type.lower() == "uuid-standby":
            o.leg_uuid = a.uuid or ""
        return o

    def _agent_leg_channel(self, o: Offer, m: Member) -> list[tuple[str, str]]:
        """Identity headers of the originated agent leg (the recorded leg with this call's ids)."""
        target = o.originate_string.split("]")[-1].split("}")[-1]
        user = target.split("/")[-1].split("@")[0] if target else ""
        ids = {"Unique-ID": o.leg_uuid, "Channel-Call-UUID": o.leg_uuid, "Caller-Unique-ID": o.leg_uuid,
               "Caller-Caller-ID-Name": m.cid_name, "Caller-Caller-ID-Number": m.cid_number,
               "Caller-Orig-Caller-ID-Name": m.cid_name, "Caller-Orig-Caller-ID-Number": m.cid_number,
               "Caller-ANI": m.cid_number, "Caller-Destination-Number": user, "Caller-Callee-ID-Number": user,
               "variable_cc_member_uuid": m.uuid, "variable_cc_member_session_uuid": m.session_uuid,
               "variable_cc_member_pre_answer_uuid": m.uuid, "variable_cc_queue": o.queue,
               "variable_cc_agent": o.agent_name, "variable_cc_agent_type": o.agent_type,
               "variable_uuid": o.leg_uuid}
        return list(ids.items())

    # ----- call flow -----

    def member_join(self, queue: str, caller_uuid: str, caller_headers: list[tuple[str, str]] | None = None,
                    *, member_uuid: str | None = None, answered_epoch: int | None = None,
                    base_score: int = 0, dnis: str = "") -> Member | None:
        """``callcenter_function`` entry: the caller runs ``callcenter <queue>``; None if the queue is unknown.

        Events (member-queue-start, members-count) are in ``last_events``.
        """
        self._begin()
        q = self.get_queue(queue)
        if q is None:
            return None
        headers = list(caller_headers or [])
        hd = dict(headers)
        cid_name = hd.get("Caller-Caller-ID-Name", hd.get("variable_caller_id_name", ""))
        cid_number = hd.get("Caller-Caller-ID-Number", hd.get("variable_caller_id_number", ""))
        now = self.epoch()
        start_epoch = answered_epoch if answered_epoch is not None else now
        resumed: Member | None = None
        if q.abandoned_resume_allowed:
            prior = [m for m in self.members if m.queue == queue and m.cid_number == cid_number
                     and m.state == M_ABANDONED]
            if prior:
                resumed = max(prior, key=lambda m: m.abandoned_epoch)
        score = base_score + (now - start_epoch if q.time_base_score.lower() == "system" else 0)
        if resumed is not None:
            m = resumed
            m.session_uuid, m.state, m.rejoined_epoch = caller_uuid, M_WAITING, now
        else:
            strategy = q.strategy.lower()
            m = Member(queue, member_uuid or self.new_uuid(), caller_uuid, cid_number, cid_name, start_epoch, now,
                       base_score=score,
                       serving_agent=strategy if strategy in ("ring-all", "ring-progressively") else "")
            self.members.append(m)
        m.channel, m.t_member_called, m.dnis, m.agent_found = headers, now, dnis, False
        m.variables.update({"cc_side": "member", "cc_member_uuid": m.uuid, "cc_queue": queue,
                            "cc_queue_joined_epoch": str(now)})
        self._cc_event("member-queue-resume" if resumed else "member-queue-start", [
            ("CC-Queue", queue), ("CC-Action", "member-queue-resume" if resumed else "member-queue-start"),
            ("CC-Member-UUID", m.uuid), ("CC-Member-Session-UUID", caller_uuid),
            ("CC-Member-CID-Name", cid_name), ("CC-Member-CID-Number", cid_number)], leg="member", m=m)
        self._queue_count(queue)
        return m

    def _queue_count(self, queue: str, extra: int = 0) -> None:
        """``cc_queue_count``: members Waiting or Trying, as a ``members-count`` event."""
        count = sum(1 for m in self.members if m.queue == queue and m.state in (M_WAITING, M_TRYING)) + extra
        self._cc_event("members-count", [("CC-Queue", queue), ("CC-Action", "members-count"),
                                         ("CC-Count", str(count)), ("CC-Selection", "Single-Queue")])

    def _resolve(self, member: Member | str) -> Member:
        if isinstance(member, Member):
            return member
        m = self.member(member) or self.member_by_session(member)
        if m is None:
            raise KeyError(f"no member {member}")
        return m

    def agent_answered(self, member: Member | str, agent_name: str,
                       agent_headers: list[tuple[str, str]] | None = None, *, bridge: bool = True) -> list[Event]:
        """The agent leg answered: the success path of ``outbound_agent_thread_run``.

        With ``bridge=False`` only bridge-agent-start is raised: the real module then spends a
        moment in ``switch_ivr_uuid_bridge`` with the member still Trying and the agent still
        Receiving (the recordings query it in that window); :meth:`complete_bridge` finishes.
        """
        self._begin()
        m = self._resolve(member)
        o = self._offer(m.uuid, agent_name)
        if o is None:
            raise KeyError(f"{agent_name} is not being offered {m.uuid}")
        if agent_headers:
            o.leg_channel = list(agent_headers)
            o.leg_uuid = dict(agent_headers).get("Unique-ID", o.leg_uuid)
        if o.agent_type.lower() == "callback":
            self._channel_event("agent", "CHANNEL_ANSWER", m, o)
        if o.strategy in ("ring-all", "ring-progressively"):
            if not (m.state == M_TRYING and m.serving_agent == o.strategy):
                # lost the race: another agent took the member
                self._offer_failed(o, m, "LOSE_RACE", hangup_leg=True)
                return self.last_events
            m.serving_agent, m.serving_system = o.agent_name, SYSTEM
            for other in [x for x in self.offers if x.member_uuid == m.uuid and x is not o and not x.done]:
                self._offer_failed(other, m, "LOSE_RACE", hangup_leg=True)
        now = self.epoch()
        o.t_agent_answered = now
        self._cc_event("bridge-agent-start", [
            ("CC-Queue", o.queue), ("CC-Action", "bridge-agent-start"), ("CC-Agent", o.agent_name),
            ("CC-Agent-System", SYSTEM), ("CC-Agent-UUID", o.leg_uuid),
            ("CC-Agent-Called-Time", str(o.t_agent_called)), ("CC-Agent-Answered-Time", str(now)),
            ("CC-Member-Joined-Time", str(m.t_member_called)), ("CC-Member-UUID", m.uuid),
            ("CC-Member-Session-UUID", m.session_uuid), ("CC-Member-CID-Name", m.cid_name),
            ("CC-Member-CID-Number", m.cid_number), ("CC-Member-DNIS", m.dnis)], leg="agent", m=m, o=o)
        m.agent_found = True
        if bridge:
            self._complete_bridge(m, o)
        return self.last_events

    def complete_bridge(self, member: Member | str) -> list[Event]:
        """Second half of :meth:`agent_answered`: the legs are bridged and the tables say so."""
        self._begin()
        m = self._resolve(member)
        o = next((x for x in self.offers if x.member_uuid == m.uuid and x.t_agent_answered and not x.bridged), None)
        if o is None:
            raise KeyError(f"member {m.uuid} has no answered agent")
        self._complete_bridge(m, o)
        return self.last_events

    def _complete_bridge(self, m: Member, o: Offer) -> None:
        now = self.epoch()
        a = self.agent(o.agent_name)
        # callcenter_function leaves its loop on cc_agent_bridged and counts before the row says Answered
        q = self.get_queue(o.queue)
        if q is not None:
            q.calls_answered += 1
        self._queue_count(o.queue)
        self._channel_event("member", "CHANNEL_BRIDGE", m, o,
                            {"Bridge-A-Unique-ID": m.session_uuid, "Bridge-B-Unique-ID": o.leg_uuid})
        o.bridged = True
        m.state, m.bridge_epoch = M_ANSWERED, now
        m.variables["cc_agent"] = o.agent_name
        if a is not None:
            a.uuid, a.last_bridge_start = o.leg_uuid, now
            a.calls_answered += 1
            a.no_answer_count = 0
        self._tier_update("state", T_ACTIVE_INBOUND, o.queue, o.agent_name)
        self._agent_update("state", IN_A_QUEUE_CALL, o.agent_name)

    def bridge_end(self, member: Member | str, hangup_cause: str = "NORMAL_CLEARING",
                   hungup_first: str = "member", caller_headers: list[tuple[str, str]] | None = None) -> list[Event]:
        """The bridged call ends (either side hangs up): bridge-agent-end, member-queue-end, back to Waiting."""
        self._begin()
        m = self._resolve(member)
        if caller_headers is not None:
            m.channel = list(caller_headers)
        o = next((x for x in self.offers if x.member_uuid == m.uuid and x.bridged and not x.done), None)
        if o is None:
            raise KeyError(f"member {m.uuid} is not bridged")
        legs = ["member", "agent"]
        if hungup_first == "agent":
            legs.reverse()
        hang = {"Hangup-Cause": hangup_cause}
        for leg in legs:
            self._channel_event(leg, "CHANNEL_HANGUP", m, o, hang)
        self._channel_event("member", "CHANNEL_UNBRIDGE", m, o,
                            {"Bridge-A-Unique-ID": m.session_uuid, "Bridge-B-Unique-ID": o.leg_uuid})
        for leg in legs:
            self._channel_event(leg, "CHANNEL_HANGUP_COMPLETE", m, o, hang)
        now = self.epoch()
        self._cc_event("bridge-agent-end", [
            ("CC-Queue", o.queue), ("CC-Action", "bridge-agent-end"), ("CC-Hangup-Cause", "SUCCESS"),
            ("CC-Agent", o.agent_name), ("CC-Agent-System", SYSTEM), ("CC-Agent-UUID", o.leg_uuid),
            ("CC-Agent-Bridged", "true"), ("CC-Agent-Called-Time", str(o.t_agent_called)),
            ("CC-Agent-Answered-Time", str(o.t_agent_answered)), ("CC-Member-Joined-Time", str(m.t_member_called)),
            ("CC-Bridge-Terminated-Time", str(now)), ("CC-Member-UUID", m.uuid),
            ("CC-Member-Session-UUID", m.session_uuid), ("CC-Member-CID-Name", m.cid_name),
            ("CC-Member-CID-Number", m.cid_number)], leg="agent", m=m, o=o)
        a = self.agent(o.agent_name)
        if a is not None:
            if o.agent_type.lower() != "uuid-standby":
                a.uuid = ""
            a.last_bridge_end = now
            a.talk_time += now - a.last_bridge_start
        if m in self.members:
            self.members.remove(m)
        self._cc_event("member-queue-end", [
            ("CC-Queue", o.queue), ("CC-Action", "member-queue-end"), ("CC-Hangup-Cause", "SUCCESS"),
            ("CC-Cause", "Terminated"), ("CC-Agent", o.agent_name), ("CC-Agent-System", SYSTEM),
            ("CC-Agent-UUID", o.leg_uuid), ("CC-Agent-Called-Time", str(o.t_agent_called)),
            ("CC-Agent-Answered-Time", str(o.t_agent_answered)), ("CC-Member-Leaving-Time", str(now)),
            ("CC-Member-Joined-Time", str(m.t_member_called)), ("CC-Member-UUID", m.uuid),
            ("CC-Member-Session-UUID", m.session_uuid), ("CC-Member-CID-Name", m.cid_name),
            ("CC-Member-CID-Number", m.cid_number)], leg="member", m=m)
        self._offer_done(o, T_READY, bridged=True)
        for leg in legs:
            self._channel_event(leg, "CHANNEL_DESTROY", m, o, hang)
        return self.last_events

    def agent_no_answer(self, member: Member | str, agent_name: str, cause: str = "NO_ANSWER") -> list[Event]:
        """The offered leg failed (``NO_ANSWER``, ``USER_BUSY``, ``CALL_REJECTED`` ...): the failure path."""
        self._begin()
        m = self._resolve(member)
        o = self._offer(m.uuid, agent_name)
        if o is None:
            raise KeyError(f"{agent_name} is not being offered {m.uuid}")
        self._offer_failed(o, m, cause, hangup_leg=True)
        return self.last_events

    def member_abandon(self, member: Member | str, hangup_cause: str = "NORMAL_CLEARING",
                       caller_headers: list[tuple[str, str]] | None = None) -> list[Event]:
        """The caller hangs up while waiting or while agents ring (member-queue-end Cancel/BREAK_OUT).

        ``caller_headers`` is the caller channel as it is now (hung up), for the events that carry it.
        """
        self._begin()
        m = self._resolve(member)
        if caller_headers is not None:
            m.channel = list(caller_headers)
        self._member_leave(m, "BREAK_OUT", hangup_member=True, hangup_cause=hangup_cause)
        return self.last_events

    def _member_leave(self, m: Member, reason: str, *, hangup_member: bool,
                      hangup_cause: str = "NORMAL_CLEARING") -> None:
        """The 'Canceled for some reason' branch of ``callcenter_function``."""
        now = self.epoch()
        ringing = [o for o in self.offers if o.member_uuid == m.uuid and not o.done and not o.bridged]
        if hangup_member:
            self._channel_event("member", "CHANNEL_HANGUP", m, None, {"Hangup-Cause": hangup_cause})
        for o in ringing:
            if o.agent_type.lower() == "callback":
                self._channel_event("ringing", "CHANNEL_HANGUP", m, o, {"Hangup-Cause": "ORIGINATOR_CANCEL"})
        m.state, m.abandoned_epoch = M_ABANDONED, now
        session_uuid, m.session_uuid = m.session_uuid, ""
        self._cc_event("member-queue-end", [
            ("CC-Queue", m.queue), ("CC-Action", "member-queue-end"), ("CC-Member-Leaving-Time", str(now)),
            ("CC-Member-Joined-Time", str(m.t_member_called)), ("CC-Cause", "Cancel"),
            ("CC-Cancel-Reason", reason), ("CC-Member-UUID", m.uuid), ("CC-Member-Session-UUID", session_uuid),
            ("CC-Member-CID-Name", m.cid_name), ("CC-Member-CID-Number", m.cid_number)],
            leg="member", m=m)
        q = self.get_queue(m.queue)
        if q is not None:
            q.calls_abandoned += 1
        self._queue_count(m.queue)
        for o in ringing:
            if o.agent_type.lower() == "callback":
                self._channel_event("ringing", "CHANNEL_HANGUP_COMPLETE", m, o,
                                    {"Hangup-Cause": "ORIGINATOR_CANCEL"})
        if hangup_member:
            self._channel_event("member", "CHANNEL_HANGUP_COMPLETE", m, None,
                                {"Hangup-Cause": hangup_cause})
        for o in ringing:
            if o.agent_type.lower() == "callback":
                self._channel_event("ringing", "CHANNEL_DESTROY", m, o, {"Hangup-Cause": "ORIGINATOR_CANCEL"})
            self._offer_failed(o, m, "ORIGINATOR_CANCEL", hangup_leg=False)
        if hangup_member:
            self._channel_event("member", "CHANNEL_DESTROY", m, None, {"Hangup-Cause": hangup_cause})

    def _cancel_ringing(self, member_uuid: str, cause: str) -> None:
        """``switch_core_session_hupall_matching_var("cc_member_pre_answer_uuid", ...)`` on ringing legs."""
        m = self.member(member_uuid)
        if m is None:
            return
        for o in [o for o in self.offers if o.member_uuid == member_uuid and not o.done and not o.bridged]:
            self._offer_failed(o, m, cause, hangup_leg=True)

    def _offer_failed(self, o: Offer, m: Member, cause: str, *, hangup_leg: bool) -> None:
        """The 'Agent didn't answer or originate/bridge failed' branch of ``outbound_agent_thread_run``."""
        if hangup_leg and o.agent_type.lower() == "callback" and o.leg_channel:
            self._channel_event("agent", "CHANNEL_HANGUP", m, o, {"Hangup-Cause": cause})
        if m.serving_agent == o.agent_name and m.serving_system == SYSTEM:
            if m.state == M_TRYING:
                m.state = M_WAITING
            m.serving_agent = m.serving_system = ""
        delay, tier_state = 0, T_READY
        if cause in ("LOSE_RACE", "ORIGINATOR_CANCEL"):
            pass
        elif cause in ("NORMAL_CIRCUIT_CONGESTION", "USER_BUSY"):
            delay = max(o.busy_delay_time, delay)
        elif cause == "CALL_REJECTED":
            delay = max(o.reject_delay_time, delay)
        elif cause == "USER_NOT_REGISTERED":
            delay = 5
        else:
            delay = max(o.no_answer_delay_time, delay)
            tier_state = T_NO_ANSWER
            a = self.agent(o.agent_name)
            if a is not None:
                a.no_answer_count += 1
            if o.max_no_answer > 0 and o.no_answer_count + 1 >= o.max_no_answer:
                self._cc_event("agent-max-no-answer", [
                    ("CC-Agent", o.agent_name), ("CC-Action", "agent-max-no-answer"),
                    ("CC-Agent-No-Answer-Count", str(o.max_no_answer)),
                    ("CC-Agent-No-Answer-Status", o.agent_no_answer_status),
                    ("CC-Member-UUID", m.uuid), ("CC-Member-Session-UUID", o.member_session_uuid)])
                self._pending_cancel = []
                self._agent_update("status", o.agent_no_answer_status, o.agent_name)
        if delay > 0:
            self._agent_update("ready_time", str(self.epoch() + delay), o.agent_name)
        self._cc_event("bridge-agent-fail", [
            ("CC-Queue", o.queue), ("CC-Action", "bridge-agent-fail"), ("CC-Hangup-Cause", cause),
            ("CC-Agent", o.agent_name), ("CC-Agent-System", SYSTEM),
            ("CC-Agent-Called-Time", str(o.t_agent_called)), ("CC-Agent-Aborted-Time", str(self.epoch())),
            ("CC-Member-UUID", m.uuid), ("CC-Member-Session-UUID", o.member_session_uuid),
            ("CC-Member-CID-Name", m.cid_name), ("CC-Member-CID-Number", m.cid_number),
            ("CC-Member-Joined-Time", str(m.t_member_called))])
        if hangup_leg and o.agent_type.lower() == "callback" and o.leg_channel:
            self._channel_event("agent", "CHANNEL_HANGUP_COMPLETE", m, o, {"Hangup-Cause": cause})
            self._channel_event("agent", "CHANNEL_DESTROY", m, o, {"Hangup-Cause": cause})
        self._offer_done(o, tier_state, bridged=False)

    def _offer_done(self, o: Offer, tier_state: str, *, bridged: bool) -> None:
        """The ``done:`` label: tier states back to Ready/Standby, agent back to Waiting (or Idle)."""
        o.done = True
        for t in self.tiers:
            if t.agent != o.agent_name:
                continue
            if t.queue == o.queue and t.state in (T_ACTIVE_INBOUND, T_STANDBY, T_OFFERING):
                t.state = tier_state
            elif t.queue != o.queue and t.state == T_STANDBY:
                t.state = T_READY
        if o.agent_status == ON_DEMAND and bridged:
            self._agent_update("state", IDLE, o.agent_name)
        else:
            self._agent_update("state", WAITING, o.agent_name)
        self.offers = [x for x in self.offers if not x.done]


# --- output helpers ---


def _table(columns: Iterable[str], rows: list[list[str | None]]) -> str:
    """``list_result_callback``: a header line only when there is a row; NULL prints as empty."""
    if not rows:
        return ""
    out = ["|".join(columns) + "\n"]
    out += ["|".join(v or "" for v in r) + "\n" for r in rows]
    return "".join(out)


def _tf(b: bool) -> str:
    return "true" if b else "false"


def _queue_line(q: Queue) -> str:
    vals = [q.name, q.strategy, q.moh_sound or "", q.time_base_score, _tf(q.tier_rules_apply),
            str(q.tier_rule_wait_second), _tf(q.tier_rule_wait_multiply_level),
            _tf(q.tier_rule_no_agent_no_wait), str(q.discard_abandoned_after), _tf(q.abandoned_resume_allowed),
            str(q.max_wait_time), str(q.max_wait_time_with_no_agent),
            str(q.max_wait_time_with_no_agent_time_reached), q.record_template or "", str(q.calls_answered),
            str(q.calls_abandoned), str(q.ring_progressively_delay), _tf(q.skip_agents_with_external_calls),
            q.agent_no_answer_status]
    return "|".join(vals) + "\n"


def _queue_json(q: Queue) -> dict[str, Any]:
    o: dict[str, Any] = {"name": q.name, "strategy": q.strategy}
    if q.moh_sound is not None:
        o["moh_sound"] = q.moh_sound
    o.update({"time_base_score": q.time_base_score, "tier_rules_apply": _tf(q.tier_rules_apply),
              "tier_rule_wait_second": q.tier_rule_wait_second,
              "tier_rule_wait_multiply_level": _tf(q.tier_rule_wait_multiply_level),
              "tier_rule_no_agent_no_wait": _tf(q.tier_rule_no_agent_no_wait),
              "discard_abandoned_after": q.discard_abandoned_after,
              "abandoned_resume_allowed": _tf(q.abandoned_resume_allowed), "max_wait_time": q.max_wait_time,
              "max_wait_time_with_no_agent": q.max_wait_time_with_no_agent,
              "max_wait_time_with_no_agent_time_reached": q.max_wait_time_with_no_agent_time_reached})
    if q.record_template is not None:
        o["record_template"] = q.record_template
    o["skip_agents_with_external_calls"] = _tf(q.skip_agents_with_external_calls)
    o["agent_no_answer_status"] = q.agent_no_answer_status
    return o


def _json_row(columns: Iterable[str], row: list[str | None]) -> dict[str, str]:
    return {c: v for c, v in zip(columns, row, strict=True) if v is not None}


def _json_line(request: dict[str, Any], status: str, response: Any) -> str:
    out = dict(request)
    out["status"] = status
    if response is not None:
        out["response"] = response
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n"
