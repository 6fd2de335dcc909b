"""How many calls to start now: progressive (one per free agent) and predictive (dialling ahead).

Pure functions over what the runner measured, so the pacing can be reasoned
about and tested without a switch.

Predictive: of the calls placed, a fraction `answer_rate` is answered after
`ring` seconds on average; an answered lead needs an agent within the abandon
threshold. The agents that will be free when the calls placed now are answered
are the free ones plus the busy ones whose call (mean `handle` seconds, talk
and wrap-up) ends within `ring` seconds: about `busy * (1 - exp(-ring/handle))`
with exponential-ish handle times. Lines to have in flight = agents expected
free / answer rate, less what is already ringing or waiting. A gain multiplies
the expected supply: it shrinks when the abandon rate of the rolling window
nears the cap and grows slowly while it stays well under. With fewer than
`MIN_SAMPLES` finished calls in the window there is nothing to predict from,
and predictive dials like progressive.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

MIN_SAMPLES = 30  # finished attempts in the window before predicting
MIN_ANSWERED = 10
GAIN_MIN, GAIN_MAX = 0.5, 2.0


@dataclass
class Floor:
    """The queue's agents now, and the campaign's calls not yet with an agent."""

    free: int  # checked in, available, waiting, not paused, not in wrap-up
    busy: int  # ringing or talking (mod_callcenter's Receiving / In a queue call)
    ringing: int  # our calls not answered yet
    waiting: int  # our calls answered, in the queue, no agent yet


@dataclass
class Sample:
    """One finished attempt (times in seconds)."""

    end: float
    answered: bool
    abandoned: bool
    ring: float | None  # dial to answer, answered calls
    handle: float | None  # agent bridged to hang-up, plus wrap-up


class Stats:
    """The rolling window of finished attempts the predictive pacing learns from."""

    def __init__(self, window: float = 900.0) -> None:
        self.window = window
        self.samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def trim(self, now: float) -> None:
        while self.samples and self.samples[0].end < now - self.window:
            self.samples.popleft()

    def summary(self, now: float) -> dict[str, float | int | None]:
        self.trim(now)
        total = len(self.samples)
        answered = [s for s in self.samples if s.answered]
        abandoned = sum(1 for s in answered if s.abandoned)
        rings = [s.ring for s in answered if s.ring is not None]
        handles = [s.handle for s in answered if s.handle is not None]
        return {
            "dialled": total,
            "answered": len(answered),
            "abandoned": abandoned,
            "answer_rate": len(answered) / total if total else None,
            "abandon_rate": abandoned / len(answered) if answered else 0.0,
            "ring": sum(rings) / len(rings) if rings else None,
            "handle": sum(handles) / len(handles) if handles else None,
        }


def progressive(floor: Floor) -> int:
    """One call per free agent: the free agents less the calls that will want one."""
    return max(0, floor.free - floor.ringing - floor.waiting)


class Predictive:
    """The predictive pacer of one campaign: its gain adapts to the abandon rate of the window."""

    def __init__(self, cap: float = 3.0, max_ratio: float = 3.0) -> None:
        self.cap = cap / 100.0  # percent -> fraction
        self.max_ratio = max_ratio
        self.gain = 1.0
        self.fallback = True  # too little data: progressive

    def adapt(self, summary: dict) -> None:
        """Called once per finished attempt: steer the gain by the window's abandon rate."""
        rate = summary["abandon_rate"] or 0.0
        if summary["answered"] < MIN_ANSWERED:
            return
        if rate > self.cap:
            self.gain = max(GAIN_MIN, self.gain * 0.9)
        elif rate > 0.7 * self.cap:
            self.gain = max(GAIN_MIN, self.gain * 0.98)
        elif rate < 0.4 * self.cap:
            self.gain = min(GAIN_MAX, self.gain * 1.01)

    def lines(self, floor: Floor, summary: dict) -> int:
        """Calls to start now."""
        answer_rate, ring, handle = summary["answer_rate"], summary["ring"], summary["handle"]
        if (summary["dialled"] < MIN_SAMPLES or summary["answered"] < MIN_ANSWERED or not answer_rate
                or ring is None or not handle):
            self.fallback = True
            return progressive(floor)
        self.fallback = False
        if (summary["abandon_rate"] or 0.0) > self.cap * 1.5:
            return progressive(floor)  # far over the cap: stop dialling ahead until it recovers
        freeing = floor.busy * (1.0 - math.exp(-ring / handle))
        supply = (floor.free + freeing) * self.gain - floor.waiting
        if supply <= 0:
            return 0
        wanted = supply / max(answer_rate, 0.02)
        agents = floor.free + floor.busy
        wanted = min(wanted, self.max_ratio * max(agents, 1))
        return max(0, int(wanted) - floor.ringing)
