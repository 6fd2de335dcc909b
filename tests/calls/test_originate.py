"""Click-to-call (GET /api/cc_agent/originate) against the emulator over the real wire protocol:
the bgapi originate with our Job-UUID, its channel variables, the replies of originate-ok/-fail.esl."""
from __future__ import annotations

import datetime as dt
import os
import re
import types
from collections.abc import Iterator

import gevent
import gevent.event
import pytest

from api import create_app
from engine.calls import originate as calls
from engine.dialer import campaigns
from engine.directory import accounts
from engine.engine import Engine
from engine.esl.client import ESLClient
from engine.esl.quoting import channel_vars
from engine.esl.supervisor import ESLSupervisor
from engine.store.models import Account, AgentState, Device, Extension, Queue, User
from tests.conftest import Api
from tests.fakeswitch import FakeSwitch
from tests.fakeswitch.calls import Originate, split_variables
from tests.fakeswitch.fixtures import esl_files, load
from tests.support import make_agent
from tests.test_fakeswitch_wire import authed


@pytest.fixture(autouse=True)
def daytime(monkeypatch) -> None:
    """Calls here carry a lead_id, so the 08:00-21:00 calling window applies (tests/dialer tests it): noon
    UTC, so the suite does not fail at night."""
    monkeypatch.setattr(campaigns, "clock", lambda: dt.datetime.now(dt.UTC).replace(hour=12))


@pytest.fixture
def engine(switch) -> Iterator[Engine]:
    """The engine with only its command connection running: originate needs nothing else."""
    eng = Engine("127.0.0.1", switch.port, "ClueCon", resync_every=3600)
    eng.commands.start()
    assert eng.commands.wait_connected(10)
    yield eng
    eng.commands.stop()


@pytest.fixture
def app(database, engine):
    return create_app({"TESTING": True, "ENGINE": engine})




def make_device(account_id: int, sip: str, user: User | int | None = None, **fields) -> Device:
    return Device.create(account=account_id, name=f"Desk {sip}", sip_username=sip, sip_a1_hash="0" * 32,
                         user=user, **fields)


@pytest.fixture
def desk(tenant, switch) -> Device:
    """The admin's phone, registered and answering at once."""
    device = make_device(tenant.account_id, "2001", tenant.admin_id, timeout=5)
    switch.calls.register("2001", tenant.domain, answer_after=0.01)
    return device


def originate(api: Api, **params):
    r = api.get("/api/cc_agent/originate", query_string=params)
    return r.status_code, r.get_json()


def last(switch: FakeSwitch) -> Originate:
    """The emulator's record of the latest originate (variables unescaped as FreeSWITCH reads them)."""
    return switch.calls.originates[-1]


# -- success --------------------------------------------------------------------------------------


def test_success_returns_the_agent_leg_uuid(api, switch, desk, tenant):
    status, body = originate(api, device_id=desk.id, destination="+15551234567")
    assert status == 200, body
    uuid = body["uuid"]
    assert body == {"success": True, "data": {"uuid": uuid}, "uuid": uuid}
    call = last(switch)
    assert call.variables["origination_uuid"] == uuid and call.answered_at is not None
    sent = switch.wait_for_command("bgapi originate")
    assert re.fullmatch(r"[0-9a-f-]{36}", sent.headers["Job-UUID"])  # our own Job-UUID
    # the recorded wire: the leg answered, then the BACKGROUND_JOB carried `+OK <uuid>`
    assert call.result == f"+OK {uuid}\n"


def test_command_line_carries_no_client_strings(api, switch, desk, tenant):
    status, _ = originate(api, device_id=desk.id, destination="5551234", cid="4445556666", cnam="Sales",
                          display_cid="777", display_cnam="Lead", lead_id="L-42", tags="vip,north")
    assert status == 200
    line = switch.wait_for_command("bgapi originate").line
    variables, _, rest = line.partition("}")
    assert rest == f"user/2001@{tenant.domain} &transfer('${{switchdesk_dst_num}} XML {tenant.domain}')"
    assert variables.startswith("bgapi originate {")
    for client_string in ("5551234", "4445556666", "Sales", "777", "Lead", "L-42", "vip"):
        assert client_string not in rest


