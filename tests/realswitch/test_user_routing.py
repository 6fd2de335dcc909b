"""Calls to a user on the real switch: `follow_me` rings its devices one after another, `call_timeout`
bounds the ringing, and the unanswered call reaches the user's voicemail box (mod_voicemail, the box served
by switchdesk's directory); the caller's message is then listed and downloaded through /api/voicemail.
The caller's own user overrides its device's caller id (ecnam/ecnum): the INVITEs the phones get show it."""
from __future__ import annotations

import io
import re
import socket
import struct
import threading
import time
import wave

import pytest

from tests.realswitch.floor import USER_PASSWORD, Floor, eventually, first, invites
from tests.realswitch.test_queue_media import ToneSink, upload, wav

pytestmark = pytest.mark.real_freeswitch

TONE = bytes([0x9A]) * 160
GREETING_HZ = 700


def test_follow_me_rings_devices_in_turn_then_voicemail_takes_a_message(real_switch, account):
    floor = Floor(real_switch, account)
    greeting = upload(account, "greeting", wav(GREETING_HZ, 1.0, 16000))
    box = floor.http.post("/api/voicemail", {"name": "Alice's box", "pin": "4321", "greeting_id": greeting["id"]})
    user = floor.http.post("/api/user", {"name": "Alice", "username": f"alice-{floor.tag}", "password": USER_PASSWORD,
                                         "email": f"alice-{floor.tag}@example.com", "follow_me": 2,
                                         "call_timeout": 4, "vm_id": box["id"]})
    assert user["vm_id"] == box["id"] and user["vm_name"] == "Alice's box"
    _, desk = floor.device("2401", user["id"])
    _, mobile = floor.device("2402", user["id"])
    floor.http.post("/api/extension", {"number": "801", "target_type": "user", "target_id": user["id"]})
    # the caller's user shows its own caller id instead of its device's (override_device, ecnam/ecnum)
    bob = floor.http.post("/api/user", {"name": "Bob", "username": f"bob-{floor.tag}", "password": USER_PASSWORD,
                                        "email": f"bob-{floor.tag}@example.com", "override_device": True,
                                        "ecnam": "Front Desk", "ecnum": "5550100"})
    _, caller = floor.device("3401", bob["id"], cid_name="Desk 3401", cid_num="3401")
    desk_rings, mobile_rings = desk.ring(timeout_s=20), mobile.ring(timeout_s=20)
    desk.wait_listening()
    mobile.wait_listening()
    sink = ToneSink()
    sock, stop, speaking = sink.sock, threading.Event(), None
    try:
        call = caller.call("801", hold_seconds=7, rtp_port=sink.port)
        # the caller's leg: speak into it (a steady tone) from the moment FreeSWITCH has a media port for it,
        # until the call ends (mod_voicemail keeps messages of 3 s or more)
        leg = eventually(lambda: [r for r in floor.switch.channels() if "3401@" in (r.get("name") or "")], bool,
                         "the caller's leg")[0]

        def media_port() -> str:
            with real_switch.esl() as esl:
                return esl.api(f"uuid_getvar {leg['uuid']} local_media_port").strip()

        port = int(eventually(media_port, str.isdigit, "the caller's media port", timeout=15))
        speaking = threading.Thread(target=speak, args=(sock, port, stop), daemon=True)
        speaking.start()
        desk_rings.wait(15)
        mobile_rings.wait(15)
        call.wait(30)
    finally:
        stop.set()
        if speaking is not None:
            speaking.join(2)
        sink.close()
    for run in (desk_rings, mobile_rings):
        assert run.ok, run.report() + real_switch.failure_context()
    desk_offer, mobile_offer = invites(desk_rings)[0], invites(mobile_rings)[0]
    for offer in (desk_offer, mobile_offer):
        assert re.search(r'^From: "Front Desk" <sip:5550100@', offer.text, re.M), offer.text
    desk_cancel = first(desk_rings, True, "CANCEL ")
    mobile_cancel = first(mobile_rings, True, "CANCEL ")
    timeline = {"desk": (0, desk_cancel.at - desk_offer.at), "mobile": (mobile_offer.at - desk_offer.at,
                                                                      mobile_cancel.at - desk_offer.at)}
    print(f"\nfollow_me timeline (s from the first INVITE): {timeline}")
    # one after another, 2 s each: the mobile rings only once the desk has stopped
    assert 1.5 < desk_cancel.at - desk_offer.at < 3.6, timeline
    assert mobile_offer.at >= desk_cancel.at - 0.2, timeline
    assert 1.5 < mobile_cancel.at - mobile_offer.at < 3.6, timeline
    assert first(call, True, "SIP/2.0 200"), call.report()
    # the caller heard the box's greeting (a media), answered once the mobile had stopped ringing
    heard = sink.heard(GREETING_HZ)
    assert len(heard) > 30, sink.tones()[:40]
    # the message is in the box, from the caller, and its recording holds what the caller sent
    messages = eventually(lambda: floor.http.get(f"/api/voicemail/{box['id']}/messages"), lambda m: len(m) == 1,
                          "one voicemail message", timeout=10)
    assert messages[0]["cid_number"] == "5550100" and messages[0]["read"] == 0 and messages[0]["seconds"] >= 3, messages
    status, headers, body = download(account, f"/api/voicemail/{box['id']}/messages/{messages[0]['uuid']}/file")
    assert status == 200 and body[:4] == b"RIFF", (status, body[:100])
    with wave.open(io.BytesIO(body)) as recording:
        assert recording.getnframes() / recording.getframerate() >= 3
    # another account's admin does not see it; the box cannot go while Alice has it
    other = real_switch.new_account()
    assert other.http("GET", f"/api/voicemail/{box['id']}/messages")[0] == 404
    assert account.http("DELETE", f"/api/voicemail/{box['id']}")[0] == 409
    assert account.http("DELETE", f"/api/voicemail/{box['id']}/messages/{messages[0]['uuid']}")[0] == 200
    assert floor.http.get(f"/api/voicemail/{box['id']}/messages") == []


