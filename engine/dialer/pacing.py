"""How many calls to start now: progressive (one per free agent) and predictive (dialling ahead).

Pure functions over what the runner measured, so the pacing can be reasoned
about and tested without a switch.

Predictive places lines one by one while the next line's chance of being
abandoned (answered, and no agent within ABANDON_AFTER seconds) stays under
`tail(z)`. That chance is summed over each second s of the ring-time
distribution of answered calls (the window's, not its mean): the line answers
in that second with `answer_rate * P(ring in (s-1, s])`, and is then abandoned
if the agents free by s + grace are fewer than the other answers by s plus one
(normal approximation, each agent and each call a 0/1 chance):

* agents free by t: the free ones; those in wrap-up whose wrap-up ends by t
  (known to the second); for the campaign's own calls with an agent,
  P(H <= e + t | H > e) from the handle times (talk and wrap-up) of the window
  given how long each call has lasted; other busy agents (inbound calls)
  `1 - exp(-t/handle)` each; an agent being offered one of our waiting leads
  has just begun a call (and that lead needs no other agent). `grace`: the
  abandon rule allows ABANDON_AFTER seconds from the answer to the agent, less
  the time agents take to pick up an offer (measured), so an agent freeing
  just after the answer still takes the lead in time.
* answers by s: the leads waiting; each call still ringing with P(answered
  within s more | rang a so far, not answered) from the window's ring times;
  each other new line `answer_rate * P(ring <= s)`.

z is steered by a PI loop on the abandon verdicts (Predictive.adapt) so the
rate settles under the cap; far over the cap the pacing dials like progressive
until it recovers. With fewer than `MIN_SAMPLES` finished calls in the window
there is nothing to predict from, and predictive dials like progressive.
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass

ABANDON_AFTER = 2.0  # seconds: an answered lead with no agent by then is abandoned (the figure the cap is on)
MIN_SAMPLES = 30  # finished attempts in the window before predicting
MIN_ANSWERED = 10
MIN_HANDLES = 20  # handle times before the conditional estimate of who frees up
MIN_TAIL = 5
Z_START, Z_MIN, Z_MAX = 2.0, 1.0, 3.5  # the next line's abandon chance is kept under P(N(0,1) > z)
MAX_HORIZON = 300  # seconds: the longest ring time of an answer the pacing looks at
PRIOR = 30  # calls at the cap the abandon rate is smoothed with
MEMORY = 200.0  # verdicts the proportional part's abandon rate remembers (exponential weight)
TARGET = 0.8  # of the cap: the abandon rate the loop settles at (the rolling window's rate scatters around it)
KI = 0.006  # integral gain: standard deviations per verdict per cap of error
KP = 0.5  # proportional gain: standard deviations per cap of distance between the smoothed rate and the target


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
        # answered calls, when it is known whether an agent took them within ABANDON_AFTER: (when, abandoned)
        self.verdicts: deque[tuple[float, bool]] = deque()
        self.agent_rings: deque[tuple[float, float]] = deque()  # (when, seconds from the offer to the bridge)
        self._sorted: dict[str, list[float]] = {}  # sorted ring and handle times, until the window changes

    def dialled(self, at: float, answered: bool, ring: float | None = None) -> None:
        self.dials.append((at, answered, ring))
        self._sorted.clear()

    def ended(self, at: float, abandoned: bool, handle: float | None) -> None:
        self.ends.append((at, abandoned, handle))
        self._sorted.clear()

    def verdict(self, at: float, abandoned: bool) -> None:
        """An answered call was taken by an agent within ABANDON_AFTER seconds of its answer, or not
        (`abandoned`: no agent by then, whether it hung up or was taken later)."""
        self.verdicts.append((at, abandoned))

    def agent_rang(self, at: float, seconds: float) -> None:
        self.agent_rings.append((at, seconds))

    def grace(self, after: float) -> float:
        """Seconds after an answer by which an agent must be free for the lead to be taken within `after`:
        `after` less the time agents take to pick up an offer (the slowest tenth of the window's)."""
        rings = sorted(r for _, r in self.agent_rings)
        if len(rings) < MIN_ANSWERED:
            return 0.0
        return max(0.0, after - rings[min(len(rings) - 1, int(0.9 * len(rings)))])

    def trim(self, now: float) -> None:
        for queue in (self.dials, self.ends, self.verdicts, self.agent_rings):
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

    def horizons(self) -> range:
        """Whole seconds up to the longest ring time of the window's answered calls."""
        rings = self._times("answered")
        return range(1, min(MAX_HORIZON, math.ceil(rings[-1]) if rings else 0) + 1)

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
        decided = len(self.verdicts)
        abandoned = sum(1 for _, a in self.verdicts if a)
        handles = self.handles
        return {
            "dialled": total,
            "answered": answered,
            "abandoned": abandoned,
            "ended": ended,
            "decided": decided,
            "answer_rate": answered / total if total else None,
            "abandon_rate": abandoned / decided if decided else 0.0,
            "ring": sum(rings) / len(rings) if rings else None,
            "handle": sum(handles) / len(handles) if handles else None,
        }


def progressive(floor: Floor) -> int:
    """One call per free agent: the free agents less the calls that will want one."""
    return max(0, floor.free - floor.ringing - (floor.waiting - floor.offered))


class Predictive:
    """The predictive pacer of one campaign: its margin (`z`) is steered by the abandon rate (a PI loop)."""

    def __init__(self, cap: float = 3.0, max_ratio: float = 3.0) -> None:
        self.cap = cap / 100.0  # percent -> fraction
        self.max_ratio = max_ratio
        self.z = self.base = Z_START  # base: the loop's integral part
        self.seen = self.lost = 0.0  # verdicts, and abandons among them, exponentially weighted
        self.fallback = True  # too little data: progressive
        self.grace = 0.0  # seconds after an answer an agent freeing still takes the lead in time

    def adapt(self, summary: dict, abandoned: bool = False) -> None:
        """Called with each answered call's verdict (`abandoned`: no agent within ABANDON_AFTER seconds of
        its answer): steer the margin so that the abandon rate settles at TARGET of the cap.

        A PI loop on the margin: the integral part moves by KI per verdict, up by (1 - target) for an
        abandon, down by target for a call taken in time, so it stands still exactly when abandons run at
        the target rate, whatever the floor; the proportional part adds KP per cap of distance between an
        exponentially weighted rate of the last ~MEMORY verdicts (smoothed towards the cap as if PRIOR calls
        at the cap had been seen, so two early abandons do not throw it) and the target. The window's own
        rate still guards the cap (lines(): far over it, no dialling ahead)."""
        decay = 1.0 - 1.0 / MEMORY
        self.seen = self.seen * decay + 1.0
        self.lost = self.lost * decay + (1.0 if abandoned else 0.0)
        if self.fallback or summary["ended"] < MIN_ANSWERED:
            return
        target = TARGET * self.cap
        self.base = min(Z_MAX, max(Z_MIN, self.base + KI * ((1.0 if abandoned else 0.0) - target) / self.cap))
        rate = (self.lost + self.cap * PRIOR) / (self.seen + PRIOR)
        self.z = min(Z_MAX, max(Z_MIN, self.base + KP * (rate - target) / self.cap))

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
        if (summary["abandon_rate"] or 0.0) > self.cap * 3 and summary.get("decided", 0) >= MIN_SAMPLES:
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
        grace = self.grace
        horizons = []  # (answers of a new line in this second, its cumulative f, margin, variance)
        before = 0.0
        for s in stats.horizons():
            cdf = stats.ring_cdf(s)
            if cdf <= before:
                continue
            t = s + grace
            other = 1.0 - math.exp(-t / mean)
            free = floor.free + sum(1 for w in floor.wrapping if w <= t) + others * other
            var = others * other * (1 - other)
            ending, ending_var = stats.freeing(elapsed, t, mean)
            coming, coming_var = stats.answering(ages, s)
            horizons.append((cdf - before, answer_rate * cdf, free + ending - coming - waiting,
                             var + ending_var + coming_var))
            before = cdf
        limit = _tail(self.z)
        n = 0
        while n < wanted:
            # the chance that line n+1, once answered, finds no agent free in time: at each second of
            # its ring time, the agents free by then less the other answers by then is under one
            risk = 0.0
            for mass, f, margin, var in horizons:
                mu = margin - n * f
                sd = math.sqrt(max(var + n * f * (1 - f), 1e-9))
                risk += mass * _tail((mu - 0.5) / sd)
            if risk > limit:
                break
            n += 1
        wanted = n
        # never fewer than progressive would dial: a free agent always gets a line
        return max(progressive(floor), int(wanted))


def _tail(x: float) -> float:
    """P(N(0,1) > x)."""
    return 0.5 * math.erfc(x / math.sqrt(2.0))
