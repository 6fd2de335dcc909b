"""Call events of real queue calls, as a webhook receives them.

A phone calls a queue's extension; mod_callcenter offers the call to the checked-in agent's phone. The
account's Event Push URL points at a receiver on loopback (serve runs with --webhook-allow-private), and
each test checks the `call:*` (and `agent:*`) events it gets, field by field, against README's "Call
events" table. The same four flows are replayed from recordings through the emulator in
tests/test_callevents.py; where the two disagree the real switch is right.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import pytest

from tests.realswitch.esl import parse_table
from tests.realswitch.sipp import Phone
from tests.realswitch.test_registration import PASSWORD, eventually, make_device
from tests.realswitch.webhook import WebhookReceiver

pytestmark = pytest.mark.real_freeswitch

# README, Call events: "Every call event carries every field below (null when unknown)"
FIELDS = {"id", "call_id", "ts", "site_id", "type", "dst_num", "src_device_id", "dst_device_id", "src_user_id",
          "dst_user_id", "cid_num", "cid_name", "a2", "tags", "queue_id", "lead_id", "lead_name", "campaign_id",
          "dialer_id", "conference_id", "call_script", "waitms", "durationms", "progressms", "billms", "cc_wait",
          "hangup_cause", "canceled"}
END_ONLY = ("waitms", "durationms", "progressms", "billms", "cc_wait", "hangup_cause", "canceled")
SECRET = "webhook-secret-for-the-real-switch"
QUEUE_NUMBER = "7000"
AGENT_LEG = {"cid_num": "4000", "cid_name": "Front Desk"}


@dataclass
class CallCenter:
    account: object
    hook: WebhookReceiver
    queue: dict
    agent_user: dict
    agent_dev: dict
    caller_dev: dict
    agent: Phone
    caller: Phone

    @property
    def agent_name(self) -> str:
        return f"{self.agent_user['id']}@{self.account.domain}"


@pytest.fixture
def center(real_switch, account):
    """A queue on extension 7000 with one member agent (own phone, registered, not yet checked in), a
    registered caller phone, and the account's events pushed (signed) to a receiver on loopback."""
    hook = WebhookReceiver()
    account.http.ok("PUT", "/api/account", {"event_push_url": hook.url, "webhook_secret": SECRET})
    site = account.http.post("/api/site", {"name": "Head office"})
    queue = account.http.post("/api/cc_queue", {"name": "Support", "strategy": "longest-idle-agent",
                                                "time_base_score": "system", "site_id": site["id"]})
    account.http.post("/api/extension", {"number": QUEUE_NUMBER, "target_type": "queue", "target_id": queue["id"]})
    user = account.http.post("/api/user", {"name": "Alice Agent", "username": f"{account.admin}.alice",
                                           "password": "Agent-pw-1234", "email": f"alice@{account.domain}",
                                           "is_agent": True, "wrap_up_time": 0, "max_no_answer": 1})
    agent_dev = make_device(account, "4001", user_id=user["id"])
    caller_dev = make_device(account, "4000", cid_num="4000", cid_name="Front Desk")
    account.http.post(f"/api/cc_queue/{queue['id']}/users", {"users": [[user["id"]]]})
    agent = real_switch.phone(account, "4001", PASSWORD)
    caller = real_switch.phone(account, "4000", PASSWORD)
    assert agent.register().ok and caller.register().ok
    yield CallCenter(account, hook, queue, user, agent_dev, caller_dev, agent, caller)
    hook.close()


def check_in(real_switch, center: CallCenter) -> None:
    center.account.http.get(f"/api/cc_agent/checkInDevice?user_id={center.agent_user['id']}"
                            f"&device_id={center.agent_dev['id']}")
    queue_name = f"{center.queue['id']}@{center.account.domain}"
    eventually(lambda: real_switch.api(f"callcenter_config queue list agents {queue_name}"),
               lambda text: center.agent_name in text and "Available" in text, "agent Available in the queue")


def legs(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["event"], e["data"]["id"]) for e in events]


def caller_leg(center: CallCenter, events: list[dict]) -> str:
    ring = next(e for e in events if e["event"] == "call:ring" and e["data"]["src_device_id"] == center.caller_dev["id"]
                and e["data"]["dst_device_id"] is None)
    return ring["data"]["id"]