def test_transfer_gets_number_xml_and_context_as_one_argument(api, switch, desk, tenant):
    """originate splits on spaces outside single quotes: unquoted, transfer got the number alone and
    looked it up in context `default` (NO_ROUTE_DESTINATION on the real switch)."""
    status, _ = originate(api, device_id=desk.id, destination="5551234")
    assert status == 200
    call = last(switch)
    assert call.exten == f"&transfer(${{switchdesk_dst_num}} XML {tenant.domain})"
    assert call.rest == []


def test_every_parameter_reaches_the_channel(api, switch, desk, tenant):
    status, body = originate(api, device_id=desk.id, destination="*72#", cid="+4930123", cnam="Acme, Inc. {'Sales'}",
                             display_cid="5550000", display_cnam="Lead: O'Brien, Pat", lead_id="crm-7,x}",
                             tags="vip, second tag", sip_auto_answer=1)
    assert status == 200, body
    v = last(switch).variables  # as FreeSWITCH unescapes them
    assert v["switchdesk_account_id"] == str(tenant.account_id)
    assert v["switchdesk_call_type"] == "outbound"
    assert v["switchdesk_src_device_id"] == str(desk.id)
    assert v["switchdesk_src_user_id"] == str(tenant.admin_id)
    assert v["switchdesk_dst_num"] == "*72#"
    assert v["switchdesk_lead_id"] == "crm-7,x}"
    assert v["switchdesk_tags"] == "vip,second tag"
    assert v["effective_caller_id_number"] == "+4930123"
    assert v["effective_caller_id_name"] == "Acme, Inc. {'Sales'}"
    assert v["origination_caller_id_number"] == "5550000"
    assert v["origination_caller_id_name"] == "Lead: O'Brien, Pat"
    assert v["sip_auto_answer"] == "true"
    assert v["sip_h_Call-Info"] == f"<sip:{tenant.domain}>;answer-after=0"
    assert v["originate_timeout"] == "5"
    assert v["origination_uuid"] == body["uuid"]


def test_defaults_without_optional_parameters(api, switch, tenant):
    device = make_device(tenant.account_id, "2009", tenant.admin_id, cid_num="3000", cid_name="Front desk")
    switch.calls.register("2009", tenant.domain)
    status, _ = originate(api, device_id=device.id, destination="5551234")
    assert status == 200
    v = last(switch).variables
    assert v["effective_caller_id_number"] == "3000" and v["effective_caller_id_name"] == "Front desk"
    assert v["origination_caller_id_number"] == "5551234"  # the agent sees whom it is calling
    assert "sip_auto_answer" not in v and "switchdesk_lead_id" not in v and "switchdesk_tags" not in v
    assert v["originate_timeout"] == "30"


def test_json_and_form_bodies(api, switch, desk):
    r = api.post("/api/cc_agent/originate", json={"device_id": desk.id, "destination": "100", "tags": ["a", "b"],
                                                  "sip_auto_answer": True})
    assert r.status_code == 200, r.get_json()
    assert last(switch).variables["switchdesk_tags"] == "a,b"
    assert last(switch).variables["sip_auto_answer"] == "true"
    r = api.post("/api/cc_agent/originate", data={"device_id": str(desk.id), "destination": "101"})
    assert r.status_code == 200 and last(switch).variables["switchdesk_dst_num"] == "101"
    r = api.post("/api/cc_agent/originate", json={"device_id": desk.id, "destination": 5551234, "lead_id": 77})
    assert r.status_code == 200, r.get_json()
    assert last(switch).variables["switchdesk_dst_num"] == "5551234"
    assert last(switch).variables["switchdesk_lead_id"] == "77"


def test_channel_events_carry_the_variables(api, switch, desk, tenant):
    listener = ESLClient("127.0.0.1", switch.port, "ClueCon", events=["CHANNEL_ANSWER"], event_format="json")
    listener.connect(5)
    answered = gevent.event.AsyncResult()
    listener.on_event("CHANNEL_ANSWER", answered.set)
    try:
        status, body = originate(api, device_id=desk.id, destination="5551234", lead_id="L1")
        event = answered.get(timeout=5)
    finally:
        listener.close()
    assert status == 200
    assert event.get_str("Unique-ID") == body["uuid"]
    assert event.get_str("variable_switchdesk_account_id") == str(tenant.account_id)
    assert event.get_str("variable_switchdesk_call_type") == "outbound"
    assert event.get_str("variable_switchdesk_lead_id") == "L1"


