"""The engine against the emulator over the real wire protocol: sync on connect, on change, after a
FreeSWITCH restart; device registrations; /api/status."""
from __future__ import annotations

import gevent
import gevent.event
import pytest

from api import create_app
from engine.engine import Engine
from engine.events.outbox import emit
from engine.store import changes
from engine.store.db import db
from engine.store.models import Account, Device, OutboxEvent, Queue, Tier, User
from tests.fakeswitch.callcenter import CallCenter
from tests.support import listed, provider, wait_until


@pytest.fixture
def engine(switch):
    eng = Engine("127.0.0.1", switch.port, "ClueCon", resync_every=3600).start()
    assert eng.commands.wait_connected(10) and eng.events.wait_connected(10)
    yield eng
    eng.stop()


@pytest.fixture
def world(database):
    account = Account.create(name="Acme", domain="shop.test")
    queue = Queue.create(account=account, name="Support")
    agent = User.create(account=account, name="Alice", username="alice", username_key="alice",
                        email="alice@shop.test", email_key="alice@shop.test", password_hash="x", is_agent=True)
    Tier.create(account=account, queue=queue, user=agent, joined=True)
    device = Device.create(account=account, name="Desk", sip_username="2001", sip_a1_hash="0" * 32)
    return account, queue, agent, device


def test_sync_on_connect(world, switch, engine):
    account, queue, agent, _ = world
    assert engine.wait_synced(10)
    assert f"{queue.id}@shop.test" in listed(switch, "queue")
    assert listed(switch, "agent")[f"{agent.id}@shop.test"]["status"] == "Logged Out"
    assert (f"{queue.id}@shop.test", f"{agent.id}@shop.test") in listed(switch, "tier")
    # queue load makes FreeSWITCH fetch callcenter.conf from us: a background job with our own
    # Job-UUID; agents and tiers go pipelined as plain api on the command connection
    loads = [c for c in switch.received if c.line.startswith("bgapi callcenter_config queue load")]
    assert loads and all(c.headers.get("Job-UUID") for c in loads)
    assert any(c.line.startswith("api callcenter_config tier add") for c in switch.received)
    assert not any(c.line.startswith("api callcenter_config queue load") for c in switch.received)


def test_agent_change_is_pushed_alone(world, switch, engine):
    """A change to one agent re-reads and pushes that agent only, not the three lists."""
    account, queue, agent, _ = world
    assert engine.wait_synced(10)
    before = len(switch.received)
    Tier.update(level=4).where(Tier.user == agent.id).execute()
    changes.notify("tier", account.id, [agent.id])
    wait_until(lambda: listed(switch, "tier").get((f"{queue.id}@shop.test", f"{agent.id}@shop.test"),
                                                  {}).get("level") == "4")
    sent = [c.line for c in switch.received[before:]]
    assert f"api callcenter_config agent list {agent.id}@shop.test" in sent
    assert not any(line.endswith(("tier list", "queue list", "agent list")) for line in sent)
    # a change for an account another box owns is not this engine's business
    engine.account_ids = [account.id + 1000]
    before = len(switch.received)
    changes.notify("tier", account.id, [agent.id])
    gevent.sleep(0.1)
    assert switch.received[before:] == []


def test_api_change_reaches_the_switch(world, switch, engine, tenant):
    assert engine.wait_synced(10)
    app = create_app({"TESTING": True, "ENGINE": engine})
    client = app.test_client()
    r = client.post("/api/cc_queue", json={"name": "Sales", "strategy": "ring-all", "time_base_score": "system"},
                    headers=tenant.auth())
    assert r.status_code == 200, r.get_json()
    new_id = r.get_json()["data"]["id"]
    domain = Account.get_by_id(tenant.account_id).domain
    wait_until(lambda: f"{new_id}@{domain}" in listed(switch, "queue"))
    status = client.get("/api/status", headers=tenant.auth()).get_json()["data"]
    assert status["engine"] is True and status["freeswitch"]["connected"] is True
    assert status["sync"]["errors"] == 0


def test_full_sync_asked_for_while_one_runs_is_not_lost(world, switch, engine, monkeypatch):
    """The running sync ends by storing the tier cache it read, which used to erase the request: a queue
    created during a sync waited for the five-minute resync (seen on the real switch)."""
    account, queue, _, _ = world
    assert engine.wait_synced(10)
    real_run, in_sync, release, runs = engine.syncer.run, gevent.event.Event(), gevent.event.Event(), []

    def slow_run():
        runs.append(1)
        if len(runs) == 1:
            in_sync.set()
            release.wait(10)
        return real_run()

    monkeypatch.setattr(engine.syncer, "run", slow_run)
    engine.request_sync()
    assert in_sync.wait(10)
    late = Queue.create(account=account, name="Created during the sync")
    changes.notify("queue", account.id, [late.id])
    release.set()
    wait_until(lambda: f"{late.id}@shop.test" in listed(switch, "queue"))
    assert len(runs) == 2


def test_freeswitch_restart_is_healed(world, switch, engine):
    account, queue, agent, _ = world
    assert engine.wait_synced(10)
    switch.callcenter = CallCenter(provider)  # mod_callcenter starts empty
    switch.restart()
    wait_until(lambda: f"{agent.id}@shop.test" in listed(switch, "agent"))
    wait_until(lambda: (f"{queue.id}@shop.test", f"{agent.id}@shop.test") in listed(switch, "tier"))


def test_device_registration_status(world, switch, engine):
    account, _, _, device = world
    switch.wait_for_subscribers(1)
    switch.push_event([("Event-Name", "CUSTOM"), ("Event-Subclass", "sofia::register"), ("profile-name", "internal"),
                       ("contact", '"" <sip:2001@127.0.0.1:5071>'), ("expires", "3600"), ("network-ip", "127.0.0.1"),
                       ("username", "2001"), ("realm", "shop.test"), ("user-agent", "sipp-ua")])
    wait_until(lambda: Device.get_by_id(device.id).registered)
    stored = Device.get_by_id(device.id)
    assert stored.reg_user_agent == "sipp-ua" and stored.reg_network_ip == "127.0.0.1"
    switch.push_event([("Event-Name", "CUSTOM"), ("Event-Subclass", "sofia::unregister"),
                       ("username", "2001"), ("realm", "shop.test")])
    wait_until(lambda: not Device.get_by_id(device.id).registered)


def test_status_without_engine(client, tenant):
    data = client.get("/api/status", headers=tenant.auth()).get_json()["data"]
    assert data == {"engine": False, "freeswitch": {"connected": False},
                    "outbox": {"backlog": 0, "oldest_ts": None, "failed": 0},
                    "recordings": {"recordings_without_call_record": 0, "call_records_without_recording": 0}}


def test_status_outbox_is_the_callers_account_only(client, tenant, other_tenant):
    with db.atomic():
        emit(other_tenant.account_id, "agent:checkout", {"user_id": 1}, ts=1000)
        emit(tenant.account_id, "agent:checkout", {"user_id": 2}, ts=2000)
        failed = emit(tenant.account_id, "agent:checkout", {"user_id": 3}, ts=3000)
    OutboxEvent.update(status="failed").where(OutboxEvent.id == failed.id).execute()
    data = client.get("/api/status", headers=tenant.auth()).get_json()["data"]
    assert data["outbox"] == {"backlog": 1, "oldest_ts": 2000, "failed": 1}
