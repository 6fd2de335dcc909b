"""Agents taking queue calls on a real FreeSWITCH: sipp callers dial a queue's extension, mod_callcenter offers
the call to a checked-in agent's sipp phone, which answers. Agent control goes through switchdesk's HTTP API
(checkInDevice, setPause, wrapup, setQueues, time groups); the judges are what the phones received (INVITEs,
with sipp's timestamps), `show calls` and mod_callcenter's `agent list` / `tier list`."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.realswitch.floor import OPEN_ENDED, Floor, eventually, first, invites, never

pytestmark = pytest.mark.real_freeswitch


def offered(run, caller) -> bool:
    """The agent's phone has an INVITE from `caller` (mod_callcenter passes the caller's id on)."""
    return any(f"sip:{caller.username}@" in m.text for m in invites(run))


def finish(floor: Floor, *runs) -> None:
    for run in runs:
        run.wait(30)
        assert run.ok, run.report() + floor.real.failure_context()


def test_queue_call_reaches_the_agents_phone_and_is_bridged(real_switch, account):
    floor = Floor(real_switch, account)
    queue = floor.queue("Sales", "6201")
    agent = floor.agent("2201")
    idle = floor.agent("2202")  # a member that is not checked in gets nothing
    floor.join(queue, [agent.user_id], [idle.user_id])
    caller = floor.caller("3201")
    floor.check_in(agent, [queue])
    assert (queue.name, idle.name) not in floor.switch.tiers(floor.domain)
    floor.ready(agent)

    answer = agent.phone.answer(stay_seconds=3)
    unwanted = idle.phone.answer(stay_seconds=1, timeout_s=5)
    call = caller.call(queue.number, hold_seconds=10)
    calls = eventually(lambda: floor.bridged(caller.username, agent.sip), bool, "caller bridged to the agent")
    assert calls[0]["callstate"] == "ACTIVE" and calls[0]["b_callstate"] == "ACTIVE", calls
    assert calls[0]["dest"] == queue.number
    row = floor.switch.agent(agent.name)
    assert row["state"] == "In a queue call" and row["status"] == "Available", row
    members = floor.switch.members(queue.name)
    assert [m["state"] for m in members] == ["Answered"], members
    assert members[0]["serving_agent"] == agent.name
    finish(floor, answer, call)  # the agent hangs up after 3 s; FreeSWITCH hangs the caller up (BYE)
    assert offered(answer, caller)
    assert first(call, True, "BYE "), "the caller was not hung up with the agent" + call.report()
    unwanted.wait(10)
    assert not invites(unwanted), "a member that is not checked in was offered the call"


def test_paused_agent_is_not_offered_until_set_available(real_switch, account):
    floor = Floor(real_switch, account)
    queue = floor.queue("Paused", "6211")
    agent = floor.agent("2211")
    floor.join(queue, [agent.user_id])
    caller = floor.caller("3211")
    coffee = floor.http.post("/api/pause", {"name": f"Coffee {floor.tag}", "max_duration": 0})
    floor.check_in(agent, [queue])
    floor.agent_api("setPause", agent, id=coffee["id"])
    row = floor.wait_agent(agent, lambda a: int(a.get("ready_time") or 0) == OPEN_ENDED, "paused (ready_time)")
    assert row["status"] == "Available"  # a pause is ready_time, not a status (fairness kept)
    assert floor.user(agent)["pause_id"] == coffee["id"]

    answer = agent.phone.answer(stay_seconds=1, timeout_s=30)
    call = caller.call(queue.number, hold_seconds=15)
    eventually(lambda: floor.waiting(queue), lambda n: n == 1, "caller waiting in the queue")
    never(lambda: invites(answer), bool, "paused agent offered a call", seconds=3)
    assert floor.switch.agent(agent.name)["state"] == "Waiting"

    unpaused = time.time()
    floor.agent_api("setPause", agent, id=0)
    eventually(lambda: offered(answer, caller), bool, "offer after setPause id=0", timeout=5)
    delay = invites(answer)[0].at - unpaused
    print(f"offer delay: {delay:.2f} s")
    assert delay < 2.5, f"offered {delay:.2f} s after setPause id=0"
    eventually(lambda: floor.bridged(caller.username, agent.sip), bool, "bridged after the pause")
    finish(floor, answer, call)


def test_wrap_up_time_delays_the_next_offer(real_switch, account):
    """The agent's wrap_up_time (3 s, a user setting) reaches mod_callcenter; after a queue call ends the
    next waiting caller is offered only once it has passed."""
    wrap = 3
    floor = Floor(real_switch, account)
    queue = floor.queue("Wrapup", "6221")
    agent = floor.agent("2221", wrap_up_time=wrap)
    floor.join(queue, [agent.user_id])
    first_caller, second_caller = floor.caller("3221"), floor.caller("3222")
    floor.check_in(agent, [queue])
    assert floor.switch.agent(agent.name)["wrap_up_time"] == str(wrap)
    floor.ready(agent)

    answer = agent.phone.answer(stay_seconds=1)
    call = first_caller.call(queue.number, hold_seconds=10)
    finish(floor, answer, call)  # the agent hung up after 1 s: the bridge ended with its BYE
    ended = first(answer, False, "BYE ").at
    second_answer = agent.phone.answer(stay_seconds=1, timeout_s=20)
    second_call = second_caller.call(queue.number, hold_seconds=15)
    eventually(lambda: offered(second_answer, second_caller), bool, "offer after the wrap-up", timeout=wrap + 5)
    delay = invites(second_answer)[0].at - ended
    print(f"offer delay: {delay:.2f} s")
    # mod_callcenter counts whole seconds: last_bridge_end + wrap_up_time < now, then its next dispatch round
    assert wrap - 0.2 <= delay <= wrap + 2.5, f"second caller offered {delay:.2f} s after the call ended"
    finish(floor, second_answer, second_call)


def test_wrapup_seconds_delays_the_offer_and_zero_ends_the_native_window(real_switch, account):
    """`wrapup?seconds=N` holds offers for N s from now; after a queue call, `wrapup?seconds=0` ends
    mod_callcenter's own wrap-up window (the account default, 10 s) at once."""
    floor = Floor(real_switch, account)
    queue = floor.queue("Wrapup API", "6231")
    agent = floor.agent("2231")
    floor.join(queue, [agent.user_id])
    first_caller, second_caller = floor.caller("3231"), floor.caller("3232")
    floor.check_in(agent, [queue])
    native = int(floor.switch.agent(agent.name)["wrap_up_time"])
    assert native >= 8, "the test needs a long native wrap-up to tell it from an ended one"
    floor.ready(agent)

    seconds = 3
    answer = agent.phone.answer(stay_seconds=1, timeout_s=20)
    asked = time.time()
    floor.agent_api("wrapup", agent, seconds=seconds)
    call = first_caller.call(queue.number, hold_seconds=12)
    eventually(lambda: offered(answer, first_caller), bool, "offer after wrapup", timeout=seconds + 5)
    delay = invites(answer)[0].at - asked
    print(f"offer delay: {delay:.2f} s")
    # ready_time = now + N in whole seconds: the offer comes after N-1 .. N s, plus a dispatch round
    assert seconds - 1 <= delay <= seconds + 2.5, f"offered {delay:.2f} s after wrapup?seconds={seconds}"
    finish(floor, answer, call)

    floor.wait_agent(agent, lambda a: int(a.get("last_bridge_end") or 0) > 0, "bridge ended")
    second_answer = agent.phone.answer(stay_seconds=1, timeout_s=20)
    second_call = second_caller.call(queue.number, hold_seconds=12)
    eventually(lambda: floor.waiting(queue), lambda n: n == 1, "second caller waiting")
    never(lambda: invites(second_answer), bool, "offered inside the native wrap-up", seconds=1.5)
    ended = time.time()
    floor.agent_api("wrapup", agent, seconds=0)
    # README: the native window is ended by `wrap_up_time 0` until it would have passed
    floor.wait_agent(agent, lambda a: a.get("wrap_up_time") == "0", "native wrap-up suppressed", timeout=3)
    eventually(lambda: offered(second_answer, second_caller), bool, "offer after wrapup?seconds=0", timeout=5)
    delay = invites(second_answer)[0].at - ended
    print(f"offer delay: {delay:.2f} s")
    assert delay < 2.5, f"offered {delay:.2f} s after wrapup?seconds=0 (native wrap-up {native} s)"
    finish(floor, second_answer, second_call)
    # the next queue call brings its own wrap-up window again: wrap_up_time is restored
    floor.wait_agent(agent, lambda a: a.get("wrap_up_time") == str(native), "wrap_up_time restored", timeout=5)