def expected(center: CallCenter, **fields) -> dict:
    """Every documented field, with what all legs of a queue call from the caller's phone share."""
    out = dict.fromkeys(FIELDS)
    # cid_*: Caller-Caller-ID-* of the leg. On the caller's leg that is what the phone sent (sipp's From has
    # no display name, so FreeSWITCH uses the user part); the agent's leg shows what the agent's phone is
    # shown, the caller device's effective_caller_id_* from our directory (AGENT_LEG)
    out.update(site_id=center.queue["site_id"], type="queue", dst_num=QUEUE_NUMBER,
               src_device_id=center.caller_dev["id"],
               cid_num="4000", cid_name="4000", queue_id=center.queue["id"])
    out.update(fields)
    return out


def check_delivery(center: CallCenter) -> None:
    """Every request: the body's envelope, the event id header, a valid signature over the raw body."""
    seqs = sorted(body["account_seq"] for _headers, body, _raw in center.hook.received)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # gap-free in the account
    for headers, body, raw in center.hook.received:
        stamp = headers["X-Switchdesk-Timestamp"]
        signature = hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
        assert headers["X-Switchdesk-Signature"] == f"v1={signature}", body
        assert abs(time.time() - int(stamp)) < 60
        assert set(body) == {"id", "event", "ts", "account_id", "account_seq", "data"}, body
        assert headers["X-Switchdesk-Event-Id"] == body["id"]
        assert headers["X-Switchdesk-Account-Seq"] == str(body["account_seq"])
        assert headers["Content-Type"].startswith("application/json")
        if body["event"].startswith("call:"):
            assert set(body["data"]) == FIELDS, set(body["data"]) ^ FIELDS
            assert body["data"]["ts"] == body["ts"]
            if body["event"] != "call:end":
                assert all(body["data"][k] is None for k in END_ONLY), body


def wait_call_end(center: CallCenter, legs: int = 2, timeout: float = 20) -> list[dict]:
    """The call events, once the caller's leg and `legs` legs in all ended and nothing more came for a moment."""
    def ended(events):
        ends = [e["data"] for e in events if e["event"] == "call:end"]
        return len(ends) >= legs and any(e["id"] == e["call_id"] for e in ends)
    center.hook.wait(ended, "the caller's call:end", timeout, prefix="call:")
    time.sleep(0.6)
    return center.hook.events("call:")


def agent_statuses(center: CallCenter) -> list[tuple[int, int, int]]:
    return [(e["data"]["activity_id"], e["data"]["pause_id"], e["data"]["in_calls"])
            for e in center.hook.events("agent:status") if e["data"]["user_id"] == center.agent_user["id"]]


# -- the four flows -------------------------------------------------------------------------------------------


def test_answered_queue_call(real_switch, center):
    check_in(real_switch, center)
    answering = center.agent.answer(stay_seconds=2, ring_seconds=0.5)
    center.agent.wait_listening()
    call = center.caller.call(QUEUE_NUMBER, hold_seconds=15)
    events = wait_call_end(center)
    call.wait(20)
    answering.wait(20)
    assert answering.ok, answering.report() + real_switch.failure_context()
    assert call.ok, call.report()
    check_delivery(center)
    member = caller_leg(center, events)
    agent_leg = next(e["data"]["id"] for e in events if e["data"]["id"] != member)
    assert legs(events) == [
        ("call:ring", member), ("call:answer", member), ("call:start", member),
        ("call:ring", agent_leg), ("call:answer", agent_leg), ("call:end", agent_leg), ("call:end", member),
    ], legs(events)
    ring, answer, start, a_ring, a_answer, a_end, end = (e["data"] for e in events)
    alice, desk = center.agent_user["id"], center.agent_dev["id"]
    for data in (ring, answer, start):
        assert data == expected(center, id=member, call_id=member, ts=data["ts"]), data
    assert end == expected(center, id=member, call_id=member, ts=end["ts"], dst_device_id=desk, dst_user_id=alice,
                           waitms=end["waitms"], durationms=end["durationms"], progressms=end["progressms"],
                           billms=end["billms"], cc_wait=end["cc_wait"], hangup_cause="NORMAL_CLEARING")
    assert end["billms"] > 2000 and end["durationms"] >= end["billms"] and end["cc_wait"] in (0, 1, 2)
    for data in (a_ring, a_answer):
        assert data == expected(center, **AGENT_LEG, id=agent_leg, call_id=member, ts=data["ts"], dst_device_id=desk,
                                dst_user_id=alice), data
    # once bridged, FreeSWITCH gives the agent's leg the caller's own caller id: its call:end says "4000"
    # where its call:ring and call:answer said "Front Desk" (a leg that was never bridged keeps the latter)
    assert a_end == expected(center, id=agent_leg, call_id=member, ts=a_end["ts"], dst_device_id=desk,
                             dst_user_id=alice, waitms=a_end["waitms"], durationms=a_end["durationms"],
                             progressms=a_end["progressms"], billms=a_end["billms"], cc_wait=a_end["cc_wait"],
                             hangup_cause="NORMAL_CLEARING")
    assert 1500 < a_end["billms"] < 4000 and a_end["cc_wait"] in (0, 1, 2)
    assert ring["ts"] <= answer["ts"] <= start["ts"] <= a_ring["ts"] <= a_answer["ts"] <= a_end["ts"] <= end["ts"]
    # the agent: checked in and waiting, talking (2) during the call, waiting again (wrap_up_time 0)
    statuses = eventually(lambda: agent_statuses(center), lambda s: s[-1:] == [(1, 0, 1)] and len(s) >= 3,
                          "agent:status back to waiting")
    assert statuses[0] == (1, 0, 1) and (2, 0, 1) in statuses, statuses
    assert [e["event"] for e in center.hook.events("agent:checkin")] == ["agent:checkin"]