# -- whose phone rings ----------------------------------------------------------------------------


def test_user_id_rings_the_checked_in_device_else_the_first(api, switch, tenant):
    agent = make_agent(tenant.account_id, "alice")
    first = make_device(tenant.account_id, "3001", agent, ring=0)
    second = make_device(tenant.account_id, "3002", agent, ring=1)
    for sip in ("3001", "3002"):
        switch.calls.register(sip, tenant.domain)
    assert originate(api, user_id=agent.id, destination="100")[0] == 200
    assert last(switch).endpoint == f"user/3001@{tenant.domain}"
    AgentState.create(user=agent.id, account=tenant.account_id, device=second.id)
    assert originate(api, user_id=agent.id, destination="100")[0] == 200
    assert last(switch).endpoint == f"user/3002@{tenant.domain}"
    assert last(switch).variables["switchdesk_src_user_id"] == str(agent.id)
    assert first.id != second.id


def test_extension_routes_to_device_or_user(api, switch, tenant):
    agent = make_agent(tenant.account_id, "bob")
    device = make_device(tenant.account_id, "3101")
    users_phone = make_device(tenant.account_id, "3102", agent)
    switch.calls.register("3101", tenant.domain)
    switch.calls.register("3102", tenant.domain)
    Extension.create(account=tenant.account_id, number="201", target_type="device", target_id=device.id)
    Extension.create(account=tenant.account_id, number="202", target_type="user", target_id=agent.id)
    queue = Queue.create(account=tenant.account_id, name="Support")
    Extension.create(account=tenant.account_id, number="203", target_type="queue", target_id=queue.id)
    assert originate(api, extension="201", destination="100")[0] == 200
    assert last(switch).endpoint == f"user/3101@{tenant.domain}"
    assert originate(api, extension="202", destination="100")[0] == 200
    assert last(switch).endpoint == f"user/3102@{tenant.domain}"
    assert users_phone.user_id == agent.id
    status, body = originate(api, extension="203", destination="100")
    assert status == 400 and body["msg"].startswith("extension:")
    assert originate(api, extension="299", destination="100")[0] == 404


def test_no_target_uses_the_callers_own_phone(api, switch, desk, tenant):
    assert originate(api, destination="100")[0] == 200
    assert last(switch).endpoint == f"user/2001@{tenant.domain}"


# -- refusals -------------------------------------------------------------------------------------


def test_errors_before_anything_is_dialled(api, switch, tenant, other_tenant):
    foreign_user = make_agent(other_tenant.account_id, "mallory")
    foreign_device = make_device(other_tenant.account_id, "2001", foreign_user)
    status, body = originate(api, destination="100")
    assert status == 400 and body == {"success": False, "msg": f"user {tenant.admin_id} has no device"}
    assert originate(api, device_id=foreign_device.id, destination="100")[0] == 404
    assert originate(api, user_id=foreign_user.id, destination="100")[0] == 404
    assert originate(api, device_id=999999, destination="100")[0] == 404
    device = make_device(tenant.account_id, "2001", tenant.admin_id)
    for bad in ("", "abc", "555 1234", "555;1234", "1" * 33, "${x}", "555\n1", "+"):
        status, body = originate(api, device_id=device.id, destination=bad)
        assert status == 400 and body["msg"].startswith("destination"), (bad, body)
    assert originate(api, device_id=device.id)[1]["msg"].startswith("destination")
    for field, value in (("cnam", "Bad\nname"), ("display_cnam", "x\x00"), ("lead_id", "a\rb"), ("tags", "a,b\tc"),
                         ("cid", "12ab"), ("device_id", "x"), ("sip_auto_answer", "2")):
        status, body = originate(api, **{"device_id": device.id, "destination": "100", field: value})
        assert status == 400 and body["msg"].startswith(field), (field, body)
    assert not any(c.line.startswith("bgapi originate") for c in switch.received)


