"""Check-in by dialled code on a real FreeSWITCH: `GET /api/cc_agent/checkIn` gives `***NNNNNN`, a registered
sipp phone of the account dials it, FreeSWITCH's dialplan (served by switchdesk) hands the call to switchdesk's
outbound socket, and the agent is checked in with that phone. Judges: the API's user record, mod_callcenter's
`agent list` / `tier list`, the SIP the phone saw, and switchdesk's own log (which must never show a code)."""
from __future__ import annotations

import itertools
import re
import sqlite3
import time

import pytest

from tests.realswitch.floor import Agent, Floor, eventually, first, never, rings
from tests.realswitch.sipp import RtpSink, _ulaw

pytestmark = pytest.mark.real_freeswitch


def issue(floor: Floor, agent: Agent) -> str:
    status, reply = floor.http("GET", f"/api/cc_agent/checkIn?user_id={agent.user_id}")
    assert status == 200 and reply["success"] is True, reply
    code = reply["data"]
    assert re.fullmatch(r"\*\*\*\d{6}", code), code
    return code


def tones(sink: RtpSink) -> tuple[int, float]:
    """What the phone heard: how many bursts of tone (20 ms frames with sound), and their pitch in Hz
    (zero crossings). switchdesk confirms with one short high tone (800 Hz), refuses with three low beeps
    (380 Hz)."""
    samples = [_ulaw(b) for b in sink.audio]
    frames = [samples[i:i + 160] for i in range(0, len(samples), 160)]
    loud = [max((abs(x) for x in f), default=0) > 500 for f in frames]
    bursts = sum(1 for i, on in enumerate(loud) if on and (i == 0 or not loud[i - 1]))
    crossings = sum(sum(1 for a, b in itertools.pairwise(f) if (a < 0) != (b < 0))
                    for f, on in zip(frames, loud, strict=True) if on)
    seconds = sum(len(f) for f, on in zip(frames, loud, strict=True) if on) / 8000
    return bursts, (crossings / 2 / seconds if seconds else 0.0)


def dial(floor: Floor, phone, code: str, accepted: bool) -> None:
    """The phone dials the code; switchdesk's socket answers, plays its tone and hangs up (FreeSWITCH's BYE).
    `accepted`: the high confirmation tone, else the three low beeps."""
    sink = RtpSink()
    try:
        run = phone.call(code, hold_seconds=8, rtp_port=sink.port).wait(20)
    finally:
        sink.close()
    assert run.ok, run.report() + floor.real.failure_context()
    assert first(run, True, "SIP/2.0 200"), "the check-in call was not answered" + run.report()
    assert first(run, True, "BYE "), "switchdesk did not hang the check-in call up" + run.report()
    bursts, pitch = tones(sink)
    if accepted:
        assert bursts == 1 and 700 < pitch < 900, f"confirmation tone expected, heard {bursts} at {pitch:.0f} Hz"
    else:
        assert bursts == 3 and 300 < pitch < 460, f"three low beeps expected, heard {bursts} at {pitch:.0f} Hz"


def online(floor: Floor, agent: Agent) -> tuple[int, int | None]:
    user = floor.user(agent)
    return user.get("online"), user.get("device_id")


def assert_not_checked_in(floor: Floor, agent: Agent, seconds: float = 1.0) -> None:
    never(lambda: online(floor, agent), lambda o: o[0] == 1, f"user {agent.user_id} checked in", seconds)
    row = floor.switch.agent(agent.name)
    assert row.get("status") == "Logged Out" and row.get("contact") == "error/user_not_registered", row
    assert not [t for t in floor.switch.tiers(floor.domain) if t[1] == agent.name]


def assert_code_not_logged(real_switch, *codes: str) -> None:
    log = real_switch.sd.log_text()
    for code in codes:
        digits = code.lstrip("*")
        assert code not in log and not re.search(rf"(?<![0-9A-Za-z]){digits}(?![0-9A-Za-z])", log), \
            f"check-in code {code} in switchdesk's log"


def test_dialled_code_checks_the_agent_in_once(real_switch, account):
    floor = Floor(real_switch, account)
    queue = floor.queue("Checkin", "6101")
    agent = floor.agent("2101")
    floor.join(queue, [agent.user_id, 3])
    assert_not_checked_in(floor, agent, 0)
    code = issue(floor, agent)
    dial(floor, agent.phone, code, accepted=True)
    eventually(lambda: online(floor, agent), lambda o: o == (1, agent.device_id), "checked in by the code")
    row = floor.wait_agent(agent, lambda a: a.get("status") == "Available"
                           and rings(a, agent.sip, floor.domain), "Available with the phone")
    assert row["state"] == "Waiting"
    eventually(lambda: floor.switch.tiers(floor.domain), lambda t: (queue.name, agent.name) in t, "tier joined")
    # the code worked once: checked out, the same code dialled again does nothing
    floor.agent_api("checkOut", agent)
    floor.wait_agent(agent, lambda a: a.get("status") == "Logged Out", "checked out")
    dial(floor, agent.phone, code, accepted=False)
    assert_not_checked_in(floor, agent)
    assert_code_not_logged(real_switch, code)


