"""The dialer on the emulator: campaigns through the API, a progressive campaign dialled end to end (leads
answering at random, agents taking the calls in mod_callcenter's queue), DNC and calling windows, claims
that never hand out a lead twice, and the reconciliation after a restart."""
from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Iterator

import gevent
import pytest

from api import create_app
from engine.dialer import leads as leadsvc
from engine.dialer import pacing, runner, window
from engine.engine import Engine
from engine.store.db import db
from engine.store.models import (
    Account,
    AgentState,
    Attempt,
    Campaign,
    CampaignLead,
    Device,
    Lead,
    OutboxEvent,
    PhoneList,
    Queue,
    Tier,
)
from tests.fakeswitch.dialer_floor import DialerFloor, LeadBehaviour
from tests.support import make_agent, wait_until

NY_NOON = dt.datetime(2026, 6, 1, 16, 0, tzinfo=dt.UTC)  # 12:00 in New York


def add_leads(account_id: int, name: str, phones: list[str], list_type: str = "leads") -> PhoneList:
    from engine.leads.numbers import phone_key
    plist = PhoneList.create(account=account_id, name=name, name_key=name.lower(), type=list_type,
                             list_rows=len(phones))
    for i, phone in enumerate(phones):
        Lead.create(phone_list=plist.id, phone=phone, phone_key=phone_key(phone, "US"), name=f"Lead {i}",
                    lead_id=f"L{i}", priority=i % 3)
    return plist


def floor_setup(account_id: int, agents: int) -> Queue:
    queue = Queue.create(account=account_id, name="Outbound", strategy="longest-idle-agent")
    for n in range(agents):
        user = make_agent(account_id, f"agent{account_id}x{n}")
        device = Device.create(account=account_id, name=f"d{n}", sip_username=f"70{n:02d}", sip_a1_hash="0" * 32,
                               user=user)
        Tier.create(account=account_id, queue=queue.id, user=user.id, joined=True)
        AgentState.create(user=user.id, account=account_id, device=device.id, checked_in_at=1,
                          fs_status="Available", fs_state="Waiting")
    return queue


# -- the API --


def test_campaign_api_validates_isolates_and_records(api, other_api, tenant):
    plist = add_leads(tenant.account_id, "Leads", ["2125550100"])
    dnc = add_leads(tenant.account_id, "No", ["2125550199"], "dnc")
    queue = Queue.create(account=tenant.account_id, name="Q1")
    body = {"name": "Spring", "queue_id": queue.id, "list_ids": [plist.id], "dnc_list_ids": str(dnc.id),
            "mode": "predictive", "local_start": "09:00", "retry": {"busy": 60}, "call_script": "S1"}
    r = api.post("/api/campaign", json=body)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()["data"]
    assert data["list_ids"] == [plist.id] and data["dnc_list_ids"] == [dnc.id]
    assert data["local_start"] == "09:00" and data["local_end"] == "21:00" and data["retry"]["busy"] == 60
    assert data["status"] == "stopped"
    cid = data["id"]
    # bad input: clear 400s, nothing written
    for bad in ({**body, "name": "X", "mode": "robot"}, {**body, "name": "X", "local_end": "25:00"},
                {**body, "name": "X", "list_ids": []}, {**body, "name": "X", "max_attempts": 10 ** 12},
                {**body, "name": "X", "cid_name": "a\nb"}):
        r = api.post("/api/campaign", json=bad)
        assert r.status_code == 400, (bad, r.get_json())
    assert api.post("/api/campaign", json=body).status_code == 409
    assert Campaign.select().count() == 1
    # another account's ids are 404, its campaign invisible
    other_queue = Queue.create(account=other_api.tenant.account_id, name="Theirs")
    r = api.post("/api/campaign", json={**body, "name": "Y", "queue_id": other_queue.id})
    assert r.status_code == 404
    assert other_api.get(f"/api/campaign/{cid}").status_code == 404
    assert other_api.post(f"/api/campaign/{cid}/start").status_code == 404
    # start populates; stats count the leads
    assert api.post(f"/api/campaign/{cid}/start").get_json()["data"]["status"] == "running"
    stats = api.get(f"/api/campaign/{cid}/stats").get_json()["data"]
    assert stats["leads_left"] == 1 and stats["dialled"] == 0
    assert api.put(f"/api/campaign/{cid}", json={"mode": "progressive"}).get_json()["data"]["mode"] == "progressive"
    assert api.get(f"/api/campaign/{cid}/attempts").get_json()["data"] == []


# -- claiming --


