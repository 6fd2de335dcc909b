"""Agent control through the API: checkInDevice, checkOut, setPause, wrapup, setQueues, the events they
record and the real-time user fields; then the engine against the emulator's mod_callcenter."""
from __future__ import annotations

import datetime as dt
import time
import types

import pytest

from api import create_app
from engine.callcenter import agent_events, agent_runtime, agent_state, agents, pauses, sync
from engine.engine import Engine
from engine.store.models import AgentState, Device, OutboxEvent, PauseReason, Queue, Tier, TimeGroup, User, now
from tests.conftest import Api, make_tenant
from tests.fakeswitch.callcenter import CallCenter
from tests.support import listed, make_agent, provider, wait_until

URL = "/api/cc_agent"


def events(kinds=("agent:", "queue:")):
    rows = OutboxEvent.select().order_by(OutboxEvent.seq)
    return [(e.event, e.data) for e in rows if e.event.startswith(kinds)]


def clear_events():
    OutboxEvent.delete().execute()


@pytest.fixture
def desk(tenant):
    """The tenant's admin as an agent, two devices, and queues with tier modes 1, 2, 3 and 4."""
    User.update(is_agent=True).where(User.id == tenant.admin_id).execute()
    d1 = Device.create(account=tenant.account_id, name="Desk 1", sip_username="2001", sip_a1_hash="0" * 32)
    d2 = Device.create(account=tenant.account_id, name="Desk 2", sip_username="2002", sip_a1_hash="0" * 32)
    queues = {}
    for mode in (1, 2, 3, 4):
        queue = Queue.create(account=tenant.account_id, name=f"Mode {mode}")
        Tier.create(account=tenant.account_id, queue=queue, user=tenant.admin_id, mode=mode)
        queues[mode] = queue.id
    outsider = Queue.create(account=tenant.account_id, name="Not a member").id
    return {"user": tenant.admin_id, "devices": (d1.id, d2.id), "queues": queues, "outsider": outsider}




def check_in(api, device_id, **params):
    return api.get(f"{URL}/checkInDevice", query_string={"device_id": device_id, **params})


def joined(user_id):
    return sorted(t.queue_id for t in Tier.select().where((Tier.user == user_id) & Tier.joined))


def test_check_in_joins_mode_2_3_4_and_reports(api, desk):
    r = check_in(api, desk["devices"][0])
    assert r.status_code == 200 and r.get_json() == {"success": True}
    q = desk["queues"]
    auto = sorted([q[2], q[3], q[4]])
    assert joined(desk["user"]) == auto
    assert events() == [
        ("agent:checkin", {"user_id": desk["user"], "device_id": desk["devices"][0], "device_name": "Desk 1"}),
        ("queue:join", {"user_id": desk["user"], "queues": auto}),
        ("agent:status", {"user_id": desk["user"], "activity_id": 1, "pause_id": 0, "in_calls": 1}),
    ]
    record = api.get(f"/api/user/{desk['user']}").get_json()["data"]
    assert (record["online"], record["device_id"], record["pause_id"], record["activity_id"]) == (
        1, desk["devices"][0], 0, 1)
    assert sorted(record["queues"]) == auto
    # checking in again on the same device changes and reports nothing
    clear_events()
    assert check_in(api, desk["devices"][0]).status_code == 200
    assert events() == []


def test_check_in_bad_input(api, other_api, desk, tenant, other_tenant):
    other_device = Device.create(account=other_tenant.account_id, name="Theirs", sip_username="9", sip_a1_hash="0" * 32)
    r = check_in(api, other_device.id)
    assert r.status_code == 404 and r.get_json()["msg"] == f"Device {other_device.id} not found"
    assert check_in(api, 999999).status_code == 404
    r = api.get(f"{URL}/checkInDevice")
    assert r.status_code == 400 and r.get_json()["msg"].startswith("device_id:")
    assert check_in(api, "abc").status_code == 400
    assert check_in(api, desk["devices"][0], forceCheckOut=2).status_code == 400
    r = check_in(api, desk["devices"][0], user_id=other_tenant.admin_id)
    assert r.status_code == 404 and r.get_json()["msg"] == f"User {other_tenant.admin_id} not found"
    clerk = make_agent(tenant.account_id, "clerk")
    User.update(is_agent=False).where(User.id == clerk.id).execute()
    r = check_in(api, desk["devices"][0], user_id=clerk.id)
    assert r.status_code == 400 and "not an agent" in r.get_json()["msg"]
    assert AgentState.select().where(AgentState.device.is_null(False)).count() == 0
    assert events() == []


def test_busy_device_409_and_force(api, desk, tenant):
    bob = make_agent(tenant.account_id, "bob")
    Tier.create(account=tenant.account_id, queue=desk["queues"][3], user=bob, mode=3)
    assert check_in(api, desk["devices"][0], user_id=bob.id).status_code == 200
    clear_events()
    r = check_in(api, desk["devices"][0])
    assert r.status_code == 409
    assert r.get_json()["msg"] == f"Device {desk['devices'][0]} is in use by user {bob.id}; use forceCheckOut=1"
    assert events() == [] and joined(desk["user"]) == []
    assert check_in(api, desk["devices"][0], forceCheckOut=1).status_code == 200
    got = events()
    assert got[:3] == [
        ("queue:leave", {"user_id": bob.id, "queues": [desk["queues"][3]]}),
        ("agent:checkout", {"user_id": bob.id}),
        ("agent:status", {"user_id": bob.id, "activity_id": 0, "pause_id": 0, "in_calls": 0}),
    ]
    assert got[3][0] == "agent:checkin" and got[3][1]["user_id"] == desk["user"]
    assert AgentState.get_by_id(bob.id).device_id is None and joined(bob.id) == []
    assert AgentState.get_by_id(desk["user"]).device_id == desk["devices"][0]