def _timegroup(floor: Floor, label: str, closed_today: bool) -> dict:
    today = dt.datetime.now(dt.UTC).date()
    days = [today + dt.timedelta(days=d) for d in (-1, 0, 1)]
    group = floor.http.post("/api/timegroup", {
        "name": f"{label} {floor.tag}", "timezone": "UTC",
        "ranges": [{"days": "mon-sun", "start": "00:00", "end": "24:00"}],
        "exceptions": [{"date": d.isoformat(), "closed": True} for d in days] if closed_today else []})
    assert group["open"] is (not closed_today), group
    return group


def test_set_queues_and_time_groups_decide_which_queues_offer(real_switch, account):
    floor = Floor(real_switch, account)
    left, kept = floor.queue("Left", "6241"), floor.queue("Kept", "6242")
    closed, opened = floor.queue("Closed", "6243"), floor.queue("Open", "6244")
    agent = floor.agent("2241")
    shut, always = _timegroup(floor, "Shut", True), _timegroup(floor, "Always", False)
    for queue, group in ((left, None), (kept, None), (closed, shut), (opened, always)):
        floor.join(queue, [agent.user_id, 3, 1, 1, group["id"] if group else None])
    callers = {q.number: floor.caller(f"32{q.number[-2:]}") for q in (left, kept, closed)}
    floor.check_in(agent, [left, kept, opened])
    ours = floor.switch.tiers(floor.domain)
    assert (closed.name, agent.name) not in ours, "a tier whose time group is closed is in mod_callcenter"

    floor.agent_api("setQueues", agent, queue_ids=[kept.id, closed.id, opened.id])
    tiers = eventually(lambda: set(floor.switch.tiers(floor.domain)),
                       lambda t: (left.name, agent.name) not in t, "tier left by setQueues")
    assert tiers == {(kept.name, agent.name), (opened.name, agent.name)}, tiers
    user = floor.user(agent)
    assert set(user["queues"]) == {kept.id, closed.id, opened.id}, user["queues"]
    floor.ready(agent)

    answer = agent.phone.answer(stay_seconds=1, timeout_s=30)
    waiting = [callers[q.number].call(q.number, hold_seconds=6) for q in (left, closed)]
    eventually(lambda: floor.waiting(left) + floor.waiting(closed), lambda n: n == 2, "callers waiting")
    never(lambda: invites(answer), bool, "offered a call of a queue it left or whose time group is closed",
          seconds=2.5)
    call = callers[kept.number].call(kept.number, hold_seconds=10)
    eventually(lambda: offered(answer, callers[kept.number]), bool, "offer from the queue it kept", timeout=5)
    eventually(lambda: floor.bridged(callers[kept.number].username, agent.sip), bool, "bridged")
    finish(floor, answer, call, *waiting)
    assert len(invites(answer)) == 1
