"""Sites, `cnum_by_country` and `blf_ext` on the real switch, in one scenario.

Bob works at the Branch site (his desk phone's `site_id`); his user overrides its devices' settings with a
caller number for the United Kingdom (`cnum_by_country`) and a BLF extension (`blf_ext` 820). A colleague's
phone subscribes to 820's dialog events (a BLF key): Bob's calls, from his phone and to it, light it
(mod_sofia presence: NOTIFYs with the dialog `early`, then `confirmed`). His outside calls go through the
site's gateway, showing his UK number to a UK number and the site's number elsewhere (none of those
gateways exists here: the bridge fails, and what FreeSWITCH executed before it is read from its log)."""
from __future__ import annotations

import re

import pytest

from tests.realswitch.floor import USER_PASSWORD, Floor, eventually, first, sip_messages

pytestmark = pytest.mark.real_freeswitch


def dialog_states(run) -> list[str]:
    """The `<state>` of every dialog-info NOTIFY the watcher got, in order."""
    states = []
    for message in sip_messages(run):
        if message.received and message.first_line.startswith("NOTIFY "):
            states += re.findall(r"<state[^>]*>\s*(\w+)\s*</state>", message.text)
    return states


def test_site_gateway_caller_id_by_country_and_blf_lamp(real_switch, account):
    floor = Floor(real_switch, account)
    site = floor.http.post("/api/site", {"name": f"Branch {floor.tag}", "outbound_gateway": "branch-gw",
                                         "cid_name": "Acme Branch", "cid_num": "+442079460000"})
    bob = floor.http.post("/api/user", {"name": "Bob", "username": f"bob-{floor.tag}", "password": USER_PASSWORD,
                                        "email": f"bob-{floor.tag}@example.com", "override_device": True,
                                        "cnum_by_country": {"GB": "+442079460777"}, "sites": [site["id"]]})
    alice = floor.http.post("/api/user", {"name": "Alice", "username": f"alice-{floor.tag}",
                                          "password": USER_PASSWORD, "email": f"alice-{floor.tag}@example.com"})
    _, bob_phone = floor.device("2602", bob["id"], site_id=site["id"], timeout=3)
    _, alice_phone = floor.device("2601", alice["id"])
    watcher = floor.caller("2603")
    floor.http.post("/api/extension", {"number": "820", "target_type": "user", "target_id": bob["id"]})
    floor.http.post("/api/extension", {"number": "821", "target_type": "user", "target_id": alice["id"]})
    assert floor.http.ok("PUT", f"/api/user/{bob['id']}", {"blf_ext": "820"})["blf_ext"] == "820"

    # the lamp: Bob calls Alice (answered after 1 s), then a caller rings Bob (unanswered, 3 s)
    lamp = watcher.subscribe("820")
    eventually(lambda: first(lamp, True, "NOTIFY "), bool, "the first NOTIFY of the subscription")
    assert dialog_states(lamp) == [], lamp.sip_log()  # nothing going on yet: an empty dialog-info
    # the SUBSCRIBE was challenged (auth-subscriptions): only the domain's devices watch its lamps
    assert first(lamp, True, "SIP/2.0 407") or first(lamp, True, "SIP/2.0 401"), lamp.sip_log()
    answers = alice_phone.answer(stay_seconds=1.5, ring_seconds=1)
    alice_phone.wait_listening()
    bob_phone.call("821", hold_seconds=1.5).wait(20)
    answers.wait(10)
    assert answers.ok, answers.report() + real_switch.failure_context()
    eventually(lambda: dialog_states(lamp), lambda s: "confirmed" in s and s[-1] == "terminated",
               "the lamp follows Bob's call to Alice")
    outgoing = dialog_states(lamp)
    rings = bob_phone.ring(timeout_s=15)
    bob_phone.wait_listening()
    floor.caller("2604").call("820", hold_seconds=1).wait(20)
    rings.wait(10)
    assert rings.ok and first(rings, True, "CANCEL "), rings.report()
    states = eventually(lambda: dialog_states(lamp), lambda s: len(s) > len(outgoing) and s[-1] == "terminated",
                        "the lamp follows the call to Bob", timeout=5)
    lamp.stop()
    print(f"\nBLF 820 dialog states: {states}")
    assert outgoing.index("early") < outgoing.index("confirmed"), outgoing
    incoming = states[len(outgoing):]
    assert "early" in incoming and "confirmed" not in incoming, states

    # outside calls: the site's gateway; to the UK Bob's UK number, elsewhere the site's number
    before = len(real_switch.fs.log_text())
    bob_phone.call("+442079460123", hold_seconds=1).wait(20)
    bob_phone.call("+14155550123", hold_seconds=1).wait(20)
    executed = re.findall(r"EXECUTE \[depth=0\] sofia/switchdesk/2602@\S+ (\w+\(.*\))",
                          real_switch.fs.log_text()[before:])
    shown = [e for e in executed if e.startswith(("set(effective_caller_id", "bridge("))]
    assert shown == [
        "set(effective_caller_id_name=Acme Branch)", "set(effective_caller_id_number=+442079460000)",
        "set(effective_caller_id_number=+442079460777)", "bridge(sofia/gateway/branch-gw/+442079460123)",
        "set(effective_caller_id_name=Acme Branch)", "set(effective_caller_id_number=+442079460000)",
        "bridge(sofia/gateway/branch-gw/+14155550123)"], executed
    # the site is in use: it cannot go
    assert account.http("DELETE", f"/api/site/{site['id']}")[0] == 409
