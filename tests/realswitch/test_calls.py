"""Click-to-call on the real switch: `GET /api/cc_agent/originate` rings the agent's phone, and once the agent
answers, FreeSWITCH transfers that leg to the destination in the account's dialplan, which rings the other
phone and bridges the two (audio flows both ways through FreeSWITCH).

The originate string once read `&transfer(${switchdesk_dst_num} XML <domain>)`: originate splits its
arguments on spaces outside quotes, so transfer got the number alone, looked it up in context `default`
("Context default not found") and the agent heard NO_ROUTE_DESTINATION. These tests prove the destination
phone is reached, and pin what the API answers when the destination or the agent's phone fails.
"""
from __future__ import annotations

import re
import socket
import struct
import time

import pytest

from tests.realswitch.sipp import RtpSink
from tests.realswitch.test_registration import PASSWORD, eventually, make_device

pytestmark = pytest.mark.real_freeswitch

TONE = bytes([0x9A]) * 160  # one 20 ms PCMU frame of a constant sample: easy to find in what the other side hears
OTHER_TONE = bytes([0x1B]) * 160


def send_rtp(sock: socket.socket, port: int, payload: bytes, count: int = 50, ssrc: int = 0x5D5D0001) -> None:
    """`count` PCMU packets (20 ms apart) from `sock` to FreeSWITCH's media port of a leg."""
    for seq in range(count):
        header = struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc)
        sock.sendto(header + payload, ("127.0.0.1", port))
        time.sleep(0.02)


def channels(esl) -> list[dict]:
    return esl.json("show channels as json")["rows"]


def call_events(account, **where) -> list[dict]:
    """The account's call events as recorded (GET /api/event, recording order)."""
    rows = account.http.get("/api/event?order=asc&limit=1000")
    events = [{"event": r["event"], **r["data"]} for r in rows if r["event"].startswith("call:")]
    return [e for e in events if all(e.get(k) == v for k, v in where.items())]


def test_click_to_call_reaches_and_bridges_the_destination(real_switch, account):
    agent_dev = make_device(account, "2101", cid_num="2101", cid_name="Agent Desk")
    make_device(account, "2102", extension="302")
    agent = real_switch.phone(account, "2101", PASSWORD)
    dest = real_switch.phone(account, "2102", PASSWORD)
    assert agent.register().ok and dest.register().ok
    sink_a, sink_b = RtpSink(), RtpSink()
    try:
        agent_answers = agent.answer(stay_seconds=15, rtp_port=sink_a.port)
        dest_answers = dest.answer(stay_seconds=2.5, ring_seconds=0.3, rtp_port=sink_b.port)
        agent.wait_listening()
        dest.wait_listening()
        started = time.monotonic()
        status, reply = account.http("GET", f"/api/cc_agent/originate?destination=302&device_id={agent_dev['id']}"
                                            "&lead_id=L-77&tags=vip,test")
        assert status == 200 and reply.get("success") is True, (reply, real_switch.failure_context())
        a_leg = reply["uuid"]
        assert reply["data"] == {"uuid": a_leg}
        with real_switch.esl() as esl:
            # the agent's leg is bridged to a second leg: the destination's phone, answered
            rows = eventually(lambda: channels(esl),
                              lambda rows: len(rows) == 2 and all(r.get("callstate") == "ACTIVE" for r in rows),
                              "agent and destination legs both up", timeout=10)
            b_leg = next(r["uuid"] for r in rows if r["uuid"] != a_leg)
            assert esl.api(f"uuid_getvar {a_leg} bridge_uuid").strip() == b_leg
            assert esl.api(f"uuid_getvar {b_leg} dialed_user").strip() == "2102"
            # audio: what the agent's phone sends reaches the destination's phone, and the other way round
            a_port = int(esl.api(f"uuid_getvar {a_leg} local_media_port").strip())
            b_port = int(esl.api(f"uuid_getvar {b_leg} local_media_port").strip())
        send_rtp(sink_a.sock, a_port, TONE, count=40)
        send_rtp(sink_b.sock, b_port, OTHER_TONE, count=40)
        eventually(lambda: (TONE in bytes(sink_b.audio), OTHER_TONE in bytes(sink_a.audio)), all,
                   "RTP across the bridge both ways", timeout=3)
        # the destination hangs up: hangup_after_bridge ends the agent's leg too (FreeSWITCH BYEs the agent)
        dest_answers.wait(30)
        agent_answers.wait(30)
        assert dest_answers.ok, dest_answers.report() + real_switch.failure_context()
        assert agent_answers.ok, agent_answers.report() + real_switch.failure_context()
        assert time.monotonic() - started < 14, "the agent's phone was not hung up when the destination was"
        assert re.search(r"^BYE sip:", agent_answers.sip_log(), re.M)
    finally:
        sink_a.close()
        sink_b.close()
    # the destination phone saw the call from the agent's device (its caller id), not a "default" context
    invite = dest_answers.sip_log()
    assert "INVITE sip:2102@" in invite and "2101" in invite
    assert "Context default not found" not in real_switch.fs.log_text()
    with real_switch.esl() as esl:
        eventually(lambda: channels(esl), lambda rows: rows == [], "no channels left")
    # the call events of both legs: one call, the agent's leg first
    ends = eventually(lambda: call_events(account, event="call:end"), lambda e: len(e) == 2, "two call:end")
    by_leg = {e["id"]: e for e in ends}
    assert set(by_leg) == {a_leg, b_leg}
    assert {e["call_id"] for e in ends} == {a_leg}
    assert all(e["type"] == "outbound" and e["dst_num"] == "302" for e in ends)
    assert all(e["lead_id"] == "L-77" and e["tags"] == "vip,test" for e in ends)
    assert all(e["src_device_id"] == agent_dev["id"] for e in ends)
    assert by_leg[b_leg]["hangup_cause"] == "NORMAL_CLEARING" and by_leg[b_leg]["billms"] > 1000


