"""Call events from the recorded queue calls, replayed through the emulator into a running Engine.

The recordings (tests/recordings/freeswitch) were made in domain `127.0.0.1`,
context `default`, with queue `support@default` and agents `1001@default` /
`1002@default`. `rewrite()` moves them into a test tenant consistently: the
names become ours (`<queue_id>@acme.test`, `<user_id>@acme.test`), the context
and dialed domain the tenant's domain, and the caller's leg carries what our
directory gives an authenticated device (`switchdesk_device_id`,
`switchdesk_account_id`, `user_context`) — on the agent legs from the point
where FreeSWITCH added the directory's variables in the recording.
"""
from __future__ import annotations

import json
from typing import Any

import gevent
import pytest

from engine.callcenter import fsconfig
from engine.calls import call_fields, callevents
from engine.engine import Engine
from engine.esl.protocol import Event, FrameParser, parse_event
from engine.store.db import db
from engine.store.models import (
    Account,
    ActiveCall,
    Device,
    Did,
    Extension,
    Lead,
    OutboxEvent,
    PhoneList,
    Queue,
    User,
)
from tests.fakeswitch.fixtures import load
from tests.fakeswitch.server import FakeSwitch
from tests.support import wait_until

DOMAIN = "acme.test"
MEMBER = {  # caller leg (member) and agent legs of each recording
    "queue-call-answered": ("326edd3d-327c-4b3c-ab51-8f828f38d687", ["e7806906-3258-4099-8735-714e2d135631"]),
    "abandon-no-agent": ("b75ec45c-e353-4f69-b852-8935e10a0dcd", []),
    "abandon-while-ringing": ("e35cb27a-e21b-460a-9fb5-3d33a27fe8b2", ["70597cbd-a941-4964-8d62-09e678179fe1"]),
    "agent-no-answer": ("5120a327-dfa6-4f3d-aff3-4e8f5168454a",
                        ["e96a403a-e4a1-4fe8-ab6f-e3c119d0d23c", "9a06e74e-9135-4a4e-bdd9-449cd172d9a5"]),
}
CONTEXT_KEYS = {"Caller-Context", "Other-Leg-Context", "variable_user_context"}
DOMAIN_KEYS = {"variable_dialed_domain", "variable_domain_name"}


def recorded(name: str) -> list[Any]:
    """Every event of a transcript, parsed by the engine's own parser (json or plain)."""
    parser = FrameParser()
    return [ev for frame in parser.feed(load(name).received) if (ev := parse_event(frame)) is not None]


@pytest.fixture
def world(database):
    account = Account.get_or_none(Account.domain == DOMAIN) or Account.create(name="Acme", domain=DOMAIN, country="US")
    users = {}
    for name in ("carol", "alice", "bob"):
        users[name] = User.create(account=account, name=name.title(), username=name, username_key=name,
                                  email=f"{name}@{DOMAIN}", email_key=f"{name}@{DOMAIN}", password_hash="x",
                                  is_agent=name != "carol")
    queue = Queue.create(account=account, name="Support", site_id=7)
    devices = {
        "1000": Device.create(account=account, name="Caller", sip_username="1000", sip_a1_hash="0" * 32,
                              user=users["carol"]),
        "1001": Device.create(account=account, name="Alice desk", sip_username="1001", sip_a1_hash="0" * 32,
                              user=users["alice"]),
        "1002": Device.create(account=account, name="Bob desk", sip_username="1002", sip_a1_hash="0" * 32,
                              user=users["bob"]),
    }
    Extension.create(account=account, number="7000", target_type="queue", target_id=queue.id)
    return {"account": account, "queue": queue, "users": users, "devices": devices}