def test_expired_code_does_nothing(real_switch, account):
    floor = Floor(real_switch, account)
    agent = floor.agent("2102")
    code = issue(floor, agent)
    # age it: five minutes and a second later (switchdesk's own SQLite file; it stores codes as dialled)
    path = real_switch.sd.db.removeprefix("sqlite:///")
    with sqlite3.connect(path, timeout=10) as db:
        aged = db.execute("UPDATE checkin_code SET expires = ?, ts = ? WHERE code = ? AND user_id = ?",
                          (int(time.time()) - 1, int(time.time()) - 301, code[3:], agent.user_id)).rowcount
    assert aged == 1
    dial(floor, agent.phone, code, accepted=False)
    assert_not_checked_in(floor, agent)
    # a fresh code from the same phone works: the phone was fine, the code was expired
    fresh = issue(floor, agent)
    dial(floor, agent.phone, fresh, accepted=True)
    eventually(lambda: online(floor, agent), lambda o: o == (1, agent.device_id), "checked in by a fresh code")
    assert_code_not_logged(real_switch, code, fresh)


def test_code_from_another_accounts_phone_does_nothing(real_switch, account):
    floor = Floor(real_switch, account)
    agent = floor.agent("2103")
    other = Floor(real_switch, real_switch.new_account("other"))
    stranger = other.agent("2103")  # the same SIP username, in the other account's domain
    code = issue(floor, agent)
    dial(other, stranger.phone, code, accepted=False)
    assert_not_checked_in(floor, agent)
    assert online(other, stranger)[0] != 1
    assert other.switch.agent(stranger.name).get("status") == "Logged Out"
    # and the code was not spent by the stranger: the agent's own phone still checks in with it
    dial(floor, agent.phone, code, accepted=True)
    eventually(lambda: online(floor, agent), lambda o: o == (1, agent.device_id), "checked in by its own phone")
    floor.wait_agent(agent, lambda a: a.get("status") == "Available"
                     and rings(a, agent.sip, floor.domain), "Available with the phone")
    assert_code_not_logged(real_switch, code)


def test_busy_phone_refuses_a_code_unless_it_forces_and_the_agent_moves(real_switch, account):
    """A phone another agent is checked in with refuses the code (the code stays valid); a code issued with
    forceCheckOut=1 checks that agent out, and the dialling agent moves there from its own phone."""
    floor = Floor(real_switch, account)
    queue = floor.queue("Shared", "6111")
    holder, mover = floor.agent("2111"), floor.agent("2112")
    shared_device, shared = floor.device("2113")  # a hot desk: no user of its own
    floor.join(queue, [holder.user_id], [mover.user_id])
    floor.agent_api("checkInDevice", holder, device_id=shared_device["id"])
    floor.check_in(mover, [queue])
    floor.wait_agent(holder, lambda a: rings(a, shared.username, floor.domain), "on the hot desk")

    polite = issue(floor, mover)
    dial(floor, shared, polite, accepted=False)
    assert online(floor, holder) == (1, shared_device["id"])
    assert online(floor, mover) == (1, mover.device_id)
    assert rings(floor.switch.agent(mover.name), mover.sip, floor.domain)

    status, reply = floor.http("GET", f"/api/cc_agent/checkIn?user_id={mover.user_id}&forceCheckOut=1")
    assert status == 200 and reply["success"] is True, reply
    forcing = reply["data"]
    dial(floor, shared, forcing, accepted=True)
    eventually(lambda: online(floor, mover), lambda o: o == (1, shared_device["id"]), "moved to the hot desk")
    floor.wait_agent(mover, lambda a: rings(a, shared.username, floor.domain)
                     and a.get("status") == "Available", "ringing the hot desk")
    assert online(floor, holder)[0] != 1
    floor.wait_agent(holder, lambda a: a.get("status") == "Logged Out", "checked out by the forcing code")
    tiers = floor.switch.tiers(floor.domain)
    assert (queue.name, mover.name) in tiers and (queue.name, holder.name) not in tiers, tiers
    assert_code_not_logged(real_switch, polite, forcing)