def test_caller_abandons_with_no_agent(real_switch, center):
    """Nobody is checked in: the caller waits ~2 s in the queue and hangs up."""
    call = center.caller.call(QUEUE_NUMBER, hold_seconds=2)
    events = wait_call_end(center, legs=1)
    call.wait(20)
    assert call.ok, call.report()
    check_delivery(center)
    member = caller_leg(center, events)
    assert legs(events) == [("call:ring", member), ("call:answer", member), ("call:start", member),
                            ("call:end", member)], legs(events)
    end = events[-1]["data"]
    assert end == expected(center, id=member, call_id=member, ts=end["ts"], waitms=end["waitms"],
                           durationms=end["durationms"], progressms=end["progressms"], billms=end["billms"],
                           cc_wait=end["cc_wait"], hangup_cause="NORMAL_CLEARING", canceled="BREAK_OUT")
    assert 1500 < end["billms"] < 4000 and end["cc_wait"] in (1, 2, 3)
    assert center.hook.events("agent:status") == []


def test_caller_abandons_while_the_agent_rings(real_switch, center):
    check_in(real_switch, center)
    ringing = center.agent.ring()
    center.agent.wait_listening()
    call = center.caller.call(QUEUE_NUMBER, hold_seconds=3)
    events = wait_call_end(center)
    call.wait(20)
    ringing.wait(20)
    assert call.ok, call.report()
    assert ringing.ok, ringing.report() + real_switch.failure_context()  # the agent's phone got the CANCEL
    check_delivery(center)
    member = caller_leg(center, events)
    agent_leg = next(e["data"]["id"] for e in events if e["data"]["id"] != member)
    # the two call:end come in either order: the caller's BYE ends its leg while mod_callcenter cancels the
    # agent's (the recording replayed by tests/test_callevents.py had the agent's first; here it is mostly last)
    assert legs(events)[:4] == [("call:ring", member), ("call:answer", member), ("call:start", member),
                                ("call:ring", agent_leg)], legs(events)
    assert sorted(legs(events)[4:]) == sorted([("call:end", agent_leg), ("call:end", member)]), legs(events)
    a_ring = events[3]["data"]
    a_end, end = (next(e["data"] for e in events[4:] if e["data"]["id"] == leg) for leg in (agent_leg, member))
    alice, desk = center.agent_user["id"], center.agent_dev["id"]
    assert a_ring == expected(center, **AGENT_LEG, id=agent_leg, call_id=member, ts=a_ring["ts"], dst_device_id=desk,
                              dst_user_id=alice), a_ring
    assert a_end == expected(center, **AGENT_LEG, id=agent_leg, call_id=member, ts=a_end["ts"], dst_device_id=desk,
                             dst_user_id=alice, waitms=a_end["waitms"], durationms=a_end["durationms"],
                             progressms=a_end["progressms"], billms=0, cc_wait=a_end["cc_wait"],
                             hangup_cause="ORIGINATOR_CANCEL"), a_end
    assert end == expected(center, id=member, call_id=member, ts=end["ts"], waitms=end["waitms"],
                           durationms=end["durationms"], progressms=end["progressms"], billms=end["billms"],
                           cc_wait=end["cc_wait"], hangup_cause="NORMAL_CLEARING", canceled="BREAK_OUT"), end
    assert end["cc_wait"] in (2, 3, 4)
    statuses = eventually(lambda: agent_statuses(center), lambda s: s[-1:] == [(1, 0, 1)] and len(s) >= 3,
                          "agent:status back to waiting")
    assert (2, 0, 1) in statuses, statuses


