"""A call-center floor on the emulator for the dialer: leads that answer at a given rate and talk for a random
time, agents that pick up queue calls, and mod_callcenter's queue (callcenter.py) in between.

``originate ... &callcenter(<queue>)`` to a lead (``sofia/gateway/<gw>/<number>``, or ``user/<n>@<domain>``
when no phone of that name is registered) rings for a while, then answers (with probability
``answer_rate``), is busy, or rings until ``originate_timeout``. An answered lead joins the queue in the
emulator's mod_callcenter; a dispatch pass offers it to a free agent, whose phone answers after
``agent_answer`` seconds; the two talk for ``talk`` seconds, then the lead hangs up. A lead nobody takes
hangs up after its ``patience``. Everything goes out as the real module's events (the member leg's
CHANNEL_ANSWER / CHANNEL_HANGUP_COMPLETE, callcenter::info), so switchdesk's plugins follow it as on a real
switch.

Time may be compressed: with ``scale`` N, the floor's clock (``now``) runs N times faster than the wall
clock, durations below are in floor seconds, and the emulator's mod_callcenter runs on the floor clock. The
dialer must be given the same clock (engine.dialer.runner.clock).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import gevent

from .calls import Originate, Phone


@dataclass
class LeadBehaviour:
    answer_rate: float = 0.3
    busy_rate: float = 0.05
    ring: tuple[float, float] = (3.0, 15.0)  # seconds before answering
    talk: tuple[float, float] = (60.0, 240.0)
    patience: tuple[float, float] = (5.0, 30.0)  # an answered lead waits this long for an agent


@dataclass
class FloorStats:
    answered: int = 0
    abandoned: int = 0  # answered, gave up waiting after more than 2 s with no agent
    short: int = 0
    talk: float = 0.0  # agent talk seconds (floor clock)
    waits: list[float] = field(default_factory=list)


class DialerFloor:
    """Leads and agents around the emulator's mod_callcenter; one per FakeSwitch."""

    def __init__(self, fs: Any, behaviour: LeadBehaviour | None = None, *, scale: float = 1.0, seed: int = 7,
                 agent_answer: float = 1.0) -> None:
        self.fs = fs
        self.cc = fs.callcenter
        self.behaviour = behaviour or LeadBehaviour()
        self.scale = scale
        self.rng = random.Random(seed)
        self.agent_answer = agent_answer
        self.t0 = time.time()
        self.stats: dict[str, FloorStats] = {}
        self.talking: dict[str, float] = {}  # member uuid -> talk seconds wanted
        self.forced: dict[str, str] = {}  # number -> "answer" | "busy" | "silent"
        self._busy_agents: set[str] = set()
        self.cc._now = self.now
        fs.calls.lead = self.place
        fs.calls.on_app = self.on_app
        fs.calls.time_scale = scale
        self._loop = gevent.spawn(self._dispatch_loop)

    def now(self) -> float:
        return self.t0 + (time.time() - self.t0) * self.scale

    def sleep(self, seconds: float) -> None:
        gevent.sleep(max(0.0, seconds / self.scale))

    def stop(self) -> None:
        self._loop.kill()

    # -- leads --

    def place(self, number: str) -> Phone:
        """How the lead at `number` behaves on this call."""
        b = self.behaviour
        forced = self.forced.get(number)
        roll = self.rng.random()
        phone = Phone(number, "lead")
        if forced == "busy" or (forced is None and roll < b.busy_rate):
            phone.busy = True
        elif forced == "answer" or (forced is None and roll < b.busy_rate + b.answer_rate):
            phone.answer_after = self.rng.uniform(*b.ring) / self.scale
        else:
            phone.answer_after = None
        return phone

    def on_app(self, call: Originate, name: str, data: str) -> bool:
        """The answered leg runs its application: `callcenter` joins the queue; others are not ours."""
        if name != "callcenter" or self.cc is None:
            return False
        gevent.spawn(self._member, call, data.strip("'"))
        return True

    def _push(self, start: int) -> None:
        fired = self.cc.fired
        for ev in fired[start:]:
            self.fs._push_model_event(ev)
        del fired[:]

    def _member(self, call: Originate, queue: str) -> None:
        stats = self.stats.setdefault(queue, FloorStats())
        stats.answered += 1
        headers = [("Unique-ID", call.uuid), ("Caller-Unique-ID", call.uuid), ("Channel-Call-UUID", call.uuid),
                   ("Call-Direction", "outbound"), ("Caller-Caller-ID-Number", call.exten_number),
                   ("Caller-Destination-Number", call.exten_number)]
        headers += [(f"variable_{k}", v) for k, v in call.variables.items()]
        start = len(self.cc.fired)
        m = self.cc.member_join(queue, call.uuid, headers)
        self._push(start)
        if m is None:
            return
        joined = self.now()
        patience = self.rng.uniform(*self.behaviour.patience)
        self.talking[m.uuid] = self.rng.uniform(*self.behaviour.talk)
        while m.state != "Answered" and self.now() - joined < patience:
            self.sleep(0.2)
            if m.state == "Answered" or m not in self.cc.members:
                break
        if m.state != "Answered" and m in self.cc.members and not m.agent_found:
            start = len(self.cc.fired)
            self.cc.member_abandon(m)
            self._push(start)
            self.fs.calls.live.pop(call.uuid, None)
            waited = self.now() - joined
            if waited > 2.0:
                stats.abandoned += 1
            else:
                stats.short += 1
            return
        stats.waits.append(self.now() - joined)

    # -- agents --

    def _dispatch_loop(self) -> None:
        while True:
            gevent.sleep(0.01)
            if not self.cc.members:
                continue
            start = len(self.cc.fired)
            self.cc.tick()
            offers = [o for o in self.cc.offers if not o.done and not o.bridged and not o.t_agent_answered
                      and o.agent_name not in self._busy_agents]
            self._push(start)
            for offer in offers:
                self._busy_agents.add(offer.agent_name)
                gevent.spawn(self._agent_takes, offer)

    def _agent_takes(self, offer: Any) -> None:
        try:
            self.sleep(self.agent_answer)
            m = self.cc.member(offer.member_uuid)
            if m is None or offer.done:
                return
            start = len(self.cc.fired)
            try:
                self.cc.agent_answered(m, offer.agent_name)
            except KeyError:
                self._push(start)
                return
            self._push(start)
            talk = self.talking.pop(m.uuid, 60.0)
            began = self.now()
            self.sleep(talk)
            start = len(self.cc.fired)
            self.cc.bridge_end(m)
            self._push(start)
            self.fs.calls.live.pop(m.session_uuid, None)
            stats = self.stats.setdefault(offer.queue, FloorStats())
            stats.talk += self.now() - began
        finally:
            self._busy_agents.discard(offer.agent_name)
