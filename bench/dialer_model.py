"""A discrete-event model of bench/dialer.py's floor, to weigh pacing changes in seconds instead of minutes.

bench/dialer.py runs the real engine on the emulator for a 2-hour shift (6 minutes at 20x) and can be run a
few times a day on a shared machine; this model runs the same floor in virtual time with the same pacing
code (engine.dialer.pacing) and the same counting as the runner (free / busy / wrap-up / offered, ringing and
waiting calls, the window's statistics), so a change can be tried on several seeds first. Its figures agree
with the bench's within about a point of utilisation (bench/RESULTS.md). The floor is the bench's: 20 agents,
leads busy 5%, answering 30% after 5-20 s, else ringing out at 25 s, talking 60-300 s, hanging up after
5-30 s without an agent; agents answer an offer in 1 s (MODEL_AGENT_ANSWER), wrap-up 5 s (mod_callcenter's
integer seconds); the pacing runs every 0.4 s (the bench's 20 ms at 20x). Abandoned is the issue's: answered,
and no agent within 2 s of the answer (`abandon_rate`); `hung_up_rate` counts only those that hung up.
Unlike the bench, the model has no lag: a 2 s rule can be judged in it.

    python bench/dialer_model.py [seeds]                   # both modes, adaptive margin
    python bench/dialer_model.py [seeds] 1.0,1.5,2         # predictive with the margin z fixed at each value
    python bench/dialer_model.py [seeds] 2,2.5,3 oracle    # a bound: the same rule knowing when every agent
                                                           # will be free (each call's end), not the leads

Prints one JSON line per run set: utilisation and abandon rates per seed and their means.
"""
from __future__ import annotations

import heapq
import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.dialer import pacing

AGENTS, DAY, WRAP, TICK, ABANDON_AFTER = 20, 7200.0, 5, 0.4, 2.0
AGENT_ANSWER = float(os.environ.get("MODEL_AGENT_ANSWER", "1.0"))
ORACLE_GRACE = ABANDON_AFTER - AGENT_ANSWER
# MODEL_ABANDON=hung_up: steer by the narrower count (only leads that hang up with no agent after more than 2 s;
# DESIGN.md's wording), with the pacing's grace set to GRACE_HUNG_UP s (the leads' shortest patience here is
# 5 s): to weigh that reading of the abandon rule against the issue's
HUNG_UP = os.environ.get("MODEL_ABANDON") == "hung_up"
GRACE_HUNG_UP = float(os.environ.get("MODEL_GRACE", "4"))