def test_claims_never_hand_out_a_lead_twice_even_from_threads(tenant):
    plist = add_leads(tenant.account_id, "Many", [f"212555{n:04d}" for n in range(200)])
    queue = Queue.create(account=tenant.account_id, name="Q")
    campaign = Campaign.create(account=tenant.account_id, name="C", queue=queue.id, status="running")
    from engine.store.models import CampaignList
    CampaignList.create(campaign=campaign.id, phone_list=plist.id, role="leads")
    runner.clock = lambda: NY_NOON.timestamp()
    try:
        assert leadsvc.populate(campaign.id) == 200
        assert leadsvc.populate(campaign.id) == 0
        got: list[int] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                with db.connection_context():
                    while True:
                        claimed = leadsvc.claim(campaign, 7, f"box-{threading.get_ident()}", zone="UTC",
                                                mode="progressive")
                        if not claimed:
                            return
                        got.extend(c.campaign_lead_id for c in claimed)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(got) == 200 and len(set(got)) == 200
        # by priority, then age
        first = CampaignLead.get_by_id(got[0])
        assert first.priority == 2
    finally:
        runner.clock = __import__("time").time


def test_dnc_and_window_skips_are_recorded(tenant):
    plist = add_leads(tenant.account_id, "Leads", ["2125550100", "+1 212 555 0101", "4155550102", "2125550103"])
    add_leads(tenant.account_id, "Account DNC", ["+12125550101"], "dnc")
    own_dnc = add_leads(tenant.account_id, "Own DNC", ["1-212-555-0103"], "special")
    queue = Queue.create(account=tenant.account_id, name="Q")
    campaign = Campaign.create(account=tenant.account_id, name="C", queue=queue.id, status="running",
                               local_start=9 * 60 + 30)
    from engine.store.models import CampaignList, LeadSkip
    CampaignList.create(campaign=campaign.id, phone_list=plist.id, role="leads")
    CampaignList.create(campaign=campaign.id, phone_list=own_dnc.id, role="dnc")
    # 16:00 UTC: 12:00 in New York, 09:00 in San Francisco (before 09:30 there)
    runner.clock = lambda: NY_NOON.timestamp()
    try:
        leadsvc.populate(campaign.id)
        claimed = leadsvc.claim(campaign, 10, "box", zone="UTC", mode="progressive")
    finally:
        runner.clock = __import__("time").time
    assert [c.phone for c in claimed] == ["2125550100"]
    reasons = {r.campaign_lead.phone_key: r.reason for r in LeadSkip.select()}
    assert "Account DNC" in reasons["+12125550101"] and "Own DNC" in reasons["+12125550103"]
    assert reasons["+14155550102"].startswith("outside the calling window: 09:00 in America/Los_Angeles")
    sf = CampaignLead.get(CampaignLead.phone_key == "+14155550102")
    assert sf.state == "new" and sf.next_at == int(dt.datetime(2026, 6, 1, 16, 30, tzinfo=dt.UTC).timestamp() * 1000)
    assert CampaignLead.get(CampaignLead.phone_key == "+12125550101").state == "skipped"


def test_window_of_numbers_in_several_zones():
    # +1 800 has no single zone: judged in the fallback; a Sydney number by its own zone
    assert window.zones_of("+61291234567", "UTC") == ("Australia/Sydney",)
    assert window.lead_window_reason("+61291234567", "UTC", 8 * 60, 21 * 60, NY_NOON)  # 02:00 in Sydney
    assert window.lead_window_reason("+12125550100", "UTC", 8 * 60, 21 * 60, NY_NOON) is None


def test_predictive_pacing_falls_back_and_dials_ahead():
    p = pacing.Predictive(3.0, 3.0)
    floor = pacing.Floor(free=2, busy=18, ringing=0, waiting=0)
    assert p.lines(floor, pacing.Stats().summary(0)) == 2 and p.fallback
    stats = pacing.Stats(900)
    for i in range(100):
        stats.dialled(i, i % 3 == 0, 10.0 if i % 3 == 0 else None)
        if i % 3 == 0:
            stats.ended(i, False, 60.0 + i)
    summary = stats.summary(100)
    assert summary["answer_rate"] == pytest.approx(34 / 100)
    p.z = 1.0  # a bold margin: the next line may be abandoned with a chance of 16%
    ahead = p.lines(floor, summary, stats, [5.0] * 18)
    assert ahead >= 2 and not p.fallback
    # calls about to end free their agents: more lines than for calls that just began, dialling ahead
    assert p.lines(floor, summary, stats, [150.0] * 18) > ahead
    # far over the cap (the abandons: no agent within 2 s of the answer): no dialling ahead
    for i in range(100, 140):
        stats.ended(i, True, None)
        stats.verdict(i, True)
    assert p.lines(floor, stats.summary(140), stats, [5.0] * 18) == 2


