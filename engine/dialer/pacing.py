"""How many calls to start now: progressive (one per free agent) and predictive (dialling ahead).

Pure functions over what the runner measured, so the pacing can be reasoned
about and tested without a switch.

Predictive: for each horizon s of the next GRID seconds it compares the agents
expected free by then with the answers expected by then, and places the
largest number of lines whose answers stay Z standard deviations inside the
agents at every horizon (the tightest horizon decides):

* agents free by s: the free ones; those in wrap-up whose wrap-up ends by s;
  for the campaign's own calls with an agent, P(H <= e + s | H > e) from the
  handle times (talk and wrap-up) of the window given how long each call has
  lasted; other busy agents (inbound calls) `1 - exp(-s/handle)` each; an
  agent being offered one of our waiting leads has just begun a call (and that
  lead needs no other agent). Each agent is a 0/1 chance: the variance is the
  sum of q(1-q).
* answers by s: the leads waiting; each call still ringing with P(answered
  within s more | rang a so far, not answered) from the window's ring times;
  each new line `answer_rate * P(ring <= s)` (the window's ring times of
  answered calls: a distribution, not a mean, so agents freeing in 3 s are not
  counted against answers that cannot come before 5 s).

Z is steered by the abandon rate of the rolling window (smoothed): it grows
when the rate nears the cap and shrinks slowly while it stays well under;
far over the cap the pacing dials like progressive until it recovers. With
fewer than `MIN_SAMPLES` finished calls in the window there is nothing to
predict from, and predictive dials like progressive.
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
Z_START, Z_MIN, Z_MAX = 1.5, 0.5, 3.0  # standard deviations of answers kept inside the agents
GRID = tuple(float(s) for s in range(2, 31, 2))  # horizons (seconds) the supply and the answers are compared at
PRIOR = 30  # calls at the cap the abandon rate is smoothed with
MEMORY = 500.0  # answered calls the abandon rate that steers the margin remembers (exponential weight)
STEP = 0.005  # standard deviation the margin moves by per answered call


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
        self._sorted: dict[str, list[float]] = {}  # sorted ring and handle times, until the window changes

    def dialled(self, at: float, answered: bool, ring: float | None = None) -> None:
        self.dials.append((at, answered, ring))
        self._sorted.clear()

    def ended(self, at: float, abandoned: bool, handle: float | None) -> None:
        self.ends.append((at, abandoned, handle))
        self._sorted.clear()

    def trim(self, now: float) -> None:
        for queue in (self.dials, self.ends):
            while queue and queue[0][0] < now - self.window:
                queue.popleft()
                self._sorted.clear()

    def _times(self, kind: str) -> list[float]:
        """Sorted ring times (`rang`: every decided call; `answered`: answered ones) or handle times, kept
        until the window changes: the pacing reads them for every horizon of every pass."""
        cached = self._sorted.get(kind)
        if cached is None:
            if kind == "rang":
                cached = sorted(r for _, _, r in self.dials if r is not None)
            elif kind == "answered":
                cached = sorted(r for _, a, r in self.dials if a and r is not None)
            else:
                cached = sorted(h for _, _, h in self.ends if h is not None)
            self._sorted[kind] = cached
        return cached

    def answering(self, ages: list[float], within: float = math.inf) -> tuple[float, float]:
        """Expected answers (and their variance) within `within` more seconds among calls still ringing
        after `ages` seconds: a call that has rung longer than most answered calls do is unlikely to be
        answered (P(answered by a + s | rang a) from the window)."""
        rang, answered = self._times("rang"), self._times("answered")
        if len(answered) < MIN_ANSWERED or not rang:
            total = len(self.dials)
            rate = sum(1 for _, a, _ in self.dials if a) / total if total else 0.0
            return rate * len(ages), rate * (1 - rate) * len(ages)
        mean = var = 0.0
        for age in ages:
            still = len(rang) - bisect.bisect_right(rang, age)
            if still <= 0:
                continue
            q = (bisect.bisect_right(answered, age + within) - bisect.bisect_right(answered, age)) / still
            mean += q
            var += q * (1 - q)
        return mean, var

    def ring_cdf(self, s: float) -> float:
        """P(an answered call rang at most `s` seconds), from the window."""
        rings = self._times("answered")
        return bisect.bisect_right(rings, s) / len(rings) if rings else 0.0

    @property
    def handles(self) -> list[float]:
        return [h for _, _, h in self.ends if h is not None]

    def freeing(self, elapsed: list[float], horizon: float, mean: float) -> tuple[float, float]:
        """Expected number (and variance) of the calls that have lasted `elapsed` seconds that end within
        `horizon`.

        From the window's handle times given the time already spent; where fewer than MIN_TAIL calls of
        the window lasted that long (early in the day only the short calls have ended: a survivor bias),
        the exponential estimate with `mean` is used instead."""
        handles = self._times("handles")
        n = len(handles)
        tail = 1.0 - math.exp(-horizon / mean)
        if n < MIN_HANDLES:
            return len(elapsed) * tail, len(elapsed) * tail * (1 - tail)
        total = var = 0.0
        for e in elapsed:
            longer = n - bisect.bisect_right(handles, e)
            if longer < MIN_TAIL:
                q = tail
            else:
                q = (bisect.bisect_right(handles, e + horizon) - bisect.bisect_right(handles, e)) / longer
            total += q
            var += q * (1 - q)
        return total, var

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
    """The predictive pacer of one campaign: its margin (`z`) adapts to the abandon rate of the window."""

    def __init__(self, cap: float = 3.0, max_ratio: float = 3.0) -> None:
        self.cap = cap / 100.0  # percent -> fraction
        self.max_ratio = max_ratio
        self.z = Z_START
        self.seen = self.lost = 0.0  # answered calls ended, and those abandoned, exponentially weighted
        self.fallback = True  # too little data: progressive

    def adapt(self, summary: dict, abandoned: bool = False) -> None:
        """Called when an answered call ends (`abandoned`: it was): steer the margin by the abandon rate.

        The rate that steers is not the rolling window's: 3% of the ~100 answered calls of a 15-minute
        window is three abandons, give or take two, and a pacing steered by that swings between too careful
        and too bold. It is an exponentially weighted rate over the last ~MEMORY answered calls, smoothed
        towards the cap (as if PRIOR calls at the cap had been seen) so two abandons among the first twenty
        calls do not throw the pacing back to the floor. The margin moves by STEP standard deviation per
        answered call: up over 85% of the cap, down under 70% of it. The window's own rate still guards the
        cap (lines(): far over it, no dialling ahead)."""
        decay = 1.0 - 1.0 / MEMORY
        self.seen = self.seen * decay + 1.0
        self.lost = self.lost * decay + (1.0 if abandoned else 0.0)
        if self.fallback or summary["ended"] < MIN_ANSWERED:
            return
        rate = (self.lost + self.cap * PRIOR) / (self.seen + PRIOR)
        if rate > 0.85 * self.cap:
            self.z = min(Z_MAX, self.z + STEP)
        elif rate < 0.7 * self.cap:
            self.z = max(Z_MIN, self.z - STEP)

    def lines(self, floor: Floor, summary: dict, stats: Stats | None = None,
              elapsed: list[float] | None = None, ages: list[float] | None = None) -> int:
        """Calls to start now. `elapsed`: how long each of the campaign's calls with an agent has lasted;
        `ages`: how long each of its calls still ringing has rung."""
        answer_rate, ring, handle = summary["answer_rate"], summary["ring"], summary["handle"]
        if (stats is None or summary["dialled"] < MIN_SAMPLES or summary["answered"] < MIN_ANSWERED
                or not answer_rate or ring is None or not handle or summary["ended"] < MIN_HANDLES):
            self.fallback = True
            return progressive(floor)
        self.fallback = False
        if (summary["abandon_rate"] or 0.0) > self.cap * 3 and summary["ended"] >= MIN_SAMPLES:
            return progressive(floor)  # far over the cap: stop dialling ahead until it recovers
        elapsed = (elapsed or [])[:floor.busy]
        ages = ages if ages is not None else []
        # the mean handle time with the calls still up counted (censored): early in the day only the short
        # calls have ended, and their mean alone would free agents far too soon
        handles = stats.handles
        mean = (sum(handles) + sum(elapsed)) / len(handles) if handles else handle
        others = max(0, floor.busy - len(elapsed) - len(floor.wrapping) - floor.offered)
        waiting = max(0, floor.waiting - floor.offered)
        agents = floor.free + floor.busy
        wanted = max(0.0, self.max_ratio * max(agents, 1) - floor.ringing)
        for s in GRID:
            per_line = answer_rate * stats.ring_cdf(s)  # answers by s of one line placed now
            if per_line <= 0:
                continue
            other = 1.0 - math.exp(-s / mean)
            free = floor.free + sum(1 for w in floor.wrapping if w <= s) + others * other
            var = others * other * (1 - other)
            ending, ending_var = stats.freeing(elapsed, s, mean)
            coming, coming_var = stats.answering(ages, s)
            wanted = min(wanted, _lines(free + ending - coming - waiting, var + ending_var + coming_var,
                                        per_line, self.z))
        # never fewer than progressive would dial: a free agent always gets a line
        return max(progressive(floor), int(wanted))


def _lines(margin: float, var: float, f: float, z: float) -> float:
    """The largest n with margin - n*f >= z * sqrt(var + n*f*(1-f)): n lines, each answered by the horizon
    with probability f, keep their answers z standard deviations inside the agents' expected margin."""
    if margin < z * math.sqrt(var):
        return 0.0
    c = f * (1 - f)
    b = 2 * margin * f + z * z * c
    disc = b * b - 4 * f * f * (margin * margin - z * z * var)
    return (b - math.sqrt(max(0.0, disc))) / (2 * f * f)