def speak(sock: socket.socket, port: int, stop: threading.Event) -> None:
    """PCMU packets of TONE, 20 ms apart, to FreeSWITCH's media port of a leg until `stop` (or 20 s)."""
    for seq in range(1000):
        if stop.is_set():
            return
        sock.sendto(struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x5D5D0002) + TONE, ("127.0.0.1", port))
        time.sleep(0.02)


def download(account, path: str) -> tuple[int, dict, bytes]:
    import urllib.request

    request = urllib.request.Request(account.http.base + path, headers={"Authorization": f"Bearer {account.key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()




def test_pickup_code_takes_a_ringing_call_of_an_intercept_group(real_switch, account):
    """Alice's calls ring her intercept group 7; Bob may intercept group 7 (intercept_other_groups) and dials
    *87 while her phone rings: he gets the caller, her phone stops ringing."""
    floor = Floor(real_switch, account)
    alice = floor.http.post("/api/user", {"name": "Alice", "username": f"alice-{floor.tag}", "password": USER_PASSWORD,
                                          "email": f"alice-{floor.tag}@example.com", "intercept_groups": [7]})
    bob = floor.http.post("/api/user", {"name": "Bob", "username": f"bob-{floor.tag}", "password": USER_PASSWORD,
                                        "email": f"bob-{floor.tag}@example.com", "intercept_other_groups": [7],
                                        "override_device": True, "ocnum": "+14155550100"})
    _, alice_phone = floor.device("2501", alice["id"])
    _, bob_phone = floor.device("2502", bob["id"])
    floor.http.post("/api/extension", {"number": "811", "target_type": "user", "target_id": alice["id"]})
    caller = floor.caller("3501")
    rings = alice_phone.ring(timeout_s=20)
    alice_phone.wait_listening()
    call = caller.call("811", hold_seconds=4)
    eventually(lambda: invites(rings), bool, "Alice's phone rings")
    picked = bob_phone.call("*87", hold_seconds=2)
    eventually(lambda: floor.bridged("3501", "2502"), bool, "the caller bridged to Bob's phone")
    picked.wait(20)
    call.wait(20)
    rings.wait(20)
    assert picked.ok, picked.report() + real_switch.failure_context()
    assert rings.ok and first(rings, True, "CANCEL "), rings.report()
    assert first(call, True, "SIP/2.0 200"), call.report()
    # a user outside the group gets nothing from the code
    carol = floor.http.post("/api/user", {"name": "Carol", "username": f"carol-{floor.tag}", "password": USER_PASSWORD,
                                          "email": f"carol-{floor.tag}@example.com"})
    _, carol_phone = floor.device("2503", carol["id"])
    refused = carol_phone.call("*87", hold_seconds=1)
    refused.wait(20)
    assert not first(refused, True, "SIP/2.0 200"), refused.report()
    # Bob's outside calls show his outbound caller id (ocnum): set just before the bridge to the gateway
    # (none is configured here, so the bridge itself fails)
    account.http.ok("PUT", "/api/account", {"outbound_gateway": "nowhere"})
    before = len(real_switch.fs.log_text())
    bob_phone.call("+14155550123", hold_seconds=1).wait(20)
    executed = re.findall(r"EXECUTE \[depth=0\] sofia/switchdesk/2502@\S+ (\w+\(.*\))",
                          real_switch.fs.log_text()[before:])
    assert executed[-2:] == ["set(effective_caller_id_number=+14155550100)",
                             "bridge(sofia/gateway/nowhere/+14155550123)"], executed