def _learned(ring: float = 10.0) -> pacing.Stats:
    """A window of 100 calls: a third answered after `ring` s, the others ringing out at 25 s; 34 ended."""
    stats = pacing.Stats(900)
    for i in range(100):
        answered = i % 3 == 0
        stats.dialled(i, answered, ring if answered else 25.0)
        if answered:
            stats.ended(i, False, 60.0 + i)
    return stats


def test_predictive_counts_wrap_up_offers_and_ring_times():
    stats = _learned()
    summary = stats.summary(100)
    busy = [5.0] * 18
    p = pacing.Predictive(3.0, 3.0)
    base = p.lines(pacing.Floor(free=2, busy=18, ringing=0, waiting=0), summary, stats, busy)
    # two of the busy agents are in wrap-up, 1 s left: they will take calls, unlike agents just on a call
    wrapping = p.lines(pacing.Floor(free=2, busy=18, ringing=0, waiting=0, wrapping=(1.0, 1.0)), summary, stats,
                       busy[:16])
    assert wrapping > base
    # a waiting lead an agent is being offered needs no other agent: progressive and predictive dial for the
    # free agent, not one fewer (the Receiving agent is already counted busy)
    offered = pacing.Floor(free=1, busy=19, ringing=0, waiting=1, offered=1)
    assert pacing.progressive(offered) == 1
    assert pacing.progressive(pacing.Floor(free=1, busy=19, ringing=0, waiting=1)) == 0
    assert p.lines(offered, summary, stats, busy[:18]) > p.lines(
        pacing.Floor(free=1, busy=19, ringing=0, waiting=1), summary, stats, busy[:18])
    # calls that rang past every answered call's ring time bring no answers: more room than fresh ones
    assert p.lines(pacing.Floor(free=2, busy=18, ringing=6, waiting=0), summary, stats, busy, [20.0] * 6) > \
        p.lines(pacing.Floor(free=2, busy=18, ringing=6, waiting=0), summary, stats, busy, [1.0] * 6)
    # four agents in wrap-up for 15 s more: answers that come after 20 s of ringing find them free, answers
    # after 5 s do not (the ring-time distribution, not its mean, decides)
    floor = pacing.Floor(free=0, busy=20, ringing=0, waiting=0, wrapping=(15.0,) * 4)
    early, late = _learned(ring=5.0), _learned(ring=20.0)
    assert p.lines(floor, late.summary(100), late, busy[:16]) > p.lines(floor, early.summary(100), early,
                                                                          busy[:16]) == 0


def test_predictive_margin_follows_the_abandon_rate():
    stats = _learned()
    summary = stats.summary(100)
    floor = pacing.Floor(free=2, busy=18, ringing=0, waiting=0)
    p = pacing.Predictive(3.0, 3.0)
    p.lines(floor, summary, stats, [100.0] * 18)
    start = p.z
    for _ in range(200):
        p.adapt(summary, False)
    assert p.z < start
    bold, low = p.lines(floor, summary, stats, [100.0] * 18), p.z
    for i in range(400):
        p.adapt(summary, i % 10 == 0)  # 10% abandoned
    assert p.z > low + 1.0
    assert p.lines(floor, summary, stats, [100.0] * 18) < bold
    assert pacing.Z_MIN <= p.z <= pacing.Z_MAX


def test_runner_counts_wrap_up_and_offered_leads(tenant):
    """The floor the pacing sees: an agent in wrap-up is busy with its seconds left, and a waiting lead an
    agent is being offered (that agent Receiving, counted busy) is not also counted as needing an agent."""
    queue = floor_setup(tenant.account_id, 3)
    campaign = Campaign.create(account=tenant.account_id, name="Floor", queue=queue.id, mode="predictive")
    users = [t.user_id for t in Tier.select().where(Tier.queue == queue.id).order_by(Tier.id)]
    at = 1_800_000_000.0
    AgentState.update(last_bridge_end=int(at) - 2).where(AgentState.user == users[0]).execute()
    AgentState.update(fs_state="Receiving").where(AgentState.user == users[1]).execute()
    dialer = runner.Dialer(engine=None, owner="test")
    dialer.wraps[campaign.id] = 5
    dialer.live["a"] = runner.Live(1, campaign.id, "a", at - 10, answered=at - 1, offered=True)
    floor = dialer.floor(campaign, at)
    assert (floor.free, floor.busy, floor.ringing, floor.waiting, floor.offered) == (1, 2, 0, 1, 1)
    assert floor.wrapping == (pytest.approx(4.0),)  # free once last_bridge_end < now - wrap_up_time
    assert pacing.progressive(floor) == 1  # the free agent still gets a line: the offered lead has its agent
    dialer.live["b"] = runner.Live(2, campaign.id, "b", at - 3)
    assert pacing.progressive(dialer.floor(campaign, at)) == 0  # the ringing call will want the free agent


