"""How many calls to start now: progressive (one per free agent) and predictive (dialling ahead).

Pure functions over what the runner measured, so the pacing can be reasoned
about and tested without a switch.

Predictive: of the calls placed, a fraction `answer_rate` is answered after
`ring` seconds on average; an answered lead needs an agent within the abandon
threshold. The agents that will be free when the calls placed now are answered
are the free ones plus the busy ones whose call (talk and wrap-up) ends within
`ring` seconds. For the campaign's own calls with an agent that is read from the
handle times of the window given how long each call has lasted already
(P(H <= e + ring | H > e)); an agent in wrap-up counts when its wrap-up
ends within `ring`; an agent being offered one of our waiting leads counts as
a call that has just begun (and that lead no longer needs an agent); other
busy agents (inbound calls) count `1 - exp(-ring/handle)` each. Lines to have in flight = agents expected
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
GAIN_MIN, GAIN_MAX = 0.3, 1.5
Z = 1.0  # standard deviations of answers kept in hand
PRIOR = 30  # calls at the cap the abandon rate is smoothed with


@dataclass
class Floor:
    """The queue's agents now, and the campaign's calls not yet with an agent."""

    free: int  # checked in, available, waiting, not paused, not in wrap-up
    busy: int  # ringing or talking (mod_callcenter's Receiving / In a queue call)
    ringing: int  # our calls not answered yet
    waiting: int  # our calls answered, in the queue, no agent yet
    offered: int = 0  # of `waiting`, those an agent is being offered (that agent is counted in `busy`)
    wrapping: tuple[float, ...] = ()  # of `busy`, agents in wrap-up: seconds each has left


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

    def freeing(self, elapsed: list[float], horizon: float, mean: float) -> float:
        """Expected number of the calls that have lasted `elapsed` seconds that end within `horizon`.

        From the window's handle times given the time already spent; where fewer than MIN_TAIL calls of
        the window lasted that long (early in the day only the short calls have ended: a survivor bias),
        the exponential estimate with `mean` is used instead."""
        handles = sorted(self.handles)
        n = len(handles)
        tail = 1.0 - math.exp(-horizon / mean)
        if n < MIN_HANDLES:
            return len(elapsed) * tail
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
    return max(0, floor.free - floor.ringing - (floor.waiting - floor.offered))


class Predictive:
    """The predictive pacer of one campaign: its gain adapts to the abandon rate of the window."""

    def __init__(self, cap: float = 3.0, max_ratio: float = 3.0) -> None:
        self.cap = cap / 100.0  # percent -> fraction
        self.max_ratio = max_ratio
        self.gain = 1.0
        self.fallback = True  # too little data: progressive

    def adapt(self, summary: dict) -> None:
        """Called when an answered call ends: steer the gain by the window's abandon rate.

        The rate is smoothed towards the cap (as if PRIOR calls at the cap had been seen), so two abandons
        among the first twenty calls do not throw the pacing back to the floor. The steps are small (1% down
        over 90% of the cap, 0.5% up under 70% of it, per answered call): abandons come in bursts (several
        leads answered at once), and larger steps threw the gain to its floor after each burst and took
        most of the window to recover (bench/RESULTS.md)."""
        if self.fallback or summary["ended"] < MIN_ANSWERED:
            return
        rate = ((summary["abandoned"] or 0) + self.cap * PRIOR) / (summary["ended"] + PRIOR)
        if rate > 0.9 * self.cap:
            self.gain = max(GAIN_MIN, self.gain * 0.99)
        elif rate < 0.7 * self.cap:
            self.gain = min(GAIN_MAX, self.gain * 1.005)

    def lines(self, floor: Floor, summary: dict, stats: Stats | None = None,
              elapsed: list[float] | None = None, ages: list[float] | None = None) -> int:
        """Calls to start now. `elapsed`: how long each of the campaign's calls with an agent has lasted;
        `ages`: how long each of its calls still ringing has rung."""
        answer_rate, ring, handle = summary["answer_rate"], summary["ring"], summary["handle"]
        if (summary["dialled"] < MIN_SAMPLES or summary["answered"] < MIN_ANSWERED or not answer_rate
                or ring is None or not handle or summary["ended"] < MIN_HANDLES):
            self.fallback = True
            return progressive(floor)
        self.fallback = False
        if (summary["abandon_rate"] or 0.0) > self.cap * 3 and summary["ended"] >= MIN_SAMPLES:
            return progressive(floor)  # far over the cap: stop dialling ahead until it recovers
        elapsed = elapsed or []
        # the mean handle time with the calls still up counted (censored): early in the day only the short
        # calls have ended, and their mean alone would free agents far too soon
        handles = stats.handles if stats is not None else []
        mean = (sum(handles) + sum(elapsed)) / len(handles) if handles else handle
        others = max(0, floor.busy - len(elapsed) - len(floor.wrapping) - floor.offered)
        freeing = others * (1.0 - math.exp(-ring / mean)) + sum(1 for w in floor.wrapping if w <= ring)
        if stats is not None and elapsed:
            freeing += stats.freeing(elapsed[:floor.busy], ring, mean)
        supply = (floor.free + freeing) * self.gain - (floor.waiting - floor.offered)
        if supply <= 0:
            return progressive(floor)
        coming = stats.answering(ages) if stats is not None and ages is not None else answer_rate * floor.ringing
        room_for = supply - coming  # answers the agents can take
        if room_for <= 0:
            return progressive(floor)
        # n lines bring n*p answers give or take sqrt(n*p*q): take the n whose answers stay within the
        # agents one standard deviation above the mean (n*p + Z*sqrt(n*p*q) = room_for), so a lucky streak of
        # answers does not leave leads waiting
        p = max(answer_rate, 0.02)
        spread = Z * math.sqrt(p * (1 - p))
        root = (-spread + math.sqrt(spread * spread + 4 * p * room_for)) / (2 * p)
        wanted = root * root
        agents = floor.free + floor.busy
        room = self.max_ratio * max(agents, 1) - floor.ringing
        # never fewer than progressive would dial: a free agent always gets a line
        return max(progressive(floor), int(min(wanted, room)))
