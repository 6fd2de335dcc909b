"""The harness proves itself: devices made through the API register with FreeSWITCH (which asks our
directory over xml_curl), a wrong password is refused, and a caller waiting in a queue hears hold music."""
from __future__ import annotations

import re
import urllib.request

import pytest

from tests.realswitch.floor import eventually
from tests.realswitch.sipp import RtpSink

pytestmark = pytest.mark.real_freeswitch

PASSWORD = "Desk-phone-pw-1234"


def make_device(account, username: str, **fields) -> dict:
    return account.http.post("/api/device", {"name": f"Desk {username}", "sip_username": username,
                                             "sip_password": PASSWORD, **fields})


def registered_users(real_switch) -> set[str]:
    """user@domain of every registration `sofia status profile switchdesk reg` lists."""
    return set(re.findall(r"^User:\s+(\S+)", real_switch.registrations(), re.M))


def test_device_registers_with_its_password(real_switch, account):
    device = make_device(account, "1001")
    phone = real_switch.phone(account, "1001", PASSWORD)
    run = phone.register()
    assert run.ok, run.report() + real_switch.failure_context()
    assert f"1001@{account.domain}" in registered_users(real_switch)
    # FreeSWITCH found the device in our directory: its variables are the ones switchdesk serves
    assert real_switch.api(f"user_data 1001@{account.domain} var switchdesk_device_id") == str(device["id"])
    # the engine saw sofia::register and the API shows it
    shown = eventually(lambda: account.http.get(f"/api/device/{device['id']}"), lambda d: d["registered"],
                       "device registered in the API")
    assert f":{phone.sip_port}" in (shown["reg_contact"] or "")


def test_wrong_password_is_refused(real_switch, account):
    device = make_device(account, "1002")
    phone = real_switch.phone(account, "1002", PASSWORD)
    run = phone.register(password="Not-the-password-99", expect=403)
    assert run.ok, run.report() + real_switch.failure_context()
    assert "SIP/2.0 403" in run.sip_log()
    assert f"1002@{account.domain}" not in registered_users(real_switch)
    assert account.http.get(f"/api/device/{device['id']}")["registered"] is False


def directory_lookups(real_switch) -> float:
    """xml_curl directory requests switchdesk has answered (its /metrics, by section)."""
    with urllib.request.urlopen(real_switch.sd.base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(value) for value in re.findall(
        r'^switchdesk_http_requests_total\{[^}]*route="/freeswitch/directory"[^}]*\} (\S+)$', text, re.M))


def test_freeswitch_caches_a_device_and_forgets_it_when_it_changes(real_switch, account):
    """Our directory answers are `cacheable`: a second registration costs no lookup. A new password
    works at once and the old one stops working (engine.directory.fscache flushes FreeSWITCH's cache)."""
    device = make_device(account, "1003")
    phone = real_switch.phone(account, "1003", PASSWORD)
    assert phone.register().ok, real_switch.failure_context()
    first = directory_lookups(real_switch)
    assert first >= 1
    run = phone.register()
    assert run.ok, run.report() + real_switch.failure_context()
    assert directory_lookups(real_switch) == first, "the second REGISTER asked our directory again"

    account.http.ok("PUT", f"/api/device/{device['id']}", {"sip_password": "Changed-pw-5678"})
    # the notice flushes over ESL right after the commit; the old password is refused from then on
    eventually(lambda: phone.register(expect=403), lambda run: run.ok, "the old password refused")
    run = phone.register(password="Changed-pw-5678")
    assert run.ok, run.report() + real_switch.failure_context()
    assert directory_lookups(real_switch) > first


def test_unknown_device_is_refused(real_switch, account):
    phone = real_switch.phone(account, "1999", PASSWORD)  # not in the directory
    run = phone.register(expect=403)
    assert run.ok, run.report() + real_switch.failure_context()
    assert f"1999@{account.domain}" not in registered_users(real_switch)


def test_caller_waiting_in_a_queue_hears_hold_music(real_switch, account):
    """local_stream://moh (the queues' moh-sound) plays the overlay's generated chime: RTP with audio in it,
    and no flood of playback errors in FreeSWITCH's log."""
    queue = account.http.post("/api/cc_queue", {"name": "Hold music", "strategy": "longest-idle-agent",
                                                "time_base_score": "system"})
    account.http.post("/api/extension", {"number": "5000", "target_type": "queue", "target_id": queue["id"]})
    make_device(account, "1003")
    phone = real_switch.phone(account, "1003", PASSWORD)
    assert phone.register().ok
    log_before = len(real_switch.fs.log_text())
    sink = RtpSink()
    try:
        call = phone.call("5000", hold_seconds=4, rtp_port=sink.port)
        queue_name = f"{queue['id']}@{account.domain}"
        eventually(lambda: real_switch.api(f"callcenter_config queue count members {queue_name}").strip(),
                   lambda n: n == "1", "caller waiting in the queue")
        call.wait(30)
    finally:
        sink.close()
    log = real_switch.fs.log_text()[log_before:]
    assert call.ok, call.report() + real_switch.failure_context()
    # what a hold-music source that cannot be opened floods the log with (about 1,000 lines a second):
    # "Unknown source moh, trying 'default'" / "Unknown source default" (no such stream or folder), or
    # "Invalid file format" (mod_local_stream not loaded)
    errors = [line for line in log.splitlines()
              if any(mark in line for mark in ("[ERR]", "[CRIT]", "Invalid file format", "Unknown source"))]
    assert len(errors) < 5, f"{len(errors)} errors while waiting, e.g.:\n" + "\n".join(errors[:10])
    assert sink.packets >= 100, f"only {sink.packets} RTP packets in ~4 s of waiting (50/s expected)"
    assert 0 in sink.payload_types
    assert sink.loudest() > 1000, "only silence: the hold music did not play"


def test_call_between_two_devices(real_switch, account):
    """The harness's answering phone: a device's extension rings the registered phone, which answers."""
    make_device(account, "1004")
    make_device(account, "1005", extension="205")
    caller = real_switch.phone(account, "1004", PASSWORD)
    callee = real_switch.phone(account, "1005", PASSWORD)
    assert caller.register().ok and callee.register().ok
    answer = callee.answer(stay_seconds=10)
    call = caller.call("205", hold_seconds=2)
    with real_switch.esl() as esl:
        channels = eventually(lambda: esl.json("show channels as json")["rows"],
                              lambda rows: len(rows) == 2 and all(r.get("callstate") == "ACTIVE" for r in rows),
                              "both legs up")
    assert {r["dest"] for r in channels} >= {"205"}
    call.wait(30)
    answer.wait(30)
    assert call.ok, call.report() + real_switch.failure_context()
    assert answer.ok, answer.report() + real_switch.failure_context()
    assert "BYE sip:" in answer.sip_log()  # the caller's hang-up reached the callee through FreeSWITCH