# -- end to end on the emulator --


@pytest.fixture
def engine(switch) -> Iterator[Engine]:
    eng = Engine("127.0.0.1", switch.port, "ClueCon", resync_every=3600)
    eng.start()
    assert eng.commands.wait_connected(10)
    yield eng
    eng.stop()


def test_progressive_campaign_end_to_end(switch, engine, tenant, client, monkeypatch):
    monkeypatch.setattr(runner, "TICK", 0.05)
    Account.update(outbound_gateway="carrier", timezone="America/New_York").where(
        Account.id == tenant.account_id).execute()
    floor = DialerFloor(switch, LeadBehaviour(answer_rate=0.6, busy_rate=0.1, ring=(0.5, 1.5), talk=(1.0, 3.0),
                                              patience=(20.0, 30.0)), scale=20.0, agent_answer=0.5)
    runner.clock = floor.now
    try:
        phones = [f"212555{n:04d}" for n in range(16)]
        plist = add_leads(tenant.account_id, "Leads", phones)
        add_leads(tenant.account_id, "DNC", ["+1 (212) 555-0007"], "dnc")
        queue = floor_setup(tenant.account_id, 3)
        engine.request_sync()
        assert engine.wait_synced(10)
        app = create_app({"TESTING": True, "ENGINE": engine})
        api = app.test_client()
        key = {"Authorization": f"Bearer {tenant.key}"}
        r = api.post("/api/campaign", headers=key, json={
            "name": "E2E", "queue_id": queue.id, "list_ids": [plist.id], "mode": "progressive",
            "max_attempts": 2, "retry": {"no_answer": 0, "busy": 0}, "call_script": "script-9",
            "ring_timeout": 8, "local_start": "00:00", "local_end": "24:00"})
        assert r.status_code == 200, r.get_json()
        cid = r.get_json()["data"]["id"]
        assert api.post(f"/api/campaign/{cid}/start", headers=key).status_code == 200

        def settled() -> bool:
            with db.connection_context():
                return not CampaignLead.select().where(
                    (CampaignLead.campaign == cid) & CampaignLead.state.in_(("new", "retry", "dialing"))).exists()
        wait_until(settled, timeout=60)
        with db.connection_context():
            attempts = list(Attempt.select().where(Attempt.campaign == cid).order_by(Attempt.id))
            outcomes = {a.outcome for a in attempts}
            events = [e for e in OutboxEvent.select().where(OutboxEvent.event.startswith("call:"))]
        # the DNC number (written otherwise) never reached the switch
        dialled = [o.exten_number for o in switch.calls.originates]
        assert "2125550007" not in dialled and len(dialled) == len(attempts)
        assert outcomes <= {"answered", "no_answer", "busy", "abandoned", "hangup"} and "answered" in outcomes
        # never two calls to one lead at once, and never more calls up than agents (progressive)
        spans: dict[str, list[tuple[int, int]]] = {}
        for a in attempts:
            spans.setdefault(a.phone, []).append((a.started_ms, a.ended_ms))
        for phone, items in spans.items():
            items.sort()
            assert all(b[0] >= a[1] for a, b in itertools.pairwise(items)), phone
        # the call events of a dialler call carry the dialer's fields
        answered = next(a for a in attempts if a.outcome == "answered")
        mine = [e.data for e in events if e.data.get("id") == answered.uuid]
        assert mine, "no call events for the lead's leg"
        for data in mine:
            assert data["campaign_id"] == str(cid) and data["dialer_id"] == answered.id
            assert data["lead_id"] == answered.lead_ref and data["lead_name"].startswith("Lead ")
            assert data["call_script"] == "script-9"
        assert answered.user_id is not None and answered.agent_ms is not None
        # the bgapi carried our Job-UUID and queued the lead through mod_callcenter
        sent = switch.wait_for_command("bgapi originate")
        assert "Job-UUID" in sent.headers and f"&callcenter({queue.id}@{tenant.domain})" in sent.args
        stats = api.get(f"/api/campaign/{cid}/stats", headers=key).get_json()["data"]
        assert stats["leads_left"] == 0 and stats["dialled"] == len(attempts) and stats["leads"]["skipped"] == 1
        r = api.post(f"/api/campaign/{cid}/attempts/{answered.id}/disposition", headers=key,
                     json={"disposition": "sale"})
        assert r.get_json()["data"]["disposition"] == "sale"
        page = api.get(f"/api/campaign/{cid}/attempts?limit=5", headers=key).get_json()["data"]
        assert len(page) == 5 and page[0]["id"] == attempts[0].id
    finally:
        runner.clock = __import__("time").time
        floor.stop()