def test_another_users_phone_needs_agents(client, switch, tenant):
    clerk = make_agent(tenant.account_id, "clerk", permissions={"call_center_api": True})
    own = make_device(tenant.account_id, "4001", clerk)
    admins = make_device(tenant.account_id, "4002", tenant.admin_id)
    switch.calls.register("4001", tenant.domain)
    switch.calls.register("4002", tenant.domain)
    key = accounts.issue_api_key_for("clerk")
    api = Api(client, types.SimpleNamespace(auth=lambda: {"Authorization": f"Bearer {key}"}))
    assert originate(api, destination="100")[0] == 200
    assert originate(api, device_id=own.id, destination="100")[0] == 200
    status, body = originate(api, device_id=admins.id, destination="100")
    assert status == 403 and body == {"success": False, "msg": "Permission denied: agents"}
    assert originate(api, user_id=tenant.admin_id, destination="100")[0] == 403
    User.update(permissions={"call_center_api": True, "agents": True}).where(User.id == clerk.id).execute()
    assert originate(api, device_id=admins.id, destination="100")[0] == 200


def test_a_phone_is_yours_by_assignment_or_check_in_and_nobody_elses(client, switch, tenant):
    """Ringing a phone another agent is checked in with acts on that agent (needs `agents`), even if the
    phone is assigned to the caller; a shared phone the caller is checked in with is its own."""
    from engine.callcenter import agents

    clerk = make_agent(tenant.account_id, "clerk", permissions={"call_center_api": True})
    bob = make_agent(tenant.account_id, "bob")
    shared = make_device(tenant.account_id, "4101")
    assigned = make_device(tenant.account_id, "4102", clerk)
    for sip in ("4101", "4102"):
        switch.calls.register(sip, tenant.domain)
    key = accounts.issue_api_key_for("clerk")
    api = Api(client, types.SimpleNamespace(auth=lambda: {"Authorization": f"Bearer {key}"}))
    assert originate(api, device_id=shared.id, destination="100")[0] == 403  # nobody's: not the clerk's
    agents.check_in(tenant.account_id, clerk.id, shared.id, force=False)
    assert originate(api, destination="100")[0] == 200  # its checked-in phone, unassigned
    assert originate(api, device_id=shared.id, destination="100")[0] == 200
    agents.check_in(tenant.account_id, bob.id, assigned.id, force=False)
    status, body = originate(api, device_id=assigned.id, destination="100")
    assert status == 403 and body == {"success": False, "msg": "Permission denied: agents"}


def test_freeswitch_down_is_503(api, switch, desk, tenant):
    switch.down()
    gevent.sleep(0.05)
    status, body = originate(api, device_id=desk.id, destination="100")
    assert (status, body) == (503, {"success": False, "msg": "FreeSWITCH is not connected"})
    no_engine = Api(create_app({"TESTING": True}).test_client(), tenant)
    status, body = originate(no_engine, device_id=desk.id, destination="100")
    assert (status, body) == (503, {"success": False, "msg": "FreeSWITCH is not connected"})


@pytest.mark.parametrize(
    ("steer", "cause"),
    [
        (lambda fs, domain: fs.calls.unregister("2001", domain), "USER_NOT_REGISTERED"),
        (lambda fs, domain: setattr(fs.calls.phones[f"2001@{domain}"], "busy", True), "USER_BUSY"),
        (lambda fs, domain: setattr(fs.calls.phones[f"2001@{domain}"], "answer_after", None), "NO_ANSWER"),
    ],
)
def test_failure_is_http_200_with_the_cause(api, switch, desk, steer, cause):
    Device.update(timeout=1).where(Device.id == desk.id).execute()
    steer(switch, Account.get().domain)
    status, body = originate(api, device_id=desk.id, destination="100")
    assert status == 200
    assert body["success"] is False and body["msg"] == cause
    assert body["data"]["uuid"] == last(switch).variables["origination_uuid"]


