"""A call-center floor for the real-switch scenarios: agents with registered sipp phones, queues with
extensions, callers; and what mod_callcenter, `show channels` and the phones say about them.

Everything is made through switchdesk's HTTP API (the account's own admin key); the judges are
FreeSWITCH's own lists (`callcenter_config agent|tier|queue list`, `show channels`) and the SIP each
sipp phone received (its message trace, with sipp's wall-clock timestamps).
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.realswitch.esl import parse_table
from tests.realswitch.sipp import Phone, SippRun
from tests.realswitch.switchdesk import Account

PASSWORD = "Desk-phone-pw-1234"
USER_PASSWORD = "Agent-pw-1234"
OPEN_ENDED = 2147483647


def eventually(probe: Callable[[], Any], check: Callable[[Any], bool], what: str, timeout: float = 10,
               every: float = 0.05) -> Any:
    """Poll `probe` until `check` holds on its value; the failure names the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout:.1f} s; last seen {value!r}")
        time.sleep(every)


def never(probe: Callable[[], Any], check: Callable[[Any], bool], what: str, seconds: float,
          every: float = 0.1) -> Any:
    """`check` stays false on every value `probe` gives for `seconds`; returns the last value."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        assert not check(value), f"{what}: happened ({value!r})"
        if time.monotonic() > deadline:
            return value
        time.sleep(every)


def rings(row: dict[str, str], sip: str, domain: str) -> bool:
    """The agent's mod_callcenter contact dials this device: `user/<sip>@<domain>`, optionally after
    channel variables in brackets (e.g. `[leg_timeout=30]`, the device's ring time)."""
    return bool(re.fullmatch(rf"(\[[^\]]*\])?user/{re.escape(sip)}@{re.escape(domain)}", row.get("contact") or ""))


# --- what FreeSWITCH says ----------------------------------------------------------------------------

class Switch:
    """mod_callcenter's lists and the channel table, read over a fresh event-socket connection."""

    def __init__(self, real_switch):
        self.real = real_switch

    def cc(self, args: str) -> str:
        return self.real.api(f"callcenter_config {args}")

    def agent(self, name: str) -> dict[str, str]:
        """`agent list <name>`: the agent's row, {} when mod_callcenter has no such agent."""
        return next((row for row in parse_table(self.cc(f"agent list {name}")) if row.get("name") == name), {})

    def agents(self) -> dict[str, dict[str, str]]:
        return {row["name"]: row for row in parse_table(self.cc("agent list"))}

    def tiers(self, domain: str | None = None) -> dict[tuple[str, str], dict[str, str]]:
        """(queue, agent) -> the tier's row; only the domain's when given."""
        rows = parse_table(self.cc("tier list"))
        return {(r["queue"], r["agent"]): r for r in rows
                if domain is None or r["queue"].endswith("@" + domain) or r["agent"].endswith("@" + domain)}

    def queues(self) -> dict[str, dict[str, str]]:
        return {row["name"]: row for row in parse_table(self.cc("queue list"))}

    def members(self, queue: str) -> list[dict[str, str]]:
        return parse_table(self.cc(f"queue list members {queue}"))

    def channels(self) -> list[dict[str, str]]:
        with self.real.esl() as esl:
            return esl.json("show channels as json")["rows"]

    def calls(self) -> list[dict[str, str]]:
        """`show calls`: one row per call, the bridged leg in `b_uuid`."""
        with self.real.esl() as esl:
            return esl.json("show calls as json")["rows"]


# --- what a phone received ---------------------------------------------------------------------------

_STAMP = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)\s*\n(UDP message received|UDP message sent)"
                    r"[^\n]*\n\n([^\n]*)", re.M)


@dataclass
class SipMessage:
    at: float  # epoch seconds (sipp's wall-clock stamp)
    received: bool
    first_line: str
    text: str


def sip_messages(run: SippRun) -> list[SipMessage]:
    """Every SIP message of a sipp run's trace, in order, with sipp's timestamp."""
    log = run.sip_log()
    found = list(_STAMP.finditer(log))
    messages = []
    for i, match in enumerate(found):
        stamp = dt.datetime.strptime(re.sub(r"\s+", " ", match.group(1)), "%Y-%m-%d %H:%M:%S.%f")
        end = found[i + 1].start() if i + 1 < len(found) else len(log)
        messages.append(SipMessage(stamp.timestamp(), match.group(2).endswith("received"), match.group(3),
                                   log[match.start(3):end]))
    return messages


def invites(run: SippRun) -> list[SipMessage]:
    """The INVITEs the phone received (not retransmissions: one per Call-ID)."""
    seen, result = set(), []
    for message in sip_messages(run):
        if message.received and message.first_line.startswith("INVITE "):
            call_id = re.search(r"^Call-ID:\s*(\S+)", message.text, re.M | re.I)
            key = call_id.group(1) if call_id else message.at
            if key not in seen:
                seen.add(key)
                result.append(message)
    return result


def first(run: SippRun, received: bool, start: str) -> SipMessage | None:
    return next((m for m in sip_messages(run) if m.received == received and m.first_line.startswith(start)), None)


# --- the floor ---------------------------------------------------------------------------------------