def rewrite(events: list[Any], world: dict[str, Any], scenario: str) -> list[list[tuple[str, Any]]]:
    """The recording's events as header lists, moved into the test tenant (see the module docstring)."""
    queue, users, devices, account = world["queue"], world["users"], world["devices"], world["account"]
    names = {
        "support@default": fsconfig.queue_name(queue.id, DOMAIN),
        "1001@default": fsconfig.agent_name(users["alice"].id, DOMAIN),
        "1002@default": fsconfig.agent_name(users["bob"].id, DOMAIN),
    }
    member, agents = MEMBER[scenario]
    out = []
    for ev in events:
        headers: list[tuple[str, Any]] = []
        for key, value in ev.headers.items():
            if isinstance(value, str):
                value = names.get(value, value)
                if (key in CONTEXT_KEYS and value == "default") or (key in DOMAIN_KEYS and value == "127.0.0.1"):
                    value = DOMAIN
            headers.append((key, value))
        uid = ev.get("Unique-ID")
        dialed = ev.get("variable_dialed_user")
        if uid == member:
            headers += [("variable_switchdesk_account_id", str(account.id)), ("variable_user_context", DOMAIN),
                        ("variable_switchdesk_device_id", str(devices["1000"].id))]
        elif uid in agents and "variable_user_context" in ev and dialed in devices:
            headers += [("variable_switchdesk_account_id", str(account.id)),
                        ("variable_switchdesk_device_id", str(devices[dialed].id))]
        out.append(headers)
    return out


def call_events(**where: Any) -> list[dict[str, Any]]:
    with db.connection_context():
        rows = OutboxEvent.select().where(OutboxEvent.event.startswith("call:")).order_by(OutboxEvent.seq)
        return [{"event": r.event, "ts": r.ts, "account_id": r.account_id, **r.data} for r in rows]


def settle(expected: int) -> list[dict[str, Any]]:
    """Wait for `expected` call events, then make sure no more arrive."""
    wait_until(lambda: len(call_events()) >= expected)
    gevent.sleep(0.3)
    events = call_events()
    assert len(events) == expected, [(e["event"], e["id"]) for e in events]
    return events


def start_engine(switch: FakeSwitch) -> Engine:
    eng = Engine("127.0.0.1", switch.port, "ClueCon", resync_every=3600).start()
    eng.callevents.grace = 0
    assert eng.commands.wait_connected(10) and eng.events.wait_connected(10)
    wait_until(lambda: eng.callevents.reconciles >= 1)  # the reconcile after connect is done
    return eng


@pytest.fixture
def engine(switch, world):
    eng = start_engine(switch)
    yield eng
    eng.stop()


def replay(switch: FakeSwitch, scenario: str, world: dict[str, Any], *, fmt: str = "json") -> None:
    for headers in rewrite(recorded(f"{scenario}.{fmt}.esl"), world, scenario):
        switch.push_event(headers)