def test_unacknowledged_or_unanswered_job_is_no_result_not_5xx(api, switch, desk, tenant, monkeypatch):
    monkeypatch.setattr(calls, "ACK_TIMEOUT", 0.2)
    switch.stall()
    try:
        status, body = originate(api, device_id=desk.id, destination="100")
    finally:
        switch.unstall()
    assert (status, body["success"], body["msg"]) == (200, False, "NO_RESULT")  # it may be ringing: no retry
    monkeypatch.setattr(calls, "RESULT_MARGIN", -4.8)  # wait 0.2 s for a phone that answers after 1 s
    switch.calls.phones[f"2001@{tenant.domain}"].answer_after = 1.0
    status, body = originate(api, device_id=desk.id, destination="100")
    assert (status, body["success"], body["msg"]) == (200, False, "NO_RESULT")


def test_answer_delay_is_waited_for(api, switch, desk, tenant):
    switch.calls.phones[f"2001@{tenant.domain}"].answer_after = 0.3
    started = gevent.get_hub().loop.now()
    status, body = originate(api, device_id=desk.id, destination="100")
    assert status == 200 and body["success"] is True
    assert gevent.get_hub().loop.now() - started >= 0.29


# -- the emulator speaks as recorded ------------------------------------------------------------


@pytest.mark.skipif(not esl_files(), reason="FreeSWITCH fixtures not found")
@pytest.mark.parametrize("command", [
    b"api originate user/1003@127.0.0.1 &park()\n\n",
    b"api originate bogus/endpoint &park()\n\n",
    b"api originate\n\n",
])
def test_emulator_originate_replies_match_recording(switch, command):
    expected = dict(load("originate-fail.esl").exchanges())[command]
    raw = authed(switch)
    assert raw.exchange(command, len(expected)) == expected


def test_emulator_subscriber_absent_and_answer():
    with FakeSwitch() as fs:
        fs.calls.directory = {"1001@127.0.0.1"}
        assert fs.run_api("originate user/9999@127.0.0.1 &park()") == "-ERR SUBSCRIBER_ABSENT\n"
        fs.calls.register("1001", "127.0.0.1")
        reply = fs.run_api("originate {origination_caller_id_number=9000}user/1001@127.0.0.1 &park()")
        assert re.fullmatch(r"\+OK [0-9a-f-]{36}\n", reply)
        chan = reply.split()[1]
        assert fs.run_api(f"uuid_exists {chan}") == "true"
        assert fs.run_api(f"uuid_kill {chan}") == "+OK\n"
        assert fs.run_api(f"uuid_exists {chan}") == "false"


def test_variables_round_trip_the_escaping():
    values = {"a": "x, y", "b": "}{'", "c": "back\\slash", "d": "plain"}
    assert split_variables(channel_vars(values)[1:-1]) == values


# -- a real FreeSWITCH ------------------------------------------------------------------------------

_TARGET = os.environ.get("SWITCHDESK_TEST_ESL")


@pytest.mark.real_freeswitch
@pytest.mark.skipif(not _TARGET, reason="set SWITCHDESK_TEST_ESL=host:port:password")
def test_originate_against_real_freeswitch(database):
    """Our command line is accepted and answered with a hang-up cause (no phone is registered for the
    made-up user); SWITCHDESK_TEST_ORIGINATE=user@domain names an answering phone to test success too."""
    host, port, password = (_TARGET or "::").split(":", 2)
    sup = ESLSupervisor(host, int(port), password, name="commands", watchdog=False)
    sup.start()
    try:
        assert sup.wait_connected(10)
        answering = os.environ.get("SWITCHDESK_TEST_ORIGINATE", "no-such-user-77@example.invalid")
        user, domain = answering.split("@", 1)
        account = Account.create(name="Real", domain=domain)
        owner = make_agent(account.id, "real")
        device = make_device(account.id, user, owner, timeout=5)
        request = calls.CallRequest(destination="9999", device_id=device.id, cnam="Test, 'Co'", lead_id="L,1")
        result = calls.originate(account.id, request, acting_user_id=owner.id, commands=sup)
        if "SWITCHDESK_TEST_ORIGINATE" in os.environ:
            assert result.ok, result
            sup.require_client().api(f"uuid_kill {result.uuid}")
        else:
            assert not result.ok
            assert re.fullmatch(r"[A-Z_]+", result.cause or ""), result  # a cause, not a -USAGE or parse error
    finally:
        sup.stop()
