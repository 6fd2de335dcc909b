"""The dialer on the real switch, one rich scenario: a progressive campaign over sipp leads that answer,
are busy or stay silent, one of them on the account's do-not-call list, with one agent checked in; switchdesk
is restarted while a lead rings; then a preview campaign worked by the agent (skip one lead, call the next).

The judges: the SIP the phones received (the DNC number's phone never gets an INVITE, the answering lead and
the agent are bridged), `show calls`, the attempts and skips the API reports, and the call events."""
from __future__ import annotations

import time

import pytest

from tests.realswitch.floor import Floor, eventually, invites
from tests.realswitch.switchdesk import Http
from tests.realswitch.test_calls import call_events

pytestmark = pytest.mark.real_freeswitch


def attempts(account, campaign_id: int) -> list[dict]:
    return account.http.get(f"/api/campaign/{campaign_id}/attempts?limit=100")


def test_campaign_dials_leads_into_the_queue_skips_dnc_and_survives_a_restart(real_switch, account):
    floor = Floor(real_switch, account)
    assert real_switch.api("module_exists mod_avmd").strip() == "true"  # freeswitch-conf loads it for amd=1
    account.http("PUT", "/api/account", {"wrap_up_time": 0})
    queue = floor.queue("Dialer", "6601")
    agent = floor.agent("2601")
    floor.join(queue, [agent.user_id])
    floor.check_in(agent, [queue])
    floor.ready(agent)
    # leads are devices of the account reached by their extension (a real campaign's go out a gateway)
    leads = {}
    for sip, number in (("2611", "5611"), ("2612", "5612"), ("2613", "5613"), ("2614", "5614")):
        leads[number] = floor.device(sip, extension=number)[1]
    plist = account.http.post("/api/phone_list", {"name": "Dial me"})
    account.http.post(f"/api/phone_list/{plist['id']}/lead", [
        {"phone": "5611", "name": "Answers", "lead_id": "A-1", "priority": 9},
        {"phone": "5613", "name": "Busy", "lead_id": "B-1", "priority": 8},
        {"phone": "5614", "name": "Do not call", "lead_id": "D-1", "priority": 7},
        {"phone": "5612", "name": "Silent", "lead_id": "S-1", "priority": 6},
    ])
    dnc = account.http.post("/api/phone_list", {"name": "DNC", "type": "dnc"})
    account.http.post(f"/api/phone_list/{dnc['id']}/lead", [{"phone": "5614"}])

    agent_answers = agent.phone.answer(stay_seconds=2)
    lead_answers = leads["5611"].answer(stay_seconds=20, ring_seconds=0.3)
    lead_busy = leads["5613"].busy()
    lead_silent = leads["5612"].ring()
    dnc_phone = leads["5614"].answer(stay_seconds=1, timeout_s=40)
    for phone in (agent.phone, *leads.values()):
        phone.wait_listening()
    campaign = account.http.post("/api/campaign", {
        "name": "Real", "queue_id": queue.id, "list_ids": [plist["id"]], "mode": "progressive",
        "max_attempts": 1, "ring_timeout": 8, "call_script": "SCRIPT-7", "cid_num": "5550100", "amd": 1,
        "local_start": "00:00", "local_end": "24:00"})
    cid = campaign["id"]
    account.http.post(f"/api/campaign/{cid}/start")

    # the answering lead enters the queue and reaches the agent's phone: the two are bridged
    try:
        eventually(lambda: floor.bridged("2611", agent.sip), bool, "the lead bridged to the agent", timeout=15)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nattempts: {attempts(account, cid)}\n"
                             f"stats: {account.http.get(f'/api/campaign/{cid}/stats')}\n"
                             + real_switch.failure_context()) from None
    agent_answers.wait(30)
    assert agent_answers.ok, agent_answers.report() + real_switch.failure_context()
    assert invites(agent_answers), "the agent's phone was not offered the lead"
    # then the busy lead, then the silent one, which rings while switchdesk restarts
    ringing = eventually(lambda: [a for a in attempts(account, cid) if a["phone"] == "5612"], bool,
                         "the silent lead dialled", timeout=20)
    real_switch.sd.stop()
    time.sleep(0.5)
    real_switch.sd.start()
    real_switch.sd.wait_connected(real_switch.http)
    done = eventually(lambda: attempts(account, cid), lambda rows: len(rows) == 3 and all(r["ended"] for r in rows),
                      "every attempt ended", timeout=25)
    by_phone = {a["phone"]: a for a in done}
    assert set(by_phone) == {"5611", "5613", "5612"}, done  # one attempt each: none lost, none repeated
    assert by_phone["5611"]["outcome"] == "answered" and by_phone["5611"]["user_id"] == agent.user_id
    assert by_phone["5613"]["outcome"] == "busy" and by_phone["5613"]["hangup_cause"] == "USER_BUSY"
    assert by_phone["5612"]["outcome"] == "no_answer", by_phone["5612"]
    assert by_phone["5612"]["uuid"] == ringing[0]["uuid"]  # followed again after the restart, not redialled
    lead_silent.wait(30)
    assert len(invites(lead_silent)) == 1, "the silent lead was dialled twice"
    lead_busy.wait(10)
    assert lead_busy.ok, lead_busy.report()
    # the DNC number never reached FreeSWITCH
    skips = account.http.get(f"/api/campaign/{cid}/skips")
    assert [s["phone"] for s in skips] == ["5614"] and "do-not-call list 'DNC'" in skips[0]["reason"]
    dnc_phone.process.terminate()  # it has listened all along: nothing came
    dnc_phone.wait(5)
    assert not invites(dnc_phone)
    stats = account.http.get(f"/api/campaign/{cid}/stats")
    assert stats["leads_left"] == 0 and stats["dialled"] == 3 and stats["answered"] == 1
    assert stats["leads"]["skipped"] == 1 and stats["leads"]["done"] == 3
    # every call event of the answered lead's leg carries the dialer's fields
    leg = by_phone["5611"]["uuid"]
    events = eventually(lambda: call_events(account, id=leg), lambda e: any(x["event"] == "call:end" for x in e),
                        "call events of the lead's leg")
    for e in events:
        assert e["campaign_id"] == str(cid) and e["dialer_id"] == by_phone["5611"]["id"], e
        assert e["lead_id"] == "A-1" and e["lead_name"] == "Answers" and e["call_script"] == "SCRIPT-7", e
    # amd=1: mod_avmd listened on the answered lead (no beep: the call went on to the agent)
    log = real_switch.fs.log_text()
    assert "Invalid Application" not in log, real_switch.failure_context()
    assert f"{by_phone['5611']['uuid']} EXECUTE" in log and "Avmd on channel [sofia/switchdesk/2611@" in log
    lead_answers.wait(30)
    assert lead_answers.ok, lead_answers.report()

    # preview, by the agent itself (its own API key): it is given the next lead, skips it (never dialled),
    # is given the next one and calls it: its own phone rings first, then the lead's, and the two are bridged
    # the agent may use the API, nothing more (no `campaigns`: preview is its own work)
    account.http("PUT", f"/api/user/{agent.user_id}", {"permissions": {"call_center_api": True}})
    agent_http = Http(account.http.base, real_switch.sd.new_api_key(f"agent-{agent.sip}-{floor.tag}"))
    previews = account.http.post("/api/phone_list", {"name": "Preview me"})
    _, preview_phone = floor.device("2615", extension="5615")
    _, skipped_phone = floor.device("2616", extension="5616")
    account.http.post(f"/api/phone_list/{previews['id']}/lead", [
        {"phone": "5616", "name": "Skip me", "lead_id": "P-2", "priority": 9, "tags": "cold"},
        {"phone": "5615", "name": "Call me", "lead_id": "P-1", "priority": 1, "ext_api_vars": {"crm": "77"}},
    ])
    preview = account.http.post("/api/campaign", {
        "name": "Preview", "queue_id": queue.id, "list_ids": [previews["id"]], "mode": "preview",
        "call_script": "SCRIPT-P", "local_start": "00:00", "local_end": "24:00"})
    pid = preview["id"]
    account.http.post(f"/api/campaign/{pid}/start")
    agent_picks_up = agent.phone.answer(stay_seconds=6)
    lead_picks_up = preview_phone.answer(stay_seconds=2, ring_seconds=0.3)
    never_rung = skipped_phone.ring(timeout_s=30)
    for phone in (agent.phone, preview_phone, skipped_phone):
        phone.wait_listening()
    first = agent_http.get(f"/api/campaign/{pid}/preview")
    assert (first["phone"], first["name"], first["tags"], first["call_script"]) == (
        "5616", "Skip me", "cold", "SCRIPT-P"), first
    assert agent_http.post(f"/api/campaign/{pid}/preview/{first['attempt_id']}/skip")["outcome"] == "skipped"
    second = agent_http.get(f"/api/campaign/{pid}/preview")
    assert (second["phone"], second["name"], second["ext_api_vars"]) == ("5615", "Call me", {"crm": "77"})
    placed = agent_http.post(f"/api/campaign/{pid}/preview/{second['attempt_id']}/call", {})
    try:
        eventually(lambda: floor.bridged("2615", agent.sip), bool, "the preview lead bridged to the agent",
                   timeout=10)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{placed}\n{attempts(account, pid)}\n" + real_switch.failure_context()) from None
    lead_picks_up.wait(20)
    agent_picks_up.wait(20)
    assert lead_picks_up.ok, lead_picks_up.report() + real_switch.failure_context()
    assert agent_picks_up.ok, agent_picks_up.report() + real_switch.failure_context()
    assert len(invites(agent_picks_up)) == 1 and len(invites(lead_picks_up)) == 1
    done = eventually(lambda: {a["phone"]: a for a in attempts(account, pid)},
                      lambda rows: all(r["ended"] for r in rows.values()) and len(rows) == 2,
                      "both preview attempts ended", timeout=10)
    assert done["5616"]["outcome"] == "skipped" and done["5615"]["outcome"] == "answered", done
    assert done["5615"]["user_id"] == agent.user_id
    skips = [s["phone"] for s in account.http.get(f"/api/campaign/{pid}/skips")]
    assert skips == ["5616"]
    never_rung.process.terminate()  # listened all along: the skipped lead's phone never rang
    never_rung.wait(5)
    assert not invites(never_rung)
    assert agent_http.get(f"/api/campaign/{pid}/preview") is None  # nothing left to preview