@dataclass
class Agent:
    user_id: int
    device_id: int
    sip: str
    name: str  # mod_callcenter's: <user_id>@<domain>
    phone: Phone


@dataclass
class Queue:
    id: int
    number: str
    name: str  # mod_callcenter's: <queue_id>@<domain>


class Floor:
    """Agents, queues and caller phones of one account, made through the API."""

    def __init__(self, real_switch, account: Account):
        self.real, self.account, self.http = real_switch, account, account.http
        self.switch = Switch(real_switch)
        self.domain = account.domain
        self.tag = secrets.token_hex(3)

    # -- building --------------------------------------------------------------------------------

    def device(self, sip: str, user_id: int | None = None, register: bool = True, **fields) -> tuple[dict, Phone]:
        device = self.http.post("/api/device", {"name": f"Desk {sip}", "sip_username": sip,
                                                "sip_password": PASSWORD, "user_id": user_id, **fields})
        phone = self.real.phone(self.account, sip, PASSWORD)
        if register:
            run = phone.register()
            assert run.ok, run.report() + self.real.failure_context()
        return device, phone

    def agent(self, sip: str, register: bool = True, **user_fields) -> Agent:
        username = f"agent-{sip}-{self.tag}"
        user = self.http.post("/api/user", {"name": f"Agent {sip}", "username": username,
                                            "password": USER_PASSWORD, "email": f"{username}@example.com",
                                            "is_agent": True, **user_fields})
        device, phone = self.device(sip, user["id"], register)
        return Agent(user["id"], device["id"], sip, f"{user['id']}@{self.domain}", phone)

    def queue(self, label: str, number: str, strategy: str = "longest-idle-agent", **fields) -> Queue:
        asked = time.time()
        queue = self.http.post("/api/cc_queue", {"name": f"{label} {self.tag}", "strategy": strategy,
                                                 "time_base_score": "system", **fields})
        self.http.post("/api/extension", {"number": number, "target_type": "queue", "target_id": queue["id"]})
        name = f"{queue['id']}@{self.domain}"
        eventually(self.switch.queues, lambda q: name in q, f"queue {name} loaded in mod_callcenter")
        # and the sync that loaded it is over, so what a test does next is judged after it (a change
        # made during a sync gets a sync of its own: test_healing.py::test_queue_created_while_a_sync_runs_is_loaded)
        eventually(lambda: (self.real.http.get("/api/status").get("sync") or {}).get("at") or 0,
                   lambda at: at >= asked, "the sync that loaded the queue finished")
        return Queue(queue["id"], number, name)

    def caller(self, sip: str) -> Phone:
        return self.device(sip)[1]

    def join(self, queue: Queue, *rows: list) -> None:
        """POST /api/cc_queue/{id}/users: add or update memberships `[user_id, mode, position, level, tg]`."""
        self.http.post(f"/api/cc_queue/{queue.id}/users", {"users": [list(r) for r in rows]})

    # -- agent control ---------------------------------------------------------------------------

    def agent_api(self, action: str, agent: Agent, **params) -> dict:
        return self.http.post(f"/api/cc_agent/{action}", {"user_id": agent.user_id, **params})

    def check_in(self, agent: Agent, tiers: list[Queue] = ()) -> dict[str, str]:
        """checkInDevice through the API; waits until mod_callcenter shows it (and the tiers)."""
        self.agent_api("checkInDevice", agent, device_id=agent.device_id)
        row = self.wait_agent(agent, lambda a: a.get("status") == "Available"
                              and rings(a, agent.sip, self.domain), "checked in")
        wanted = {(q.name, agent.name) for q in tiers}
        eventually(lambda: set(self.switch.tiers(self.domain)), lambda t: wanted <= t, "tiers after check-in")
        return row

    def wait_agent(self, agent: Agent, check: Callable[[dict], bool], what: str, timeout: float = 10) -> dict:
        return eventually(lambda: self.switch.agent(agent.name), check, f"{agent.name} {what}", timeout)

    def ready(self, agent: Agent) -> None:
        """Until mod_callcenter would offer it a call: Available, Waiting, ready_time reached."""
        self.wait_agent(agent, lambda a: a.get("status") == "Available" and a.get("state") == "Waiting"
                        and int(a.get("ready_time") or 0) <= time.time(), "ready for calls")

    def user(self, agent: Agent) -> dict:
        return self.http.get(f"/api/user/{agent.user_id}")

    # -- calls -----------------------------------------------------------------------------------

    def bridged(self, *sips: str) -> list[dict[str, str]]:
        """`show calls` rows bridging two legs whose names mention all of `sips` between them."""
        def match(row: dict[str, str]) -> bool:
            legs = " ".join(row.get(k) or "" for k in ("name", "b_name", "cid_num", "b_cid_num", "dest", "b_dest"))
            return bool(row.get("b_uuid")) and all(f"{sip}@" in legs or sip in legs.split() for sip in sips)
        return [row for row in self.switch.calls() if match(row)]

    def waiting(self, queue: Queue) -> int:
        return sum(1 for m in self.switch.members(queue.name) if m.get("state") in ("Waiting", "Trying"))