def test_checked_in_elsewhere_409_and_force_moves(api, desk):
    d1, d2 = desk["devices"]
    assert check_in(api, d1).status_code == 200
    r = check_in(api, d2)
    assert r.status_code == 409
    assert r.get_json()["msg"] == f"User {desk['user']} is checked in on device {d1}; use forceCheckOut=1"
    clear_events()
    assert check_in(api, d2, forceCheckOut="1").status_code == 200
    names = [e for e, _ in events()]
    assert names == ["queue:leave", "agent:checkout", "agent:status", "agent:checkin", "queue:join", "agent:status"]
    assert AgentState.get_by_id(desk["user"]).device_id == d2


def test_check_in_code_path_moves_without_force(desk, tenant):
    """engine.callcenter.agents.check_in is what the ***code handler calls: dialling from the phone moves the agent."""
    d1, d2 = desk["devices"]
    agents.check_in(tenant.account_id, desk["user"], d1, force=False)
    state = agents.check_in(tenant.account_id, desk["user"], d2, force=False)
    assert state.device_id == d2
    bob = make_agent(tenant.account_id, "bob")
    with pytest.raises(agents.ServiceError) as busy:
        agents.check_in(tenant.account_id, bob.id, d2, force=False)
    assert busy.value.status == 409
    assert agents.check_in(tenant.account_id, bob.id, d2, force=True).device_id == d2


def test_check_out(api, desk):
    assert check_in(api, desk["devices"][0]).status_code == 200
    clear_events()
    r = api.get(f"{URL}/checkOut")
    assert r.status_code == 200 and r.get_json() == {"success": True}
    q = desk["queues"]
    assert events() == [
        ("queue:leave", {"user_id": desk["user"], "queues": sorted([q[2], q[3], q[4]])}),
        ("agent:checkout", {"user_id": desk["user"]}),
        ("agent:status", {"user_id": desk["user"], "activity_id": 0, "pause_id": 0, "in_calls": 0}),
    ]
    assert joined(desk["user"]) == []
    record = api.get(f"/api/user/{desk['user']}").get_json()["data"]
    assert (record["online"], record["device_id"], record["queues"], record["activity_id"]) == (0, None, [], 0)
    clear_events()
    assert api.post(f"{URL}/checkOut", json={}).status_code == 200  # POST accepted; already out: no-op
    assert events() == []


def test_deleting_the_device_checks_its_agent_out(api, desk):
    assert check_in(api, desk["devices"][0]).status_code == 200
    clear_events()
    assert api.delete(f"/api/device/{desk['devices'][0]}").status_code == 200
    q = desk["queues"]
    assert events()[:2] == [
        ("queue:leave", {"user_id": desk["user"], "queues": sorted([q[2], q[3], q[4]])}),
        ("agent:checkout", {"user_id": desk["user"]}),
    ]
    assert joined(desk["user"]) == []
    record = api.get(f"/api/user/{desk['user']}").get_json()["data"]
    assert (record["online"], record["device_id"]) == (0, None)