def test_restart_finishes_or_follows_open_attempts(switch, engine, tenant):
    queue = Queue.create(account=tenant.account_id, name="Q")
    plist = add_leads(tenant.account_id, "Leads", ["2125550100", "2125550101", "2125550102"])
    campaign = Campaign.create(account=tenant.account_id, name="C", queue=queue.id, status="paused")
    from engine.store.models import CampaignList
    CampaignList.create(campaign=campaign.id, phone_list=plist.id, role="leads")
    runner.clock = lambda: NY_NOON.timestamp()
    try:
        leadsvc.populate(campaign.id)
        claimed = leadsvc.claim(campaign, 3, engine.dialer.owner, zone="UTC", mode="progressive")
    finally:
        runner.clock = __import__("time").time
    up, gone, talked = sorted(claimed, key=lambda c: c.phone)
    # a call followed before a lost connection, answered, whose end we did not hear
    engine.dialer.live[talked.uuid] = runner.Live(talked.attempt_id, campaign.id, talked.uuid,
                                                  runner.clock() - 60, answered=runner.clock() - 50)
    switch.commands["uuid_exists"] = lambda args: "true" if args.strip() == up.uuid else "false"
    assert engine.dialer.reconcile() == 2
    assert up.uuid in engine.dialer.live and talked.uuid not in engine.dialer.live
    assert Attempt.get_by_id(talked.attempt_id).outcome == "answered"
    assert CampaignLead.get_by_id(talked.campaign_lead_id).state == "done"
    lost = CampaignLead.get_by_id(gone.campaign_lead_id)
    assert lost.state == "retry" and lost.attempts == 0 and lost.last_outcome == "lost"
    assert CampaignLead.get_by_id(up.campaign_lead_id).state == "dialing"
    # the leg followed again ends: its outcome is written once
    switch.push_event(switch.make_event("CHANNEL_HANGUP_COMPLETE", {
        "Unique-ID": up.uuid, "Hangup-Cause": "USER_BUSY"}))
    wait_until(lambda: Attempt.get(Attempt.uuid == up.uuid).outcome == "busy")


def test_click_to_call_for_a_lead_honours_dnc_and_window(api, tenant, switch):
    from engine.dialer import campaigns
    add_leads(tenant.account_id, "DNC", ["2125550111"], "dnc")
    r = api.get("/api/cc_agent/originate", query_string={"destination": "+12125550111", "lead_id": "7",
                                                          "user_id": tenant.admin_id})
    assert r.status_code == 409 and "do-not-call list 'DNC'" in r.get_json()["msg"]
    assert not switch.calls.originates
    # 03:00 in New York: outside 08:00-21:00 at the number
    night = dt.datetime(2026, 6, 1, 7, 0, tzinfo=dt.UTC)
    reason = campaigns.call_check(tenant.account_id, "2125550112", lead_id="8", campaign_id=None, at=night)
    assert reason.startswith("outside the calling window: 03:00 in America/New_York")
    assert campaigns.call_check(tenant.account_id, "2125550112", lead_id="8", campaign_id=None, at=NY_NOON) is None


def test_answering_machine_beep_hangs_up_as_machine(switch, engine, tenant):
    """amd=1: the originate runs avmd_start on answer; mod_avmd's avmd::beep on the lead's leg ends the call
    (uuid_kill) and the attempt is `machine`, retried after retry.machine."""
    Account.update(outbound_gateway="carrier").where(Account.id == tenant.account_id).execute()
    floor = DialerFloor(switch, LeadBehaviour(answer_rate=1.0, busy_rate=0.0, ring=(0.1, 0.2),
                                              patience=(60.0, 60.0)), scale=1.0)
    floor.cc = None  # the lead is answered but nobody runs the queue: it waits until the beep
    try:
        plist = add_leads(tenant.account_id, "Leads", ["2125550100"])
        queue = floor_setup(tenant.account_id, 1)
        campaign = Campaign.create(account=tenant.account_id, name="AMD", queue=queue.id, status="running",
                                   mode="progressive", amd=True, local_start=0, local_end=24 * 60, retry_machine=600)
        from engine.store.models import CampaignList
        CampaignList.create(campaign=campaign.id, phone_list=plist.id, role="leads")
        engine.dialer.wake()
        wait_until(lambda: switch.calls.originates and switch.calls.originates[0].answered_at, timeout=10)
        call = switch.calls.originates[0]
        assert call.variables["execute_on_answer"] == "avmd_start"
        wait_until(lambda: call.uuid in engine.dialer.live and engine.dialer.live[call.uuid].answered)
        switch.push_event(switch.make_event("CUSTOM", {"Unique-ID": call.uuid, "Beep-Status": "DETECTED"},
                                            subclass="avmd::beep"))
        switch.wait_for_command(lambda c: c.args.startswith(f"uuid_kill {call.uuid}"))
        wait_until(lambda: Attempt.get(Attempt.uuid == call.uuid).outcome == "machine")
        row = CampaignLead.get(CampaignLead.campaign == campaign.id)
        assert row.state == "retry" and row.last_outcome == "machine" and row.next_at >= (
            Attempt.get(Attempt.uuid == call.uuid).ended_ms + 600_000)
    finally:
        floor.stop()