def base(world: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """Every documented field, with what all legs of the recorded queue calls share."""
    out = {key: None for key in call_fields.FIELDS}
    out.update(site_id=7, type="queue", dst_num="7000", src_device_id=world["devices"]["1000"].id,
               src_user_id=world["users"]["carol"].id, cid_num="1000", cid_name="Caller 1000",
               queue_id=world["queue"].id)
    out.update(fields)
    return out


def strip(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("event", "account_id")}


# -- the recorded call flows, field by field ------------------------------------------------------------------


def test_queue_call_answered(switch, engine, world):
    member, (agent,) = MEMBER["queue-call-answered"]
    replay(switch, "queue-call-answered", world)
    events = settle(7)
    alice, alice_desk = world["users"]["alice"].id, world["devices"]["1001"].id
    assert [(e["event"], e["id"]) for e in events] == [
        ("call:ring", member), ("call:answer", member), ("call:start", member),
        ("call:ring", agent), ("call:answer", agent), ("call:end", agent), ("call:end", member),
    ]
    assert all(e["account_id"] == world["account"].id for e in events)
    ring, answer, start, a_ring, a_answer, a_end, end = (strip(e) for e in events)
    # the caller's leg: from device 1000 to the queue of extension 7000; the agent known once bridged
    assert ring == base(world, id=member, call_id=member, ts=1795856827)
    assert answer == base(world, id=member, call_id=member, ts=1795856827)
    assert start == base(world, id=member, call_id=member, ts=1795856827)
    assert end == base(world, id=member, call_id=member, ts=1795856833, dst_device_id=alice_desk,
                       dst_user_id=alice, waitms=1080, durationms=6040, progressms=0, billms=6040, cc_wait=1,
                       hangup_cause="NORMAL_CLEARING", canceled=None)
    # the agent's leg: same call, to Alice's desk (the dialed user), Alice as the agent
    agent_leg = {"id": agent, "call_id": member, "dst_device_id": alice_desk, "dst_user_id": alice}
    assert a_ring == base(world, **agent_leg, ts=1795856827)
    assert a_answer == base(world, **agent_leg, ts=1795856828)
    assert a_end == base(world, **agent_leg, ts=1795856833, waitms=1060, durationms=6020, progressms=0,
                         billms=5000, cc_wait=1, hangup_cause="NORMAL_CLEARING", canceled=None)
    # both legs ended: the rows stay only as tombstones
    with db.connection_context():
        assert ActiveCall.select().where(ActiveCall.ended_at.is_null()).count() == 0


def test_abandon_no_agent(switch, engine, world):
    member, _ = MEMBER["abandon-no-agent"]
    replay(switch, "abandon-no-agent", world)
    events = settle(4)
    assert [e["event"] for e in events] == ["call:ring", "call:answer", "call:start", "call:end"]
    assert strip(events[-1]) == base(world, id=member, call_id=member, ts=1795856787, waitms=0, durationms=5040,
                                     progressms=0, billms=5020, cc_wait=5, hangup_cause="NORMAL_CLEARING",
                                     canceled="BREAK_OUT")


def test_abandon_while_ringing(switch, engine, world):
    member, (agent,) = MEMBER["abandon-while-ringing"]
    replay(switch, "abandon-while-ringing", world)
    events = settle(6)
    assert [(e["event"], e["id"]) for e in events] == [
        ("call:ring", member), ("call:answer", member), ("call:start", member),
        ("call:ring", agent), ("call:end", agent), ("call:end", member),
    ]
    bob, bob_desk = world["users"]["bob"].id, world["devices"]["1002"].id
    a_end, end = strip(events[4]), strip(events[5])
    assert a_end["hangup_cause"] == "ORIGINATOR_CANCEL" and a_end["billms"] == 0
    assert a_end == base(world, id=agent, call_id=member, dst_device_id=bob_desk, dst_user_id=bob,
                         ts=a_end["ts"], waitms=a_end["waitms"], durationms=a_end["durationms"],
                         progressms=a_end["progressms"], billms=0, hangup_cause="ORIGINATOR_CANCEL")
    assert end == base(world, id=member, call_id=member, ts=1795856793, waitms=0, durationms=4000, progressms=0,
                       billms=4000, cc_wait=4, hangup_cause="NORMAL_CLEARING", canceled="BREAK_OUT")


def test_agent_no_answer(switch, engine, world):
    member, agents = MEMBER["agent-no-answer"]
    replay(switch, "agent-no-answer", world)
    events = settle(3 + 2 * 2 + 1)
    assert [(e["event"], e["id"]) for e in events] == [
        ("call:ring", member), ("call:answer", member), ("call:start", member),
        ("call:ring", agents[0]), ("call:end", agents[0]),
        ("call:ring", agents[1]), ("call:end", agents[1]),
        ("call:end", member),
    ]
    bob = world["users"]["bob"].id
    for e in (events[4], events[6]):
        assert e["call_id"] == member and e["dst_user_id"] == bob and e["hangup_cause"] == "NO_ANSWER"
        assert e["billms"] == 0 and e["cc_wait"] is None and e["canceled"] is None
    assert strip(events[-1]) == base(world, id=member, call_id=member, ts=1795856779, waitms=0, durationms=20020,
                                     progressms=0, billms=20020, cc_wait=20, hangup_cause="NORMAL_CLEARING",
                                     canceled="BREAK_OUT")


def test_plain_and_json_recordings_give_the_same_events(world):
    """The plain stream (percent-encoded, ARRAY::) through the same parser and handlers gives the same events."""
    def run(fmt: str) -> list[dict[str, Any]]:
        with db.connection_context():
            OutboxEvent.delete().execute()
            ActiveCall.delete().execute()
        plugin = callevents.CallEvents(engine=None)  # a new engine: the legs it keeps in memory start afresh
        for scenario in MEMBER:
            for headers in rewrite(recorded(f"{scenario}.{fmt}.esl"), world, scenario):
                event = Event(dict(headers), None, fmt)
                if event.key in callevents.EVENTS:
                    plugin.on_channel(event)
                elif event.key == "callcenter::info":
                    plugin.on_callcenter(event)
        return [strip(e) | {"event": e["event"]} for e in call_events()]

    from_json = run("json")
    assert len(from_json) == 7 + 4 + 6 + 8
    assert run("plain") == from_json


# -- robustness -------------------------------------------------------------------------------------------------


def test_repeated_events_emit_nothing_twice(switch, engine, world):
    replay(switch, "queue-call-answered", world)
    settle(7)
    replay(switch, "queue-call-answered", world)
    gevent.sleep(0.5)
    assert len(call_events()) == 7


def _leg_events(scenario: str, world: dict[str, Any], uid: str) -> dict[str, list[tuple[str, Any]]]:
    events = rewrite(recorded(f"{scenario}.json.esl"), world, scenario)
    return {dict(h)["Event-Name"]: h for h in events
            if dict(h).get("Unique-ID") == uid and dict(h).get("Event-Name") in callevents.EVENTS}


def test_any_order_keeps_ring_answer_end(switch, engine, world):
    """A leg seen first at its end gets only call:end; one seen first answered gets ring, answer, end."""
    first, _ = MEMBER["abandon-no-agent"]
    legs = _leg_events("abandon-no-agent", world, first)
    for name in ("CHANNEL_HANGUP_COMPLETE", "CHANNEL_CREATE", "CHANNEL_ANSWER"):
        switch.push_event(legs[name])
    events = settle(1)
    assert events[0]["event"] == "call:end" and events[0]["id"] == first
    assert events[0]["canceled"] == "BREAK_OUT" and events[0]["durationms"] == 5040

    second, _ = MEMBER["abandon-while-ringing"]
    legs = _leg_events("abandon-while-ringing", world, second)
    for name in ("CHANNEL_ANSWER", "CHANNEL_CREATE", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ANSWER"):
        switch.push_event(legs[name])
    events = settle(4)[1:]
    assert [(e["event"], e["id"]) for e in events] == [
        ("call:ring", second), ("call:answer", second), ("call:end", second)]


def test_foreign_calls_are_ignored(switch, engine, world):
    """The recordings as they are: domain 127.0.0.1, context default, queue support@default — not ours."""
    for headers in recorded("queue-call-answered.json.esl"):
        switch.push_event(headers.headers)
    unknown = switch.make_event("CHANNEL_CREATE", {"Unique-ID": "no-such", "Call-Direction": "inbound",
                                                   "Caller-Context": "elsewhere.test"})
    switch.push_event(unknown)
    switch.push_event(switch.make_event("CHANNEL_ANSWER", {"Call-Direction": "inbound"}))  # no Unique-ID at all
    gevent.sleep(0.8)
    assert call_events() == []
    with db.connection_context():
        assert ActiveCall.select().count() == 0


def test_checkin_codes_are_not_reported(switch, engine, world):
    member, _ = MEMBER["abandon-no-agent"]
    events = rewrite(recorded("abandon-no-agent.json.esl"), world, "abandon-no-agent")
    create = next(h for h in events if dict(h).get("Event-Name") == "CHANNEL_CREATE")
    switch.push_event([(k, "***123456" if k == "Caller-Destination-Number" else v) for k, v in create])
    gevent.sleep(0.5)
    assert call_events() == []


# -- click-to-call and the fields the dialplan / originate provide ------------------------------------------


def test_outbound_call_fields_from_switchdesk_variables(switch, engine, world):
    """A click-to-call B leg to a gateway: type, number, lead, tags and country come from our variables."""
    account, devices, users = world["account"], world["devices"], world["users"]
    with db.connection_context():
        plist = PhoneList.create(account=account, name="Leads", name_key="leads")
        Lead.create(phone_list=plist, phone="+442071838750", name="Ada Lovelace", lead_id="L-1")
        Lead.create(phone_list=plist, phone="+442071838751", name="Twin A", lead_id="L-2")
        Lead.create(phone_list=plist, phone="+442071838752", name="Twin B", lead_id="L-2")
    a_leg, b_leg = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
    common = {
        "variable_switchdesk_account_id": str(account.id), "variable_switchdesk_call_type": "outbound",
        "variable_switchdesk_src_device_id": str(devices["1001"].id),
        "variable_switchdesk_src_user_id": str(users["alice"].id), "variable_switchdesk_dst_num": "+442071838750",
        "variable_switchdesk_lead_id": "L-1", "variable_switchdesk_tags": "vip,uk",
        "Caller-Caller-ID-Number": "+14155550100", "Caller-Caller-ID-Name": "Acme",
    }
    b = {**common, "Unique-ID": b_leg, "Call-Direction": "outbound", "Caller-Destination-Number": "+442071838750",
         "variable_switchdesk_call_id": a_leg, "FreeSWITCH-Hostname": "vm"}
    switch.push_event(switch.make_event("CHANNEL_CREATE", b))
    switch.push_event(switch.make_event("CHANNEL_PROGRESS_MEDIA", b))
    switch.push_event(switch.make_event("CHANNEL_ANSWER", b))
    switch.push_event(switch.make_event("CHANNEL_HANGUP_COMPLETE", {
        **b, "Hangup-Cause": "NORMAL_CLEARING", "variable_mduration": "9000", "variable_billmsec": "7000",
        "variable_progressmsec": "1500", "variable_waitmsec": "2000"}))
    events = settle(3)
    assert [e["event"] for e in events] == ["call:ring", "call:answer", "call:end"]
    end = strip(events[-1])
    assert end == {key: None for key in call_fields.FIELDS} | {
        "id": b_leg, "call_id": a_leg, "ts": end["ts"], "type": "outbound", "dst_num": "+442071838750",
        "src_device_id": devices["1001"].id, "src_user_id": users["alice"].id, "cid_num": "+14155550100",
        "cid_name": "Acme", "a2": "GB", "tags": "vip,uk", "lead_id": "L-1", "lead_name": "Ada Lovelace",
        "waitms": 2000, "durationms": 9000, "progressms": 1500, "billms": 7000, "hangup_cause": "NORMAL_CLEARING",
    }
    # two leads share L-2: no lead_name
    other = {**b, "Unique-ID": "cccccccc-0000-4000-8000-000000000003", "variable_switchdesk_lead_id": "L-2"}
    switch.push_event(switch.make_event("CHANNEL_PROGRESS", other))
    ring = settle(4)[-1]
    assert ring["lead_id"] == "L-2" and ring["lead_name"] is None and ring["billms"] is None


def test_country_of_number():
    assert call_fields.country_of_number("+442071838750", "US") == "GB"
    assert call_fields.country_of_number("02071838750", "GB") == "GB"
    assert call_fields.country_of_number("+97235550100", "US") == "IL"
    assert call_fields.country_of_number("4155550100", "US") == "US"
    assert call_fields.country_of_number("1000", "US") is None  # an extension
    assert call_fields.country_of_number("+15551234567", "US") is None  # not a number of any region
    assert call_fields.country_of_number(None, "US") is None


# -- events across outages ----------------------------------------------------------------------------------


def _channels(*uuids: str):
    def show(args: str) -> str:
        if args == "channels as json":
            rows = [{"uuid": u, "direction": "inbound", "hostname": "vm"} for u in uuids]
            return json.dumps({"row_count": len(rows), "rows": rows}) + "\n" if rows else '{"row_count": 0}\n'
        return "\n0 total.\n"
    return show


def _start_of(scenario: str, world: dict[str, Any], until: str) -> list[list[tuple[str, Any]]]:
    """The recording up to and including the first event called `until`."""
    out = []
    for headers in rewrite(recorded(f"{scenario}.json.esl"), world, scenario):
        out.append(headers)
        name = dict(headers).get("Event-Name")
        if name == until or dict(headers).get("CC-Action") == until:
            break
    return out


def test_reconnect_reconstructs_the_end_of_vanished_legs(switch, engine, world):
    member, (agent,) = MEMBER["queue-call-answered"]
    gone, _ = MEMBER["abandon-no-agent"]
    for headers in _start_of("queue-call-answered", world, "bridge-agent-start"):
        switch.push_event(headers)
    for headers in _start_of("abandon-no-agent", world, "member-queue-start"):
        switch.push_event(headers)
    settle(5 + 3)
    # FreeSWITCH still has the answered call, the abandoned caller went while we were not listening
    switch.commands["show"] = _channels(member, agent)
    runs = engine.callevents.reconciles
    switch.drop_all()
    wait_until(lambda: engine.callevents.reconciles > runs)
    events = settle(9)
    end = events[-1]
    assert end["event"] == "call:end" and end["id"] == gone and end["reconstructed"] is True
    assert strip(end) == base(world, id=gone, call_id=gone, ts=end["ts"], reconstructed=True)
    # the answered call ends normally later, once
    for headers in rewrite(recorded("queue-call-answered.json.esl"), world, "queue-call-answered"):
        switch.push_event(headers)
    events = settle(11)
    assert [(e["event"], e["id"], e.get("reconstructed")) for e in events[-2:]] == [
        ("call:end", agent, None), ("call:end", member, None)]
    # another reconnect finds nothing left to reconstruct
    switch.commands["show"] = _channels()
    runs = engine.callevents.reconciles
    switch.drop_all()
    wait_until(lambda: engine.callevents.reconciles > runs)
    settle(11)


def test_switchdesk_restart_reconstructs_from_the_database(switch, world):
    member, _ = MEMBER["abandon-while-ringing"]
    eng = start_engine(switch)
    try:
        for headers in _start_of("abandon-while-ringing", world, "CHANNEL_PROGRESS"):
            switch.push_event(headers)
        settle(4)
    finally:
        eng.stop()
    # switchdesk is down while both legs end; a new engine on the same database reconnects
    eng = start_engine(switch)
    try:
        events = settle(6)
        ends = {e["id"]: e for e in events[4:]}
        assert set(ends) == {member, MEMBER["abandon-while-ringing"][1][0]}
        assert all(e["event"] == "call:end" and e["reconstructed"] is True and e["hangup_cause"] is None
                   for e in ends.values())
        assert ends[member]["call_id"] == member and ends[member]["type"] == "queue"
    finally:
        eng.stop()


def test_legs_of_another_freeswitch_box_are_left_alone(switch, engine, world):
    """Several boxes share one database: only the box that has a leg can end it."""
    member, _ = MEMBER["abandon-no-agent"]
    for headers in _start_of("abandon-no-agent", world, "CHANNEL_ANSWER"):
        switch.push_event([(k, "box2" if k == "FreeSWITCH-Hostname" else v) for k, v in headers])
    settle(2)
    runs = engine.callevents.reconciles
    switch.drop_all()
    wait_until(lambda: engine.callevents.reconciles > runs)
    settle(2)
    with db.connection_context():
        assert ActiveCall.get_by_id(member).ended_at is None


def test_events_with_missing_headers(world):
    """Only a Unique-ID and our account: every event type is handled, unknown fields are null."""
    plugin = callevents.CallEvents(engine=None)
    account_id = world["account"].id
    for name in ("CHANNEL_PROGRESS", "CHANNEL_BRIDGE", "CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE"):
        plugin.on_channel(Event({"Event-Name": name, "Unique-ID": "bare",
                                 "variable_switchdesk_account_id": str(account_id)}))
    plugin.on_callcenter(Event({"Event-Name": "CUSTOM", "Event-Subclass": "callcenter::info",
                                "CC-Action": "member-queue-start"}))  # no channel: ignored
    events = call_events()
    assert [e["event"] for e in events] == ["call:ring", "call:answer", "call:end"]
    end = strip(events[-1])
    assert end["id"] == end["call_id"] == "bare" and end["type"] == "outbound"
    assert all(end[key] is None for key in call_fields.FIELDS if key not in ("id", "call_id", "ts", "type"))


class _Client:
    def __init__(self, reply: str):
        self.reply = reply

    def api(self, command: str, timeout: float | None = None) -> str:
        return "vm" if command == "hostname" else self.reply


class _Supervisor:
    def __init__(self, reply: str):
        self.client = _Client(reply)

    def require_client(self) -> _Client:
        return self.client


class _Engine:
    def __init__(self, reply: str):
        self.commands = _Supervisor(reply)


@pytest.mark.parametrize("reply", ["-ERR no reply\n", '{"row_count": 1, "rows": "x"}', "[]"])
def test_unreadable_channel_list_ends_nothing(world, reply):
    plugin = callevents.CallEvents(engine=_Engine(reply), grace=0)
    plugin.on_channel(Event({"Event-Name": "CHANNEL_CREATE", "Unique-ID": "live", "Call-Direction": "inbound",
                             "FreeSWITCH-Hostname": "vm",
                             "variable_switchdesk_account_id": str(world["account"].id)}))
    gevent.sleep(0.01)
    assert plugin.reconcile() == 0
    assert [e["event"] for e in call_events()] == ["call:ring"]
    # a readable empty list does end it
    plugin.engine = _Engine('{"row_count": 0}\n')
    assert plugin.reconcile() == 1
    assert call_events()[-1]["reconstructed"] is True


def test_did_call_is_attributed_before_the_dialplan_runs(world):
    """An inbound call in the `public` context: the DID names the account, the queue and the type."""
    with db.connection_context():
        Did.create(account=world["account"], number="+97235550100", target_type="queue", target_id=world["queue"].id)
    plugin = callevents.CallEvents(engine=None)
    plugin.on_channel(Event({"Event-Name": "CHANNEL_CREATE", "Unique-ID": "did-leg", "Call-Direction": "inbound",
                             "Caller-Context": "public", "Caller-Destination-Number": "97235550100",
                             "Caller-Caller-ID-Number": "+442071838750", "Caller-Caller-ID-Name": "Ada"}))
    (ring,) = call_events()
    assert strip(ring) == base(world, id="did-leg", call_id="did-leg", ts=ring["ts"], dst_num="97235550100",
                               src_device_id=None, src_user_id=None, cid_num="+442071838750", cid_name="Ada",
                               a2="GB")


# -- batches and the legs kept in memory (issue 19) ----------------------------------------------------------


def _replay_direct(plugin: callevents.CallEvents, world: dict[str, Any]) -> None:
    for scenario in MEMBER:
        for headers in rewrite(recorded(f"{scenario}.json.esl"), world, scenario):
            event = Event(dict(headers), None, "json")
            if event.key in callevents.EVENTS:
                plugin.on_channel(event)
            elif event.key == "callcenter::info":
                plugin.on_callcenter(event)


def _reset() -> None:
    with db.connection_context():
        OutboxEvent.delete().execute()
        ActiveCall.delete().execute()


def test_batched_dispatch_gives_the_same_events_in_the_same_order(world):
    """Every event queued before the dispatcher runs: the channel events go in batches (one transaction
    each), callcenter::info alone between them; the outbox is what one event at a time gives."""
    import collections

    from engine.esl.dispatch import EventDispatcher

    _reset()
    _replay_direct(callevents.CallEvents(engine=None), world)
    one_by_one = [strip(e) | {"event": e["event"]} for e in call_events()]
    assert len(one_by_one) == 25
    _reset()

    class Dispatcher(EventDispatcher):
        name, _alive = "test", True
        stats: collections.Counter = collections.Counter()

    plugin = callevents.CallEvents(engine=None)
    dispatcher = Dispatcher()
    dispatcher._init_dispatch(queue_size=10_000, handler_pool_size=1)
    dispatcher.batch, dispatcher.batch_keys = callevents.batch, frozenset(callevents.EVENTS)
    for name in callevents.EVENTS:
        dispatcher.on_event(name, plugin.on_channel)
    dispatcher.on_event("callcenter::info", plugin.on_callcenter)
    for scenario in MEMBER:  # what the engine subscribes to (the recordings have every event)
        for headers in rewrite(recorded(f"{scenario}.json.esl"), world, scenario):
            event = Event(dict(headers), None, "json")
            if event.key in callevents.EVENTS or event.key == "callcenter::info":
                dispatcher._queue.put(event)
    dispatcher._alive = False
    dispatcher._queue.put(None)
    gevent.spawn(dispatcher._dispatch_loop).join(timeout=30)
    assert dispatcher.stats["batches"] >= 5 and dispatcher.stats["batched"] >= 15
    assert dispatcher.stats["handler_errors"] == dispatcher.stats["batch_failures"] == 0
    assert [strip(e) | {"event": e["event"]} for e in call_events()] == one_by_one


def test_a_rolled_back_batch_leaves_no_leg_ahead_of_its_row(world):
    """The ring of a batch that did not commit is emitted by the next event of the leg, as if unheard."""
    from engine.calls import legs
    from engine.store.db import is_sqlite

    if not is_sqlite():
        pytest.skip("batches are SQLite's (on PostgreSQL each event keeps its own transaction)")

    _reset()
    plugin = callevents.CallEvents(engine=None)
    scenario = "queue-call-answered"
    member = MEMBER[scenario][0]
    events = [Event(dict(h), None, "json") for h in rewrite(recorded(f"{scenario}.json.esl"), world, scenario)]
    create = next(e for e in events if e.name == "CHANNEL_CREATE" and e["Unique-ID"] == member)
    with pytest.raises(RuntimeError), callevents.batch():
        plugin.on_channel(create)
        assert legs.get(member) is not None and legs.get(member).rang
        raise RuntimeError("the commit failed")
    assert legs.get(member) is None
    assert call_events() == []
    plugin.on_channel(create)  # heard again (a replay): the ring goes out now, once
    plugin.on_channel(create)
    assert [e["event"] for e in call_events()] == ["call:ring"]


def test_a_failing_event_in_a_batch_changes_nothing_and_the_others_commit(world, monkeypatch):
    """Each event of a batch has its own savepoint: the row written before the failure is rolled back."""
    from engine.calls import legs

    _reset()
    plugin = callevents.CallEvents(engine=None)
    events = {}
    for scenario in ("queue-call-answered", "abandon-no-agent"):
        member = MEMBER[scenario][0]
        evs = [Event(dict(h), None, "json") for h in rewrite(recorded(f"{scenario}.json.esl"), world, scenario)]
        events[scenario] = next(e for e in evs if e.name == "CHANNEL_CREATE" and e["Unique-ID"] == member)
    real_emit = callevents.emit

    def failing_emit(account_id, name, data, **kw):
        if data["id"] == MEMBER["queue-call-answered"][0]:
            raise RuntimeError("emit failed")
        return real_emit(account_id, name, data, **kw)
    monkeypatch.setattr(callevents, "emit", failing_emit)
    with callevents.batch():
        with pytest.raises(RuntimeError):
            plugin.on_channel(events["queue-call-answered"])
        plugin.on_channel(events["abandon-no-agent"])
    with db.connection_context():
        assert {r.uuid for r in ActiveCall.select()} == {MEMBER["abandon-no-agent"][0]}
    assert [(e["event"], e["id"]) for e in call_events()] == [("call:ring", MEMBER["abandon-no-agent"][0])]
    assert legs.get(MEMBER["queue-call-answered"][0]) is None