def test_acting_on_others_needs_agents_permission(api, client, desk, tenant, other_tenant):
    r = api.post("/api/user", json={"name": "Clerk", "username": "clerk1", "password": "Ab123456",
                                    "email": "clerk@x.test", "is_agent": True})
    clerk = r.get_json()["data"]["id"]
    clerk_device = Device.create(account=tenant.account_id, name="Clerk desk", sip_username="2009",
                                 sip_a1_hash="0" * 32)
    assert client.post("/api/user/login", json={"username": "clerk1", "password": "Ab123456"}).status_code == 200
    # on itself: no agents permission needed; user_id defaults to the session user
    assert client.get(f"{URL}/checkInDevice?device_id={clerk_device.id}").status_code == 200
    assert AgentState.get_by_id(clerk).device_id == clerk_device.id
    r = client.get(f"{URL}/checkOut?user_id={desk['user']}")
    assert r.status_code == 403 and r.get_json()["msg"] == "Permission denied: agents"
    assert client.get(f"{URL}/checkOut?user_id={clerk}").status_code == 200
    # the admin acts on the clerk; another account's admin cannot see it
    assert check_in(api, clerk_device.id, user_id=clerk).status_code == 200
    assert api.get(f"{URL}/checkOut", query_string={"user_id": other_tenant.admin_id}).status_code == 404
    assert api.get(f"{URL}/checkOut").status_code == 200  # the admin itself
    assert client.get(f"{URL}/checkOut").status_code == 200
    assert client.get(f"{URL}/checkOut", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_set_pause(api, desk, tenant, other_tenant):
    lunch = PauseReason.create(account=tenant.account_id, name="Lunch", max_duration=600)
    coffee = PauseReason.create(account=tenant.account_id, name="Coffee", max_duration=0)
    theirs = PauseReason.create(account=other_tenant.account_id, name="Lunch", max_duration=60)
    r = api.get(f"{URL}/setPause", query_string={"id": lunch.id})
    assert r.status_code == 409 and r.get_json()["msg"] == f"User {desk['user']} is not checked in"
    assert check_in(api, desk["devices"][0]).status_code == 200
    clear_events()
    for bad in (theirs.id, 999999):
        r = api.get(f"{URL}/setPause", query_string={"id": bad})
        assert r.status_code == 400 and r.get_json()["msg"] == f"id: no pause reason with id {bad}"
    system = pauses.system_reason(tenant.account_id)
    r = api.get(f"{URL}/setPause", query_string={"id": system.id})
    assert r.status_code == 400 and "cannot be chosen" in r.get_json()["msg"]
    assert api.get(f"{URL}/setPause").status_code == 400
    assert api.get(f"{URL}/setPause", query_string={"id": -1}).status_code == 400
    assert events() == []

    before = now()
    assert api.get(f"{URL}/setPause", query_string={"id": lunch.id}).status_code == 200
    state = AgentState.get_by_id(desk["user"])
    assert state.pause_id == lunch.id and before + 600 <= state.pause_until <= now() + 600
    assert events() == [("agent:status", {"user_id": desk["user"], "activity_id": 4, "pause_id": lunch.id,
                                          "in_calls": 1})]
    assert api.get(f"/api/user/{desk['user']}").get_json()["data"]["pause_id"] == lunch.id
    # another reason: reported, open-ended
    assert api.get(f"{URL}/setPause", query_string={"id": coffee.id}).status_code == 200
    state = AgentState.get_by_id(desk["user"])
    assert state.pause_id == coffee.id and state.pause_until is None
    assert events()[-1] == ("agent:status", {"user_id": desk["user"], "activity_id": 4, "pause_id": coffee.id,
                                             "in_calls": 1})
    clear_events()
    assert api.get(f"{URL}/setPause", query_string={"id": 0}).status_code == 200
    assert AgentState.get_by_id(desk["user"]).pause_id is None
    assert events() == [("agent:status", {"user_id": desk["user"], "activity_id": 1, "pause_id": 0, "in_calls": 1})]
    clear_events()
    assert api.get(f"{URL}/setPause", query_string={"id": 0}).status_code == 200  # already available
    assert events() == []


def test_pause_extension_limited_by_max_snooze(api, desk, tenant):
    User.update(max_snooze=2).where(User.id == desk["user"]).execute()
    lunch = PauseReason.create(account=tenant.account_id, name="Lunch", max_duration=300)
    assert check_in(api, desk["devices"][0]).status_code == 200
    assert api.get(f"{URL}/setPause", query_string={"id": lunch.id}).status_code == 200
    AgentState.update(pause_until=now() + 10).where(AgentState.user == desk["user"]).execute()
    clear_events()
    for snoozes in (1, 2):
        assert api.get(f"{URL}/setPause", query_string={"id": lunch.id}).status_code == 200
        state = AgentState.get_by_id(desk["user"])
        assert state.snoozes == snoozes and state.pause_until >= now() + 299
    r = api.get(f"{URL}/setPause", query_string={"id": lunch.id})
    assert r.status_code == 409
    assert r.get_json()["msg"] == f"Pause {lunch.id} was already extended 2 time(s): max_snooze is 2"
    assert events() == []  # extending changes neither activity nor pause id


def test_pause_ends_by_timer(api, desk, tenant):
    lunch = PauseReason.create(account=tenant.account_id, name="Lunch", max_duration=30)
    assert check_in(api, desk["devices"][0]).status_code == 200
    assert api.get(f"{URL}/setPause", query_string={"id": lunch.id}).status_code == 200
    until = AgentState.get_by_id(desk["user"]).pause_until
    clear_events()
    assert agent_state.due(until - 1) == until  # not yet: the next deadline is the pause's end
    assert events() == []
    assert agent_state.due(until) is None
    assert AgentState.get_by_id(desk["user"]).pause_id is None
    assert events() == [("agent:status", {"user_id": desk["user"], "activity_id": 1, "pause_id": 0, "in_calls": 1})]


def test_wrapup(api, desk, tenant):
    r = api.get(f"{URL}/wrapup", query_string={"seconds": 5})
    assert r.status_code == 409
    assert check_in(api, desk["devices"][0]).status_code == 200
    clear_events()
    assert api.get(f"{URL}/wrapup", query_string={"seconds": -1}).status_code == 400
    assert api.get(f"{URL}/wrapup", query_string={"seconds": "x"}).status_code == 400
    t = now()
    assert api.get(f"{URL}/wrapup", query_string={"seconds": 20}).status_code == 200
    until = AgentState.get_by_id(desk["user"]).wrapup_until
    assert t + 20 <= until <= now() + 20
    assert events() == [("agent:status", {"user_id": desk["user"], "activity_id": 3, "pause_id": 0, "in_calls": 1})]
    assert agent_state.runtime([desk["user"]], at=t)[desk["user"]]["ready_time"] == str(until)
    clear_events()
    assert agent_state.due(until) is None
    assert AgentState.get_by_id(desk["user"]).wrapup_until is None
    assert events() == [("agent:status", {"user_id": desk["user"], "activity_id": 1, "pause_id": 0, "in_calls": 1})]
    # omitted: the user's own wrap_up_time, else the account's
    User.update(wrap_up_time=45).where(User.id == desk["user"]).execute()
    t = now()
    assert api.post(f"{URL}/wrapup", json={}).status_code == 200
    assert t + 45 <= AgentState.get_by_id(desk["user"]).wrapup_until <= now() + 45
    # 0 ends it now, and also mod_callcenter's own window after the last queue call
    AgentState.update(last_bridge_end=now() - 5).where(AgentState.user == desk["user"]).execute()
    clear_events()
    assert api.get(f"{URL}/wrapup", query_string={"seconds": 0}).status_code == 200
    state = AgentState.get_by_id(desk["user"])
    assert state.wrapup_until is None and state.native_wrapup_suppressed_until == state.last_bridge_end + 46
    values = agent_state.runtime([desk["user"]])[desk["user"]]
    assert values["wrap_up_time"] == "0" and values["ready_time"] == "0"
    assert events() == [("agent:status", {"user_id": desk["user"], "activity_id": 1, "pause_id": 0, "in_calls": 1})]
    agent_state.due(state.native_wrapup_suppressed_until)
    assert "wrap_up_time" not in agent_state.runtime([desk["user"]])[desk["user"]]  # restored


def test_set_queues(api, desk, tenant, other_tenant):
    q = desk["queues"]
    r = api.get(f"{URL}/setQueues", query_string={"queue_ids": str(q[1])})
    assert r.status_code == 409  # not checked in
    assert check_in(api, desk["devices"][0]).status_code == 200
    clear_events()
    theirs = Queue.create(account=other_tenant.account_id, name="Theirs").id
    r = api.get(f"{URL}/setQueues", query_string={"queue_ids": f"{q[1]},{desk['outsider']},{theirs}"})
    assert r.status_code == 400
    low, high = sorted([desk["outsider"], theirs])
    assert r.get_json()["msg"] == f"queue_ids: user {desk['user']} is not a member of queue {low}, {high}"
    assert r.get_json()["data"] == {"ids": [low, high]}
    assert api.get(f"{URL}/setQueues").status_code == 400
    assert api.get(f"{URL}/setQueues", query_string={"queue_ids": "1,x"}).status_code == 400
    assert events() == [] and joined(desk["user"]) == sorted([q[2], q[3], q[4]])

    # join 1, leave 3; 2 and 4 are not self-service and stay joined although not listed
    r = api.post(f"{URL}/setQueues", json={"queue_ids": [q[1]]})
    assert r.status_code == 200, r.get_json()
    data = r.get_json()["data"]
    # the vendor document's answer: queue objects (every membership), `users` as 7-item rows; plus `joined`
    assert sorted(queue["id"] for queue in data if queue["joined"]) == sorted([q[1], q[2], q[4]])
    assert sorted(queue["id"] for queue in data) == sorted(q.values())
    rows = {queue["id"]: queue for queue in data}
    for key in ("id", "account_id", "site_id", "name", "tv_name", "strategy", "record", "users"):
        assert key in rows[q[3]], key
    assert rows[q[3]]["name"] == "Mode 3" and rows[q[3]]["account_id"] == tenant.account_id
    mine = [row for row in rows[q[3]]["users"] if row[0] == desk["user"]]
    assert mine == [[desk["user"], 3, 1, 1, User.get_by_id(desk["user"]).name, None, False]]
    assert next(row for row in rows[q[1]]["users"] if row[0] == desk["user"])[6] is True
    assert events() == [("queue:join", {"user_id": desk["user"], "queues": [q[1]]}),
                        ("queue:leave", {"user_id": desk["user"], "queues": [q[3]]})]
    assert joined(desk["user"]) == sorted([q[1], q[2], q[4]])
    clear_events()
    # the same set again: nothing to report; an empty list leaves every self-service queue
    assert api.get(f"{URL}/setQueues", query_string={"queue_ids": f"{q[1]},{q[4]}"}).status_code == 200
    assert events() == []
    assert api.get(f"{URL}/setQueues", query_string={"queue_ids": ""}).status_code == 200
    assert joined(desk["user"]) == sorted([q[2], q[4]])
    # a mode-2 tier that is not joined cannot be joined by setQueues
    Tier.update(joined=False).where(Tier.queue == q[2]).execute()
    r = api.get(f"{URL}/setQueues", query_string={"queue_ids": str(q[2])})
    assert r.status_code == 400 and r.get_json()["data"] == {"ids": [q[2]]}


def test_locked_tier_added_while_checked_in_is_joined(desk, tenant):
    agents.check_in(tenant.account_id, desk["user"], desk["devices"][0], force=False)
    extra = Queue.create(account=tenant.account_id, name="Late").id
    Tier.create(account=tenant.account_id, queue=extra, user=desk["user"], mode=4)
    clear_events()
    agents.join_locked(tenant.account_id, [desk["user"]])
    assert extra in joined(desk["user"])
    assert events() == [("queue:join", {"user_id": desk["user"], "queues": [extra]})]
    # setQueues never leaves a locked tier, and joins one it finds left
    Tier.update(joined=False).where(Tier.queue == extra).execute()
    clear_events()
    agents.set_queues(tenant.account_id, desk["user"], [])
    assert extra in joined(desk["user"]) and desk["queues"][4] in joined(desk["user"])
    assert events() == [("queue:join", {"user_id": desk["user"], "queues": [extra]}),
                        ("queue:leave", {"user_id": desk["user"], "queues": [desk["queues"][3]]})]


def test_runtime_values(desk, tenant):
    user = desk["user"]
    assert agent_state.runtime([user]) == {}  # never checked in: sync's defaults (Logged Out)
    agents.check_in(tenant.account_id, user, desk["devices"][0], force=False)
    t = now()
    assert agent_state.runtime([user], at=t)[user] == {"contact": "[leg_timeout=30]user/2001@acme.test",
                                                  "status": "Available", "ready_time": "0"}
    lunch = PauseReason.create(account=tenant.account_id, name="Lunch", max_duration=0)
    agents.set_pause(tenant.account_id, user, lunch.id)
    assert agent_state.runtime([user], at=t)[user]["ready_time"] == str(agent_state.OPEN_ENDED)
    assert agent_events.record_system_break(tenant.account_id, user)
    values = agent_state.runtime([user], at=t)[user]
    assert values["status"] == "On Break" and values["ready_time"] == "0"
    agents.check_out(tenant.account_id, user)
    assert agent_state.runtime([user])[user] == {"contact": sync.IDLE_CONTACT, "status": "Logged Out",
                                            "ready_time": "0"}
    assert agent_state.runtime in sync.RUNTIME_PROVIDERS


def test_freeswitch_observations(desk, tenant):
    user, name = desk["user"], f"{desk['user']}@acme.test"
    User.update(wrap_up_time=30).where(User.id == user).execute()
    agents.check_in(tenant.account_id, user, desk["devices"][0], force=False)
    clear_events()
    agent_events.observe(name, state="Receiving")
    agent_events.observe(name, state="In a queue call")
    ended = now()
    agent_events.observe(name, bridge_end=ended)
    agent_events.observe(name, state="Waiting")
    assert events() == [
        ("agent:status", {"user_id": user, "activity_id": 2, "pause_id": 0, "in_calls": 1}),
        ("agent:status", {"user_id": user, "activity_id": 3, "pause_id": 0, "in_calls": 1}),
    ]
    assert agent_state.due(ended + 30) == ended + 31  # mod_callcenter skips while last_bridge_end >= now - 30
    assert agent_state.due(ended + 31) is None
    assert events()[-1] == ("agent:status", {"user_id": user, "activity_id": 1, "pause_id": 0, "in_calls": 1})
    agent_events.observe("5@elsewhere.test", state="Receiving")  # not ours: ignored
    agent_events.observe(f"{user}@other.test", state="Receiving")
    clear_events()
    # mod_callcenter's max-no-answer: the reserved pause, once
    agent_events.observe(name, status="On Break")
    agent_events.observe(name, status="On Break")
    system = pauses.system_reason(tenant.account_id)
    assert events() == [("agent:status", {"user_id": user, "activity_id": 4, "pause_id": system.id, "in_calls": 1})]
    assert AgentState.get_by_id(user).fs_status == "On Break"
    # the agent ends the break; until mod_callcenter confirms Available, the sync's sighting is that old break
    agents.set_pause(tenant.account_id, user, 0)
    clear_events()
    agent_events.on_break_seen([user])
    assert events() == [] and AgentState.get_by_id(user).pause_id is None
    # a break that happened while the engine was blind: recorded as reconstructed
    agent_events.observe(name, status="Available")
    agent_events.on_break_seen([user])
    assert events() == [("agent:status", {"user_id": user, "activity_id": 4, "pause_id": system.id, "in_calls": 1,
                                          "reconstructed": True})]
    if hasattr(sync, "ON_BREAK_HANDLERS"):
        assert agent_events.on_break_seen in sync.ON_BREAK_HANDLERS


def test_user_list_is_constant_queries(api, desk, tenant, database):
    from tests.querycount import count_queries

    def add(n, start):
        for i in range(start, start + n):
            bob = make_agent(tenant.account_id, f"agent{i}")
            device = Device.create(account=tenant.account_id, name=f"D{i}", sip_username=f"3{i:03d}",
                                   sip_a1_hash="0" * 32)
            agents.check_in(tenant.account_id, bob.id, device.id, force=False)

    add(5, 0)
    api.get("/api/user")  # the key's first use writes last_used once
    with count_queries(database) as few:
        assert len(api.get("/api/user").get_json()["data"]) == 6
    add(20, 5)
    with count_queries(database) as many:
        data = api.get("/api/user").get_json()["data"]
    assert len(data) == 26 and sum(u["online"] for u in data) == 25
    assert few.count == many.count


# --- the engine against the emulator's mod_callcenter ---------------------------------------------------

DOMAIN = "shop.test"


@pytest.fixture
def shop(database):
    return make_tenant("Shop", DOMAIN, "admin")


@pytest.fixture
def shop_api(shop):
    return Api(create_app({"TESTING": True}).test_client(), shop)


def start_engine(switch) -> Engine:
    eng = Engine("127.0.0.1", switch.port, "ClueCon", resync_every=3600).start()
    assert eng.commands.wait_connected(10) and eng.events.wait_connected(10)
    return eng


@pytest.fixture
def engine(switch):
    eng = start_engine(switch)
    yield eng
    eng.stop()


@pytest.fixture
def floor(shop):
    """Two agents (Ann = the admin, position 2; Bob, position 1) in a fewest-calls queue, no wrap-up."""
    User.update(is_agent=True, wrap_up_time=0).where(User.id == shop.admin_id).execute()
    bob = make_agent(shop.account_id, "bob")
    User.update(wrap_up_time=0).where(User.id == bob.id).execute()
    queue = Queue.create(account=shop.account_id, name="Sales", strategy="agent-with-fewest-calls")
    Tier.create(account=shop.account_id, queue=queue, user=shop.admin_id, mode=3, position=2)
    Tier.create(account=shop.account_id, queue=queue, user=bob.id, mode=3, position=1)
    manual = Queue.create(account=shop.account_id, name="Manual")
    Tier.create(account=shop.account_id, queue=manual, user=shop.admin_id, mode=1)
    ann_dev = Device.create(account=shop.account_id, name="Ann", sip_username="2001", sip_a1_hash="0" * 32)
    bob_dev = Device.create(account=shop.account_id, name="Bob", sip_username="2002", sip_a1_hash="0" * 32)
    lunch = PauseReason.create(account=shop.account_id, name="Lunch", max_duration=0)
    return types.SimpleNamespace(ann=shop.admin_id, bob=bob.id, queue=f"{queue.id}@{DOMAIN}",
                                 manual=f"{manual.id}@{DOMAIN}", ann_dev=ann_dev.id, bob_dev=bob_dev.id,
                                 lunch=lunch.id)


def fs_agent(switch, user_id):
    return listed(switch, "agent").get(f"{user_id}@{DOMAIN}") or {}


def ready_at(switch, user_id, predicate):
    wait_until(lambda: predicate(int(fs_agent(switch, user_id).get("ready_time") or 0)))


def ok(response):
    assert response.status_code == 200, response.get_json()
    return response


def test_check_in_reaches_mod_callcenter(floor, switch, engine, shop_api):
    assert engine.wait_synced(10)
    assert fs_agent(switch, floor.ann)["status"] == "Logged Out"
    ok(check_in(shop_api, floor.ann_dev))
    agent = f"{floor.ann}@{DOMAIN}"
    wait_until(lambda: fs_agent(switch, floor.ann).get("contact") == f"[leg_timeout=30]user/2001@{DOMAIN}"
               and fs_agent(switch, floor.ann)["status"] == "Available")
    wait_until(lambda: (floor.queue, agent) in listed(switch, "tier"))
    assert (floor.manual, agent) not in listed(switch, "tier")  # mode 1: only by setQueues
    ok(shop_api.get(f"{URL}/setQueues", query_string={"queue_ids": floor.manual.split("@")[0]}))
    wait_until(lambda: (floor.manual, agent) in listed(switch, "tier"))
    ok(shop_api.get(f"{URL}/checkOut"))
    wait_until(lambda: fs_agent(switch, floor.ann)["status"] == "Logged Out")
    wait_until(lambda: not any(a == agent for _, a in listed(switch, "tier")))
    assert fs_agent(switch, floor.ann)["contact"] == sync.IDLE_CONTACT


def answer_call(cc, queue, caller, expect):
    member = cc.member_join(queue, caller)
    offers = cc.dispatch(queue)
    assert [o.agent_name for o in offers] == [f"{expect}@{DOMAIN}"]
    cc.agent_answered(member, offers[0].agent_name)
    cc.bridge_end(member)


def test_pause_blocks_offers_and_fairness_survives(floor, switch, engine, shop_api):
    """A pause is ready_time, not a status: mod_callcenter's answered-call count is not reset."""
    cc = switch.callcenter
    for user, device in ((floor.ann, floor.ann_dev), (floor.bob, floor.bob_dev)):
        ok(check_in(shop_api, device, user_id=user))
        ok(shop_api.get(f"{URL}/setPause", query_string={"id": floor.lunch, "user_id": user}))
    for user in (floor.ann, floor.bob):
        ready_at(switch, user, lambda r: r == agent_state.OPEN_ENDED)
        assert fs_agent(switch, user)["status"] == "Available"
    wait_until(lambda: len([t for t in listed(switch, "tier") if t[0] == floor.queue]) == 2)
    member = cc.member_join(floor.queue, "caller-1")
    assert cc.dispatch(floor.queue) == []  # both paused: no offer
    ok(shop_api.get(f"{URL}/setPause", query_string={"id": 0, "user_id": floor.bob}))
    ready_at(switch, floor.bob, lambda r: r <= time.time())
    offers = cc.dispatch(floor.queue)
    assert [o.agent_name for o in offers] == [f"{floor.bob}@{DOMAIN}"]
    cc.agent_answered(member, offers[0].agent_name)
    cc.bridge_end(member)
    assert fs_agent(switch, floor.bob)["calls_answered"] == "1"
    # Bob pauses and comes back; then Ann comes back
    ok(shop_api.get(f"{URL}/setPause", query_string={"id": floor.lunch, "user_id": floor.bob}))
    ready_at(switch, floor.bob, lambda r: r == agent_state.OPEN_ENDED)
    ok(shop_api.get(f"{URL}/setPause", query_string={"id": 0, "user_id": floor.bob}))
    ok(shop_api.get(f"{URL}/setPause", query_string={"id": 0}))
    for user in (floor.bob, floor.ann):
        ready_at(switch, user, lambda r: r <= time.time())
    assert fs_agent(switch, floor.bob)["calls_answered"] == "1"  # Available again would have reset it
    # fewest calls: Ann (0) before Bob (1), although Bob's position comes first
    answer_call(cc, floor.queue, "caller-2", floor.ann)


def test_changes_while_freeswitch_is_down_apply_on_reconnect(floor, switch, engine, shop_api):
    ok(check_in(shop_api, floor.ann_dev))
    wait_until(lambda: fs_agent(switch, floor.ann).get("status") == "Available")
    switch.down()
    wait_until(lambda: not engine.commands.connected)
    ok(shop_api.get(f"{URL}/setPause", query_string={"id": floor.lunch}))
    ok(check_in(shop_api, floor.bob_dev, user_id=floor.bob))
    assert AgentState.get_by_id(floor.ann).pause_id == floor.lunch  # committed while FreeSWITCH is away
    switch.up()
    ready_at(switch, floor.ann, lambda r: r == agent_state.OPEN_ENDED)
    wait_until(lambda: fs_agent(switch, floor.bob).get("contact") == f"[leg_timeout=30]user/2002@{DOMAIN}")


def test_restarts_reapply_state_and_timers_resume(floor, switch, engine, shop_api, shop):
    short = PauseReason.create(account=shop.account_id, name="Short", max_duration=2)
    ok(check_in(shop_api, floor.ann_dev))
    ok(shop_api.get(f"{URL}/setPause", query_string={"id": short.id}))
    until = AgentState.get_by_id(floor.ann).pause_until
    ready_at(switch, floor.ann, lambda r: r == until)
    engine.stop()  # switchdesk goes away; FreeSWITCH restarts with an empty mod_callcenter meanwhile
    switch.callcenter = CallCenter(provider)
    switch.restart()
    clear_events()
    again = start_engine(switch)
    try:
        wait_until(lambda: fs_agent(switch, floor.ann).get("contact") == f"[leg_timeout=30]user/2001@{DOMAIN}")
        assert int(fs_agent(switch, floor.ann)["ready_time"]) == until  # the pause, re-applied
        wait_until(lambda: AgentState.get_by_id(floor.ann).pause_id is None, timeout=until - time.time() + 5)
        assert time.time() >= until
        assert events()[-1] == ("agent:status", {"user_id": floor.ann, "activity_id": 1, "pause_id": 0,
                                                 "in_calls": 1})
        ready_at(switch, floor.ann, lambda r: r <= time.time())
    finally:
        again.stop()


def push(switch, cc):
    for ev in cc.last_events:
        switch._push_model_event(ev)


def test_queue_call_activity_and_native_wrapup(floor, switch, engine, shop_api):
    User.update(wrap_up_time=1).where(User.id == floor.bob).execute()
    ok(check_in(shop_api, floor.bob_dev, user_id=floor.bob))
    wait_until(lambda: (floor.queue, f"{floor.bob}@{DOMAIN}") in listed(switch, "tier"))
    switch.wait_for_subscribers(1)
    cc = switch.callcenter
    clear_events()
    member = cc.member_join(floor.queue, "caller-1")
    offers = cc.dispatch(floor.queue)
    push(switch, cc)
    cc.agent_answered(member, offers[0].agent_name)
    push(switch, cc)
    cc.bridge_end(member)
    push(switch, cc)
    status = [d["activity_id"] for e, d in events() if e == "agent:status" and d["user_id"] == floor.bob]
    wait_until(lambda: [d["activity_id"] for e, d in events() if e == "agent:status"] == [2, 3, 1], timeout=5)
    assert status in ([], [2], [2, 3])  # reported in order, wrap-up ended by the timer
    state = AgentState.get_by_id(floor.bob)
    assert state.fs_state == "Waiting" and state.last_bridge_end is not None


def test_max_no_answer_becomes_the_system_pause(floor, switch, engine, shop_api, shop):
    User.update(max_no_answer=1).where(User.id == floor.bob).execute()
    ok(check_in(shop_api, floor.bob_dev, user_id=floor.bob))
    wait_until(lambda: fs_agent(switch, floor.bob).get("max_no_answer") == "1"
               and (floor.queue, f"{floor.bob}@{DOMAIN}") in listed(switch, "tier"))
    switch.wait_for_subscribers(1)
    assert engine.wait_synced(5)
    cc = switch.callcenter
    member = cc.member_join(floor.queue, "caller-1")
    offers = cc.dispatch(floor.queue)
    cc.agent_no_answer(member, offers[0].agent_name)
    push(switch, cc)  # before anything else runs a command: that starts a new last_events
    assert fs_agent(switch, floor.bob)["status"] == "On Break"
    system = pauses.system_reason(shop.account_id)
    wait_until(lambda: AgentState.get_by_id(floor.bob).pause_id == system.id)
    assert ("agent:status", {"user_id": floor.bob, "activity_id": 4, "pause_id": system.id, "in_calls": 1}) in events()
    # the sync keeps it On Break; the agent ends it with setPause 0 (then Available, as mod_callcenter requires)
    assert engine.wait_synced(5)
    assert fs_agent(switch, floor.bob)["status"] == "On Break"
    ok(shop_api.get(f"{URL}/setPause", query_string={"id": 0, "user_id": floor.bob}))
    wait_until(lambda: fs_agent(switch, floor.bob)["status"] == "Available")


def test_on_break_while_blind_is_reconstructed(floor, switch, engine, shop_api, shop):
    ok(check_in(shop_api, floor.bob_dev, user_id=floor.bob))
    wait_until(lambda: fs_agent(switch, floor.bob).get("status") == "Available")
    switch.callcenter.command(f"agent set status {floor.bob}@{DOMAIN} 'On Break'")  # no event reaches us
    clear_events()
    engine.request_sync()
    system = pauses.system_reason(shop.account_id)
    wait_until(lambda: AgentState.get_by_id(floor.bob).pause_id == system.id)
    assert events() == [("agent:status", {"user_id": floor.bob, "activity_id": 4, "pause_id": system.id,
                                          "in_calls": 1, "reconstructed": True})]
    assert engine.wait_synced(5) and fs_agent(switch, floor.bob)["status"] == "On Break"


@pytest.fixture
def shifted(monkeypatch):
    """Move the engine's clock (timers and sync) to a chosen instant, running on from there."""
    offset = {"value": 0.0}

    class ShiftedDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return dt.datetime.fromtimestamp(time.time() + offset["value"], tz)

    monkeypatch.setattr(sync, "dt", types.SimpleNamespace(datetime=ShiftedDatetime, UTC=dt.UTC))
    monkeypatch.setattr(agent_runtime, "clock", lambda: time.time() + offset["value"])

    def to(instant: dt.datetime) -> None:
        offset["value"] = instant.timestamp() - time.time()

    return to


def test_time_group_tier_follows_the_schedule(floor, switch, shop, shop_api, shifted):
    group = TimeGroup.create(account=shop.account_id, name="Day", timezone="Europe/Berlin", ranges=[
        {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "09:00", "end": "17:00"}])
    Tier.update(timegroup=group.id).where(Tier.user == floor.ann).execute()
    # 2026-03-29 is the day Berlin springs forward (02:00 -> 03:00 CET -> CEST): 09:00 CEST is 07:00 UTC
    shifted(dt.datetime(2026, 3, 29, 6, 59, 58, 500000, tzinfo=dt.UTC))
    engine = start_engine(switch)
    try:
        ok(check_in(shop_api, floor.ann_dev))
        tier = (floor.queue, f"{floor.ann}@{DOMAIN}")
        wait_until(lambda: fs_agent(switch, floor.ann).get("status") == "Available")
        assert engine.wait_synced(5) and tier not in listed(switch, "tier")
        wait_until(lambda: tier in listed(switch, "tier"), timeout=5)  # opened at 09:00 local
        shifted(dt.datetime(2026, 3, 29, 14, 59, 58, 500000, tzinfo=dt.UTC))
        engine.agent_runtime.wake()
        wait_until(lambda: tier not in listed(switch, "tier"), timeout=5)  # closed at 17:00 local
    finally:
        engine.stop()


def test_pause_reason_in_force_cannot_be_deleted(api, desk, tenant):
    lunch = PauseReason.create(account=tenant.account_id, name="Lunch", max_duration=0)
    agents.check_in(tenant.account_id, desk["user"], desk["devices"][0], force=False)
    agents.set_pause(tenant.account_id, desk["user"], lunch.id)
    r = api.delete(f"/api/pause/{lunch.id}")
    assert r.status_code == 409
    assert r.get_json()["msg"] == f"Pause reason {lunch.id} is in force for user {desk['user']}"
    agents.set_pause(tenant.account_id, desk["user"], 0)
    assert api.delete(f"/api/pause/{lunch.id}").status_code == 200


def test_what_happened_while_blind_is_reconstructed_on_connect(floor, switch, engine, shop_api):
    ok(check_in(shop_api, floor.bob_dev, user_id=floor.bob))
    wait_until(lambda: (floor.queue, f"{floor.bob}@{DOMAIN}") in listed(switch, "tier"))
    assert engine.wait_synced(5)
    engine.stop()  # switchdesk is away while Bob takes a queue call
    cc = switch.callcenter
    member = cc.member_join(floor.queue, "caller-1")
    cc.agent_answered(member, cc.dispatch(floor.queue)[0].agent_name)
    clear_events()
    again = start_engine(switch)
    try:
        wait_until(lambda: AgentState.get_by_id(floor.bob).fs_state == "In a queue call")
        assert events() == [("agent:status", {"user_id": floor.bob, "activity_id": 2, "pause_id": 0, "in_calls": 1,
                                              "reconstructed": True})]
    finally:
        again.stop()