def test_preview_holds_the_lead_for_the_agent_then_calls_or_skips(switch, engine, tenant):
    agent_dev = Device.create(account=tenant.account_id, name="Admin desk", sip_username="2001",
                              sip_a1_hash="0" * 32, user=tenant.admin_id, timeout=5)
    switch.calls.register("2001", tenant.domain, answer_after=0.01)
    plist = add_leads(tenant.account_id, "Leads", ["2125550100", "2125550101"])
    queue = Queue.create(account=tenant.account_id, name="Q")
    app = create_app({"TESTING": True, "ENGINE": engine})
    api = app.test_client()
    key = {"Authorization": f"Bearer {tenant.key}"}
    cid = api.post("/api/campaign", headers=key, json={
        "name": "Preview", "queue_id": queue.id, "list_ids": [plist.id], "mode": "preview", "call_script": "P1",
        "local_start": "00:00", "local_end": "24:00"}).get_json()["data"]["id"]
    assert api.get(f"/api/campaign/{cid}/preview", headers=key).status_code == 409  # not started
    api.post(f"/api/campaign/{cid}/start", headers=key)
    first = api.get(f"/api/campaign/{cid}/preview", headers=key).get_json()["data"]
    # priority 1 first
    assert first["name"] == "Lead 1" and first["call_script"] == "P1" and first["ext_api_vars"] == {}
    # the same lead until the agent decides
    assert api.get(f"/api/campaign/{cid}/preview", headers=key).get_json()["data"]["attempt_id"] == \
        first["attempt_id"]
    r = api.post(f"/api/campaign/{cid}/preview/{first['attempt_id']}/skip", headers=key)
    assert r.get_json()["data"]["outcome"] == "skipped"
    second = api.get(f"/api/campaign/{cid}/preview", headers=key).get_json()["data"]
    assert second["phone"] == "2125550100"
    r = api.post(f"/api/campaign/{cid}/preview/{second['attempt_id']}/call", headers=key, json={})
    assert r.status_code == 200 and r.get_json()["success"], r.get_json()
    call = switch.calls.originates[-1]
    assert call.endpoint == f"user/2001@{tenant.domain}" and call.variables["switchdesk_dst_num"] == "2125550100"
    assert call.variables["switchdesk_campaign_id"] == str(cid)
    assert call.variables["switchdesk_dialer_id"] == str(second["attempt_id"])
    assert call.variables["switchdesk_call_script"] == "P1" and call.variables["switchdesk_lead_name"] == "Lead 0"
    # a second call of the same preview is refused while it is up
    again = api.post(f"/api/campaign/{cid}/preview/{second['attempt_id']}/call", headers=key, json={})
    assert again.status_code == 409
    # the agent's leg ends after the bridge: answered
    switch.push_event(switch.make_event("CHANNEL_HANGUP_COMPLETE", {
        "Unique-ID": call.uuid, "Hangup-Cause": "NORMAL_CLEARING", "variable_bridge_epoch": "1700000000"}))
    wait_until(lambda: Attempt.get_by_id(second["attempt_id"]).outcome == "answered")
    skips = api.get(f"/api/campaign/{cid}/skips", headers=key).get_json()["data"]
    assert [s["reason"] for s in skips] == [f"skipped by agent {tenant.admin_id} in preview"]
    assert agent_dev.id


def test_click_to_call_to_an_extension_is_not_a_leads_number(tenant):
    from engine.dialer import campaigns
    from engine.store.models import Extension
    Extension.create(account=tenant.account_id, number="302", target_type="queue", target_id=1)
    night = dt.datetime(2026, 6, 1, 3, 0, tzinfo=dt.UTC)
    assert campaigns.call_check(tenant.account_id, "302", lead_id="L-77", campaign_id=None, at=night) is None
    assert campaigns.call_check(tenant.account_id, "303", lead_id="L-77", campaign_id=None, at=night)