def test_click_to_call_destination_does_not_answer(real_switch, account):
    """The agent answered, so the API says success (the agent's leg); the destination rings for its device's
    `timeout`, is cancelled, and the agent's leg is hung up: no channel is left."""
    agent_dev = make_device(account, "2111")
    make_device(account, "2112", extension="312", timeout=3)
    agent = real_switch.phone(account, "2111", PASSWORD)
    dest = real_switch.phone(account, "2112", PASSWORD)
    assert agent.register().ok and dest.register().ok
    agent_answers = agent.answer(stay_seconds=20)
    dest_rings = dest.ring()
    agent.wait_listening()
    dest.wait_listening()
    status, reply = account.http("GET", f"/api/cc_agent/originate?destination=312&device_id={agent_dev['id']}")
    assert status == 200 and reply.get("success") is True, (reply, real_switch.failure_context())
    a_leg = reply["uuid"]
    started = time.monotonic()
    dest_rings.wait(20)
    assert dest_rings.ok, dest_rings.report() + real_switch.failure_context()
    agent_answers.wait(20)
    assert agent_answers.ok, agent_answers.report()
    assert re.search(r"^BYE sip:", agent_answers.sip_log(), re.M), "FreeSWITCH did not hang up the agent's phone"
    assert time.monotonic() - started < 10, "the destination rang for longer than its device's timeout"
    with real_switch.esl() as esl:
        eventually(lambda: channels(esl), lambda rows: rows == [], "no channels left")
    ends = eventually(lambda: call_events(account, event="call:end"), lambda e: len(e) == 2, "two call:end")
    by_leg = {e["id"]: e for e in ends}
    assert a_leg in by_leg
    (b_end,) = (e for leg, e in by_leg.items() if leg != a_leg)
    assert b_end["hangup_cause"] == "NO_ANSWER" and b_end["billms"] == 0 and b_end["call_id"] == a_leg
    assert by_leg[a_leg]["billms"] > 0  # the agent's leg was answered
    ring_events = call_events(account, event="call:answer")
    assert [e["id"] for e in ring_events] == [a_leg]


def test_click_to_call_agent_not_registered(real_switch, account):
    agent_dev = make_device(account, "2121")
    make_device(account, "2122", extension="322")
    status, reply = account.http("GET", f"/api/cc_agent/originate?destination=322&device_id={agent_dev['id']}")
    assert status == 200, reply
    assert reply["success"] is False and reply["msg"] == "USER_NOT_REGISTERED", reply
    assert re.fullmatch(r"[0-9a-f-]{36}", reply["data"]["uuid"])
    with real_switch.esl() as esl:
        assert channels(esl) == []


def test_readme_shows_the_quoted_transfer():
    """Plain file check: the README documents the originate's application as engine/calls/originate.py
    sends it, single-quoted (DESIGN.md: originate splits its arguments on spaces outside single quotes)."""
    from tests.realswitch.freeswitch import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Click-to-call"):readme.index("### Event push")]
    assert "transfer('${switchdesk_dst_num} XML <domain>')" in section
    assert "transfer(${switchdesk_dst_num} XML" not in section