def test_agent_does_not_answer(real_switch, center):
    """The agent's phone rings and is never answered: the offer ends NO_ANSWER, mod_callcenter's max_no_answer
    (1 for this agent) puts it On Break (the account's system pause), and the caller, left with no agent,
    hangs up. The device rings for its own `timeout` (2 s here), which the agent's contact carries."""
    center.account.http.ok("PUT", f"/api/device/{center.agent_dev['id']}", {"timeout": 2})
    check_in(real_switch, center)
    rows = parse_table(real_switch.api(f"callcenter_config agent list {center.agent_name}"))
    assert [row["contact"] for row in rows] == [f"[leg_timeout=2]user/4001@{center.account.domain}"]
    ringing = center.agent.ring()
    center.agent.wait_listening()
    call = center.caller.call(QUEUE_NUMBER, hold_seconds=4)
    events = wait_call_end(center)
    call.wait(20)
    ringing.wait(20)
    assert call.ok, call.report()
    assert ringing.ok, ringing.report() + real_switch.failure_context()
    check_delivery(center)
    member = caller_leg(center, events)
    agent_leg = next(e["data"]["id"] for e in events if e["data"]["id"] != member)
    assert legs(events) == [("call:ring", member), ("call:answer", member), ("call:start", member),
                            ("call:ring", agent_leg), ("call:end", agent_leg), ("call:end", member)], legs(events)
    a_end, end = events[4]["data"], events[5]["data"]
    alice, desk = center.agent_user["id"], center.agent_dev["id"]
    assert a_end == expected(center, **AGENT_LEG, id=agent_leg, call_id=member, ts=a_end["ts"], dst_device_id=desk,
                             dst_user_id=alice, waitms=a_end["waitms"], durationms=a_end["durationms"],
                             progressms=a_end["progressms"], billms=0, cc_wait=None,
                             hangup_cause="NO_ANSWER"), a_end
    # leg_timeout runs from the originate, before the channel (and its duration) exists
    assert 1000 <= a_end["durationms"] < 3000
    assert end == expected(center, id=member, call_id=member, ts=end["ts"], waitms=end["waitms"],
                           durationms=end["durationms"], progressms=end["progressms"], billms=end["billms"],
                           cc_wait=end["cc_wait"], hangup_cause="NORMAL_CLEARING", canceled="BREAK_OUT"), end
    # On Break: the engine records the account's reserved system pause
    system_pause = next(p for p in center.account.http.get("/api/pause") if p.get("system"))
    statuses = eventually(lambda: agent_statuses(center), lambda s: (4, system_pause["id"], 1) in s,
                          "agent:status paused (On Break)")
    assert (2, 0, 1) in statuses, statuses
    user = center.account.http.get(f"/api/user/{center.agent_user['id']}")
    assert user["pause_id"] == system_pause["id"]


def test_queue_offer_rings_for_the_devices_timeout(real_switch, center):
    """README, Devices: `timeout` is the seconds a device rings. A queue offer to an agent checked in with it
    should end (NO_ANSWER) after that time; mod_callcenter's own ring time is a fixed 60 s."""
    center.account.http.ok("PUT", f"/api/device/{center.agent_dev['id']}", {"timeout": 2})
    check_in(real_switch, center)
    ringing = center.agent.ring()
    center.agent.wait_listening()
    call = center.caller.call(QUEUE_NUMBER, hold_seconds=5.5)
    started = time.monotonic()
    try:
        center.hook.wait(lambda events: any(e["event"] == "call:end" and e["data"]["hangup_cause"] == "NO_ANSWER"
                                            for e in events), "the offer's call:end NO_ANSWER", timeout=5,
                         prefix="call:")
        assert time.monotonic() - started < 5
    finally:
        call.wait(20)
        ringing.wait(20)