# -- leases: a dead box's leads are taken over --


class _Switch:
    """What a box's dialer asks its switch when it takes a lead over: is the call's leg still up?"""

    def __init__(self, up: set[str]) -> None:
        self.up = up

    def api(self, command: str, check: bool = False) -> str:
        assert command.startswith("uuid_exists ")
        return "true" if command.split()[1] in self.up else "false"


def _box(owner: str, up: set[str]) -> runner.Dialer:
    from types import SimpleNamespace
    box = runner.Dialer(SimpleNamespace(commands=SimpleNamespace(client=_Switch(up)), account_ids=None), owner=owner)
    box.reconciled.set()
    return box


def _leased_campaign(account_id: int, phones: list[str]) -> Campaign:
    from engine.store.models import CampaignList
    plist = add_leads(account_id, "Leased", phones)
    queue = Queue.create(account=account_id, name="LQ")
    campaign = Campaign.create(account=account_id, name="Leased", queue=queue.id, status="running")
    CampaignList.create(campaign=campaign.id, phone_list=plist.id, role="leads")
    leadsvc.populate(campaign.id)
    return campaign


def test_a_dead_boxs_leads_are_taken_over_once_their_lease_runs_out(tenant):
    t = NY_NOON.timestamp()
    runner.clock = lambda: t
    try:
        campaign = _leased_campaign(tenant.account_id, ["2125550100", "2125550101", "2125550102"])
        claimed = leadsvc.claim(campaign, 3, "box-a", zone="UTC", mode="progressive")
        up, gone, talked = sorted(claimed, key=lambda c: c.phone)
        Attempt.update(answered_ms=int(t * 1000) + 5000).where(Attempt.id == talked.attempt_id).execute()
        a, b = _box("box-a", set()), _box("box-b", {up.uuid})
        for c in claimed:
            a.live[c.uuid] = runner.Live(c.attempt_id, campaign.id, c.uuid, t)
        assert {r.lease_until for r in CampaignLead.select()} == {int(t * 1000) + leadsvc.LEASE_MS}
        # box a is alive: it renews; box b takes nothing while the leases run
        b.leases(t + 30)
        a.leases(t + 45)
        b.leases(t + 100)
        assert {(r.owner, r.lease_until) for r in CampaignLead.select()} == {
            ("box-a", int((t + 45) * 1000) + leadsvc.LEASE_MS)}
        assert not b.live and Attempt.select().where(Attempt.owner == "box-b").count() == 0
        # box a dies; once its leases have run out box b takes the leads over: the leg still up on the
        # switch is followed (lead still dialing, now b's, leased again); the others are finished
        b.leases(t + 106)
        assert set(b.live) == {up.uuid}
        row = CampaignLead.get_by_id(up.campaign_lead_id)
        assert (row.state, row.owner, row.lease_until) == ("dialing", "box-b", int((t + 106) * 1000) +
                                                           leadsvc.LEASE_MS)
        assert Attempt.get_by_id(up.attempt_id).owner == "box-b"
        lost = CampaignLead.get_by_id(gone.campaign_lead_id)
        assert (lost.state, lost.attempts, lost.last_outcome, lost.owner) == ("retry", 0, "lost", None)
        assert Attempt.get_by_id(gone.attempt_id).hangup_cause == "LEASE_EXPIRED"
        assert CampaignLead.get_by_id(talked.campaign_lead_id).state == "done"
        # box a was only stalled: renewing, it finds the leads gone to b and stops following them
        a.leases(t + 107)
        assert not a.live
        assert CampaignLead.get_by_id(up.campaign_lead_id).owner == "box-b"
        # the lead whose call is still up is never handed out again; the lost one is
        runner.clock = lambda: t + 107
        again = leadsvc.claim(campaign, 5, "box-b", zone="UTC", mode="progressive")
        assert [c.campaign_lead_id for c in again] == [gone.campaign_lead_id]
        # the followed call ends: written once, by box b
        b._finish(up.uuid, "busy", "USER_BUSY")
        assert Attempt.get_by_id(up.attempt_id).outcome == "busy"
        assert CampaignLead.get_by_id(up.campaign_lead_id).owner is None
    finally:
        runner.clock = __import__("time").time