def run(mode: str, seed: int = 1, fixed_z: float | None = None) -> tuple[float, float, float]:
    """One shift; returns (talk-time utilisation, abandoned per answered: no agent within 2 s of the answer,
    hung up with no agent after more than 2 s per answered)."""
    rng = random.Random(seed)
    events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
    seq = [0]

    def at(when: float, fn: Callable[..., None], *args: Any) -> None:
        seq[0] += 1
        heapq.heappush(events, (when, seq[0], fn, args))

    agents = [{"state": "Waiting", "end": -100} for _ in range(AGENTS)]
    queue: list[dict] = []
    live: dict[int, dict] = {}
    stats = pacing.Stats(900)
    pacer = pacing.Predictive(3.0, 3.0)
    if fixed_z is not None:
        pacer.z = fixed_z
        pacer.adapt = lambda summary, abandoned=False: None  # type: ignore[method-assign]
    out = {"talk": 0.0, "answered": 0, "abandoned": 0, "late": 0}
    ids = [0]

    def finish(now: float, cid: int, outcome: str) -> None:
        c = live.pop(cid)
        if c["answered"] is None:
            stats.dialled(now, False, now - c["started"])
        else:
            stats.ended(now, outcome == "abandoned", (now - c["agent"] + WRAP) if c["agent"] is not None else None)

    def verdict(now: float, abandoned: bool) -> None:
        stats.verdict(now, abandoned)
        pacer.adapt(stats.summary(now), abandoned)

    def dial(now: float) -> None:
        ids[0] += 1
        cid = ids[0]
        live[cid] = {"started": now, "answered": None, "agent": None, "offered": False}
        roll = rng.random()
        if roll < 0.05:
            at(now + 0.05, finish, cid, "busy")
        elif roll < 0.35:
            at(now + rng.uniform(5, 20), answer, cid)
        else:
            at(now + 25, finish, cid, "no_answer")

    def answer(now: float, cid: int) -> None:
        c = live[cid]
        c["answered"] = now
        stats.dialled(now, True, now - c["started"])
        out["answered"] += 1
        member = {"cid": cid, "joined": now, "found": False}
        queue.append(member)
        at(now + rng.uniform(5, 30), give_up, member)
        dispatch(now)

    def give_up(now: float, member: dict) -> None:
        if member["found"]:
            return
        queue.remove(member)
        waited = now - member["joined"]
        out["abandoned"] += waited > ABANDON_AFTER
        if waited > ABANDON_AFTER:
            verdict(now, True)
        finish(now, member["cid"], "abandoned" if waited > 2 else "hangup")

    def dispatch(now: float) -> None:
        while queue:
            free = [a for a in agents if a["state"] == "Waiting" and a["end"] < int(now) - WRAP]
            if not free:
                return
            agent = min(free, key=lambda a: a["end"])  # longest idle
            member = queue.pop(0)
            member["found"] = True
            member["offered_at"] = now
            live[member["cid"]]["offered"] = True
            agent["state"] = "Receiving"
            agent["until"] = None  # the oracle learns the talk time at the bridge, 1 s from now
            at(now + AGENT_ANSWER, agent_answers, agent, member)

    def agent_answers(now: float, agent: dict, member: dict) -> None:
        agent["state"] = "In a queue call"
        c = live[member["cid"]]
        c["agent"] = now
        stats.agent_rang(now, now - member["offered_at"])
        late = now - c["answered"] > ABANDON_AFTER
        out["late"] += late
        verdict(now, late and not HUNG_UP)
        talk = rng.uniform(60, 300)
        agent["until"] = now + talk
        at(now + talk, call_end, agent, member, now)

    def call_end(now: float, agent: dict, member: dict, began: float) -> None:
        out["talk"] += now - began  # the bench counts calls that ended within the shift
        agent["state"], agent["end"] = "Waiting", int(now)
        at(int(now) + WRAP + 1.001, dispatch)
        finish(now, member["cid"], "answered")

    def oracle(now: float, floor: pacing.Floor, calls: list[dict]) -> int:
        """A bound: the marginal rule knowing when every agent will be free (the end of each call, hence of
        its wrap-up), not how the leads will behave."""
        summary = stats.summary(now)
        if summary["answered"] < pacing.MIN_ANSWERED:
            return pacing.progressive(floor)
        frees = []
        for a in agents:
            if a["state"] == "In a queue call":
                frees.append(int(a["until"]) + WRAP + 1.001 - now)
            elif a["state"] == "Receiving":
                frees.append(AGENT_ANSWER + 180 + WRAP + 1)  # about to bridge: its call's length is unknown yet
            else:
                frees.append(max(0.0, a["end"] + WRAP + 1.001 - now))
        ages = [now - c["started"] for c in calls if c["answered"] is None]
        waiting = floor.waiting - floor.offered
        rate = summary["answer_rate"]
        horizons, before = [], 0.0
        for s in stats.horizons():
            cdf = stats.ring_cdf(s)
            if cdf <= before:
                continue
            coming, var = stats.answering(ages, s)
            free = sum(1 for f in frees if f <= s + ORACLE_GRACE)
            horizons.append((cdf - before, rate * cdf, free - coming - waiting, var))
            before = cdf
        limit = pacing._tail(pacer.z)
        n = 0
        while n < 3 * AGENTS:
            risk = 0.0
            for mass, f, margin, var in horizons:
                mu = margin - n * f
                risk += mass * pacing._tail((mu - 0.5) / (max(var + n * f * (1 - f), 1e-9)) ** 0.5)
            if risk > limit:
                break
            n += 1
        return max(n, pacing.progressive(floor))

    def tick(now: float) -> None:
        at(now + TICK, tick)
        free = busy = 0
        wrapping = []
        for a in agents:
            if a["state"] in ("Receiving", "In a queue call"):
                busy += 1
            elif a["end"] + WRAP < int(now) + 1:
                free += 1
            else:
                busy += 1
                wrapping.append(a["end"] + WRAP + 1 - now)
        calls = list(live.values())
        ringing = sum(1 for c in calls if c["answered"] is None)
        waiting = sum(1 for c in calls if c["answered"] is not None and c["agent"] is None)
        offered = sum(1 for c in calls if c["offered"] and c["agent"] is None)
        floor = pacing.Floor(free, busy, ringing, waiting, offered, tuple(wrapping))
        if mode == "progressive":
            lines = pacing.progressive(floor)
        elif mode == "oracle":
            lines = oracle(now, floor, calls)
        else:
            elapsed = [now - c["agent"] for c in calls if c["agent"] is not None]
            ages = [now - c["started"] for c in calls if c["answered"] is None]
            pacer.grace = GRACE_HUNG_UP if HUNG_UP else stats.grace(ABANDON_AFTER)
            lines = pacer.lines(floor, stats.summary(now), stats, elapsed, ages)
        for _ in range(lines):
            dial(now)

    at(0.0, tick)
    while events:
        when, _, fn, args = heapq.heappop(events)
        if when > DAY:
            break
        fn(when, *args)
    answered = max(1, out["answered"])
    return out["talk"] / (AGENTS * DAY), (out["abandoned"] + out["late"]) / answered, out["abandoned"] / answered


def report(label: str, results: list[tuple[float, float, float]]) -> None:
    n = len(results)
    print(json.dumps({"run": label, "utilisation": [round(r[0], 3) for r in results],
                      "abandon_rate": [round(r[1], 4) for r in results],
                      "mean_utilisation": round(sum(r[0] for r in results) / n, 4),
                      "mean_abandon_rate": round(sum(r[1] for r in results) / n, 4),
                      "mean_hung_up_rate": round(sum(r[2] for r in results) / n, 4)}), flush=True)


def main() -> None:
    seeds = range(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    if len(sys.argv) > 2:
        mode = sys.argv[3] if len(sys.argv) > 3 else "predictive"
        for z in (float(x) for x in sys.argv[2].split(",")):
            report(f"{mode} z={z}", [run(mode, s, fixed_z=z) for s in seeds])
        return
    for mode in ("progressive", "predictive"):
        report(mode, [run(mode, s) for s in seeds])


if __name__ == "__main__":
    main()
