"""How many calls to start now: progressive (one per free agent) and predictive (dialling ahead).

Pure functions over what the runner measured, so the pacing can be reasoned
about and tested without a switch.

Predictive: of the calls placed, a fraction `answer_rate` is answered after
`ring` seconds on average; an answered lead needs an agent within the abandon
threshold. The agents that will be free when the calls placed now are answered
are the free ones plus the busy ones whose call (talk and wrap-up) ends within
`ring` seconds. For the campaign's own calls with an agent that is read from the
handle times of the window given how long each call has lasted already
(P(H <= e + ring | H > e)); other busy agents (inbound calls) count
`1 - exp(-ring/handle)` each. Lines to have in flight = agents expected
free / answer rate, less what is already ringing or waiting. A gain multiplies
the expected supply: it shrinks when the abandon rate of the rolling window
nears the cap and grows slowly while it stays well under. With fewer than
`MIN_SAMPLES` finished calls in the window there is nothing to predict from,
and predictive dials like progressive.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

MIN_SAMPLES = 30  # finished attempts in the window before predicting
MIN_ANSWERED = 10
MIN_HANDLES = 20  # handle times before the conditional estimate of who frees up
MIN_TAIL = 5
GAIN_MIN, GAIN_MAX = 0.5, 1.5


@dataclass
class Floor:
    """The queue's agents now, and the campaign's calls not yet with an agent."""

    free: int  # checked in, available, waiting, not paused, not in wrap-up
    busy: int  # ringing or talking (mod_callcenter's Receiving / In a queue call)
    ringing: int  # our calls not answered yet
    waiting: int  # our calls answered, in the queue, no agent yet


class Stats:
    """The rolling window the predictive pacing learns from.

    A dial counts for the answer rate when its ringing is decided: at the answer (answered) or at its end
    (not answered). Counting at the end only would under-count answers early in the day (answered calls are
    still talking while the failed ones have ended) and overdial. Handle times and abandons count when an
    answered call ends."""

    def __init__(self, window: float = 900.0) -> None:
        self.window = window
        # (when, answered, seconds it rang: to the answer, or to the failure)
        self.dials: deque[tuple[float, bool, float | None]] = deque()
        self.ends: deque[tuple[float, bool, float | None]] = deque()  # answered calls: (when, abandoned, handle)

    def dialled(self, at: float, answered: bool, ring: float | None = None) -> None:
        self.dials.append((at, answered, ring))

    def ended(self, at: float, abandoned: bool, handle: float | None) -> None:
        self.ends.append((at, abandoned, handle))

    def trim(self, now: float) -> None:
        for queue in (self.dials, self.ends):
            while queue and queue[0][0] < now - self.window:
                queue.popleft()

    def answering(self, ages: list[float]) -> float:
        """Expected answers among calls still ringing after `ages` seconds: a call that has rung longer than
        most answered calls do is unlikely to be answered (P(answer | rang a) from the window)."""
        rang = sorted(r for _, _, r in self.dials if r is not None)
        answered = sorted(r for _, a, r in self.dials if a and r is not None)
        if len(answered) < MIN_ANSWERED or not rang:
            total = len(self.dials)
            rate = sum(1 for _, a, _ in self.dials if a) / total if total else 0.0
            return rate * len(ages)
        expected = 0.0
        for age in ages:
            still = len(rang) - bisect.bisect_right(rang, age)
            if still <= 0:
                continue
            expected += (len(answered) - bisect.bisect_right(answered, age)) / still
        return expected

    @property
    def handles(self) -> list[float]:
        return [h for _, _, h in self.ends if h is not None]

    def freeing(self, elapsed: list[float], horizon: float) -> float:
        """Expected number of the calls that have lasted `elapsed` seconds that end within `horizon`.

        From the window's handle times given the time already spent; where fewer than MIN_TAIL calls of
        the window lasted that long (early in the day only the short calls have ended: a survivor bias),
        the exponential estimate with the window's mean is used instead."""
        handles = sorted(self.handles)
        n = len(handles)
        if n < MIN_HANDLES:
            return len(elapsed) * (1.0 - math.exp(-horizon / (sum(handles) / n))) if n else 0.0
        mean = sum(handles) / n
        tail = 1.0 - math.exp(-horizon / mean)
        total = 0.0
        for e in elapsed:
            longer = n - bisect.bisect_right(handles, e)
            if longer < MIN_TAIL:
                total += tail
                continue
            ending = bisect.bisect_right(handles, e + horizon) - bisect.bisect_right(handles, e)
            total += ending / longer
        return total

    def summary(self, now: float) -> dict[str, float | int | None]:
        self.trim(now)
        total = len(self.dials)
        rings = [r for _, answered, r in self.dials if answered and r is not None]
        answered = sum(1 for _, a, _ in self.dials if a)
        ended = len(self.ends)
        abandoned = sum(1 for _, a, _ in self.ends if a)
        handles = self.handles
        return {
            "dialled": total,
            "answered": answered,
            "abandoned": abandoned,
            "ended": ended,
            "answer_rate": answered / total if total else None,
            "abandon_rate": abandoned / ended if ended else 0.0,
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
        elif rate > 0.6 * self.cap:
            self.gain = max(GAIN_MIN, self.gain * 0.97)
        elif rate < 0.3 * self.cap and summary["ended"] >= MIN_ANSWERED:
            self.gain = min(GAIN_MAX, self.gain * 1.005)

    def lines(self, floor: Floor, summary: dict, stats: Stats | None = None,
              elapsed: list[float] | None = None, ages: list[float] | None = None) -> int:
        """Calls to start now. `elapsed`: how long each of the campaign's calls with an agent has lasted;
        `ages`: how long each of its calls still ringing has rung."""
        answer_rate, ring, handle = summary["answer_rate"], summary["ring"], summary["handle"]
        if (summary["dialled"] < MIN_SAMPLES or summary["answered"] < MIN_ANSWERED or not answer_rate
                or ring is None or not handle):
            self.fallback = True
            return progressive(floor)
        self.fallback = False
        if (summary["abandon_rate"] or 0.0) > self.cap * 3 and summary["ended"] >= MIN_SAMPLES:
            return progressive(floor)  # far over the cap: stop dialling ahead until it recovers
        elapsed = elapsed or []
        others = max(0, floor.busy - len(elapsed))
        freeing = others * (1.0 - math.exp(-ring / handle))
        if stats is not None and elapsed:
            freeing += stats.freeing(elapsed[:floor.busy], ring)
        supply = (floor.free + freeing) * self.gain - floor.waiting
        if supply <= 0:
            return 0
        coming = stats.answering(ages) if stats is not None and ages is not None else answer_rate * floor.ringing
        wanted = max(0.0, supply - coming) / max(answer_rate, 0.02)
        agents = floor.free + floor.busy
        room = self.max_ratio * max(agents, 1) - floor.ringing
        return max(0, int(min(wanted, room)))