def test_run_out_leases_are_taken_once_even_from_threads(tenant):
    t = NY_NOON.timestamp()
    runner.clock = lambda: t
    try:
        campaign = _leased_campaign(tenant.account_id, [f"212556{n:04d}" for n in range(40)])
        claimed = leadsvc.claim(campaign, 40, "dead-box", zone="UTC", mode="progressive")
        assert len(claimed) == 40
    finally:
        runner.clock = __import__("time").time
    later = int(t * 1000) + leadsvc.LEASE_MS + 1
    assert leadsvc.reclaim("early-box", None, later - 2) == []  # still leased
    got: list[int] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with db.connection_context():
                while True:
                    taken = leadsvc.reclaim(f"box-{n}", [tenant.account_id], later, limit=3)
                    if not taken:
                        return
                    got.extend(a.id for a in taken)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert sorted(got) == sorted(c.attempt_id for c in claimed)
    owners = {a.id: a.owner for a in Attempt.select()}
    assert all(CampaignLead.get_by_id(c.campaign_lead_id).owner == owners[c.attempt_id] for c in claimed)
    # another account's box takes none of them
    assert leadsvc.reclaim("other", [tenant.account_id + 1000], later + leadsvc.LEASE_MS * 2) == []


def test_an_agent_later_than_2_s_is_an_abandon(tenant):
    """The abandon the pacing caps and the figures show is the issue's: answered, and no agent within 2 s of
    the answer, also when an agent takes the lead later; the agents' pick-up time sets the pacing's grace."""
    from engine.dialer import campaigns as service
    t = NY_NOON.timestamp()
    runner.clock = lambda: t
    try:
        campaign = _leased_campaign(tenant.account_id, ["2125550100", "2125550101", "2125550102"])
        campaign.mode = "predictive"
        campaign.save()
        late, soon, gave_up = sorted(leadsvc.claim(campaign, 3, "test", zone="UTC", mode="predictive"),
                                     key=lambda c: c.phone)
        dialer = runner.Dialer(engine=None, owner="test")
        dialer.wake = lambda: None
        for c, answered in ((late, t - 5), (soon, t - 1), (gave_up, t - 9)):
            dialer.live[c.uuid] = runner.Live(c.attempt_id, campaign.id, c.uuid, t - 20)
            dialer._answered(c.uuid, answered)
        for c in (late, soon):
            runner.clock = lambda: t - 0.5
            dialer.on_callcenter({"CC-Action": "agent-offering", "CC-Member-Session-UUID": c.uuid})
            runner.clock = lambda: t
            dialer.on_callcenter({"CC-Action": "bridge-agent-start", "CC-Member-Session-UUID": c.uuid,
                                  "CC-Agent": "x"})
        stats = dialer.stats_of(campaign.id)
        assert [a for _, a in stats.verdicts] == [True, False]
        assert stats.grace(2.0) == 0.0  # too few pick-ups measured yet
        for n in range(20):
            stats.agent_rang(t, 0.5 + n / 100)
        assert stats.grace(2.0) == pytest.approx(2.0 - 0.67)  # 2 s less the slowest tenth of the pick-ups
        runner.clock = lambda: t + 60
        dialer._finish(gave_up.uuid, "abandoned", "NORMAL_CLEARING")
        dialer._finish(late.uuid, "answered", "NORMAL_CLEARING")
        dialer._finish(soon.uuid, "answered", "NORMAL_CLEARING")
        assert [a for _, a in stats.verdicts] == [True, False, True]
        assert stats.summary(t + 60)["abandon_rate"] == pytest.approx(2 / 3)
        figures = service.figures(tenant.account_id, campaign.id)
        assert (figures["answered"], figures["abandoned"], figures["taken_late"]) == (3, 2, 1)
        assert figures["abandon_rate"] == pytest.approx(66.67)
    finally:
        runner.clock = __import__("time").time


def test_a_connection_lost_before_reconciliation_waits_for_the_next_one(caplog):
    """CI once logged "dialer reconciliation failed" with a traceback for a connection that simply went away."""
    import logging
    from types import SimpleNamespace

    from engine.esl.errors import ConnectionLost

    def gone() -> None:
        raise ConnectionLost("FreeSWITCH is not connected")

    box = runner.Dialer(SimpleNamespace(commands=SimpleNamespace(client=object(), require_client=gone),
                                        events=SimpleNamespace(connected=True), account_ids=None), owner="box")
    box.reconciled.set()
    with caplog.at_level(logging.INFO, logger="switchdesk.dialer"):
        box._on_connect()
    assert not box.reconciled.is_set()  # nothing is taken over until a connection has reconciled
    assert [r.levelno for r in caplog.records if r.name == "switchdesk.dialer"] == [logging.INFO]


def test_stopping_the_engine_stops_what_its_plugins_spawned(switch):
    eng = Engine("127.0.0.1", switch.port, "ClueCon", resync_every=3600).start()
    assert eng.commands.wait_connected(10)
    waiting = eng.group.spawn(gevent.sleep, 60)
    eng.stop()
    assert waiting.dead and not eng.group
