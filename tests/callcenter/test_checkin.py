"""Check-in codes end to end: issued by the API, dialled through the emulator's outbound socket
(FreeSWITCH's side of ``socket 127.0.0.1:8040 async full``) into engine.callcenter.checkin.handle_call."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from engine.callcenter import agents, checkin
from engine.directory import accounts
from engine.esl.outbound import OutboundServer
from engine.store.models import AgentState, CheckinCode, CheckinFailure, Device, User, now
from tests.fakeswitch import FakeSwitch
from tests.fakeswitch.server import default_channel
from tests.support import make_agent


@pytest.fixture
def server(database) -> Iterator[OutboundServer]:
    srv = checkin.make_server("127.0.0.1", 0)
    srv.start()
    yield srv
    srv.stop()




def make_device(account_id: int, sip: str) -> Device:
    return Device.create(account=account_id, name=f"Desk {sip}", sip_username=sip, sip_a1_hash="0" * 32)


def get_code(api, user_id: int | None = None, force: int | None = None) -> str:
    query = {}
    if user_id is not None:
        query["user_id"] = user_id
    if force is not None:
        query["forceCheckOut"] = force
    r = api.get("/api/cc_agent/checkIn", query_string=query)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["success"] is True
    return body["data"]


def dial(switch: FakeSwitch, server: OutboundServer, code: str, *, device_id: object, domain: str | None) -> str:
    """Place the call as FreeSWITCH would after the directory authenticated the phone; the tone played."""
    channel = default_channel(destination=code)
    if device_id is not None:
        channel["variable_switchdesk_device_id"] = str(device_id)
    if domain is not None:
        channel["variable_user_context"] = domain
    call = switch.connect_outbound("127.0.0.1", server.port, channel)
    assert call.wait_closed(10)
    tones = [c.headers["execute-app-arg"] for c in call.received if c.headers.get("execute-app-name") == "playback"]
    assert len(tones) == 1, call.received
    # answered, then hung up by us: the recording's sequence
    assert next(c.headers.get("execute-app-name") for c in call.received if c.verb == "sendmsg") == "answer"
    assert any(c.headers.get("call-command") == "hangup" for c in call.received)
    return tones[0]


def device_of(user: User) -> int | None:
    state = AgentState.get_or_none(AgentState.user == user.id)
    return state.device_id if state else None


@pytest.fixture
def alice(tenant) -> User:
    return make_agent(tenant.account_id, "alice")


@pytest.fixture
def desk(tenant) -> Device:
    return make_device(tenant.account_id, "2001")


# -- the API ----------------------------------------------------------------------------------------


def test_code_is_six_digits_short_lived_and_replaces_the_previous(api, alice):
    code = get_code(api, alice.id)
    assert re.fullmatch(r"\*\*\*\d{6}", code)
    row = CheckinCode.get(CheckinCode.code == code[3:])
    assert row.user_id == alice.id and row.used_at is None and not row.force_checkout
    assert now() + checkin.CODE_TTL - 2 <= row.expires <= now() + checkin.CODE_TTL
    second = get_code(api, alice.id, force=1)
    assert [c.code for c in CheckinCode.select()] == [second[3:]]
    assert CheckinCode.get().force_checkout is True


def test_user_defaults_to_the_caller(api, tenant):
    r = api.get("/api/cc_agent/checkIn")
    assert r.status_code == 400 and "not an agent" in r.get_json()["msg"]
    User.update(is_agent=True).where(User.id == tenant.admin_id).execute()
    code = get_code(api)
    assert CheckinCode.get(CheckinCode.code == code[3:]).user_id == tenant.admin_id
    posted = api.post("/api/cc_agent/checkIn", json={"forceCheckOut": 1})  # POST like the other agent calls
    assert posted.status_code == 200 and posted.get_json()["data"].startswith("***")
    assert CheckinCode.get(CheckinCode.code == posted.get_json()["data"][3:]).force_checkout is True


def test_codes_are_unique_per_account(api, tenant, monkeypatch):
    users = [make_agent(tenant.account_id, f"agent{i}") for i in range(3)]
    draws = iter(["111111", "111111", "111111", "222222", "111111", "111111", "111111", "111111", "111111",
                  "333333"])
    monkeypatch.setattr(checkin, "_new_code", lambda digits: next(draws))
    codes = [get_code(api, u.id) for u in users]
    assert codes == ["***111111", "***222222", "***333333"]


def test_other_users_need_the_agents_permission(client, tenant, alice):
    bob = make_agent(tenant.account_id, "bob", permissions={"call_center_api": True})
    key = accounts.issue_api_key_for("bob")
    headers = {"Authorization": f"Bearer {key}"}
    r = client.get(f"/api/cc_agent/checkIn?user_id={alice.id}", headers=headers)
    assert r.status_code == 403 and r.get_json() == {"success": False, "msg": "Permission denied: agents"}
    r = client.get(f"/api/cc_agent/checkIn?user_id={bob.id}", headers=headers)
    assert r.status_code == 200 and r.get_json()["data"].startswith("***")
    assert CheckinCode.select().count() == 1


def test_bad_and_foreign_user_ids(api, other_tenant, tenant):
    foreign = make_agent(other_tenant.account_id, "mallory")
    assert api.get(f"/api/cc_agent/checkIn?user_id={foreign.id}").status_code == 404
    assert api.get("/api/cc_agent/checkIn?user_id=abc").status_code == 400
    assert api.get("/api/cc_agent/checkIn?user_id=1&forceCheckOut=2").status_code == 400
    inactive = make_agent(tenant.account_id, "gone", active=0)
    r = api.get(f"/api/cc_agent/checkIn?user_id={inactive.id}")
    assert r.status_code == 400 and r.get_json()["msg"].startswith("user_id:")
    assert CheckinCode.select().count() == 0


# -- dialling the code --------------------------------------------------------------------------------


def test_good_code_checks_the_agent_in(api, switch, server, tenant, alice, desk):
    code = get_code(api, alice.id)
    assert dial(switch, server, code, device_id=desk.id, domain=tenant.domain) == checkin.CONFIRM_TONE
    assert device_of(alice) == desk.id
    assert CheckinCode.get().used_at is not None


def test_replayed_code_fails(api, switch, server, tenant, alice, desk):
    code = get_code(api, alice.id)
    assert dial(switch, server, code, device_id=desk.id, domain=tenant.domain) == checkin.CONFIRM_TONE
    other = make_device(tenant.account_id, "2002")
    assert dial(switch, server, code, device_id=other.id, domain=tenant.domain) == checkin.ERROR_TONE
    assert device_of(alice) == desk.id
    assert CheckinFailure.get(CheckinFailure.device == other.id).failures == 1


def test_expired_code_fails_and_changes_nothing(api, switch, server, tenant, alice, desk):
    code = get_code(api, alice.id)
    CheckinCode.update(expires=now() - 1).execute()
    assert dial(switch, server, code, device_id=desk.id, domain=tenant.domain) == checkin.ERROR_TONE
    assert device_of(alice) is None
    assert CheckinCode.get().used_at is None


def test_five_wrong_codes_lock_the_device_out(api, switch, server, tenant, alice, desk):
    code = get_code(api, alice.id)
    wrong = "***" + ("000000" if code[3:] != "000000" else "000001")
    for _ in range(checkin.MAX_FAILURES):
        assert dial(switch, server, wrong, device_id=desk.id, domain=tenant.domain) == checkin.ERROR_TONE
    # locked: even the right code fails, unchecked, and stays unspent
    assert dial(switch, server, code, device_id=desk.id, domain=tenant.domain) == checkin.ERROR_TONE
    assert device_of(alice) is None
    assert CheckinCode.get().used_at is None
    assert CheckinFailure.get(CheckinFailure.device == desk.id).failures == checkin.MAX_FAILURES
    # another phone of the account is not locked
    other = make_device(tenant.account_id, "2002")
    assert dial(switch, server, code, device_id=other.id, domain=tenant.domain) == checkin.CONFIRM_TONE


def test_lockout_ends_with_the_window(api, switch, server, tenant, alice, desk):
    CheckinFailure.create(device=desk.id, account=tenant.account_id, failures=checkin.MAX_FAILURES,
                          first_failure=now() - checkin.FAILURE_WINDOW)
    code = get_code(api, alice.id)
    assert dial(switch, server, code, device_id=desk.id, domain=tenant.domain) == checkin.CONFIRM_TONE
    assert device_of(alice) == desk.id


def test_busy_device_refuses_without_force_then_force_takes_it(api, switch, server, tenant, alice, desk):
    bob = make_agent(tenant.account_id, "bob")
    agents.check_in(tenant.account_id, bob.id, desk.id, force=False)
    code = get_code(api, alice.id)
    assert dial(switch, server, code, device_id=desk.id, domain=tenant.domain) == checkin.ERROR_TONE
    assert device_of(bob) == desk.id and device_of(alice) is None
    assert CheckinCode.get().used_at is None  # given back: a refusal is not a wrong code
    assert CheckinFailure.get_or_none(CheckinFailure.device == desk.id) is None
    forced = get_code(api, alice.id, force=1)
    assert dial(switch, server, forced, device_id=desk.id, domain=tenant.domain) == checkin.CONFIRM_TONE
    assert device_of(alice) == desk.id and device_of(bob) is None


def test_device_of_another_account_cannot_use_the_code(api, switch, server, tenant, other_tenant, alice, desk):
    code = get_code(api, alice.id)
    foreign = make_device(other_tenant.account_id, "2001")
    # its own (authenticated) domain: the code is not one of its account's
    assert dial(switch, server, code, device_id=foreign.id, domain=other_tenant.domain) == checkin.ERROR_TONE
    # a device id that does not belong to the domain the directory authenticated
    assert dial(switch, server, code, device_id=foreign.id, domain=tenant.domain) == checkin.ERROR_TONE
    assert dial(switch, server, code, device_id=desk.id, domain=other_tenant.domain) == checkin.ERROR_TONE
    assert device_of(alice) is None
    assert CheckinCode.get().used_at is None
    # the directory's variables are required; no caller-supplied header can stand in for them
    assert dial(switch, server, code, device_id=None, domain=tenant.domain) == checkin.ERROR_TONE
    assert dial(switch, server, code, device_id=desk.id, domain=None) == checkin.ERROR_TONE
    assert device_of(alice) is None
    assert dial(switch, server, code, device_id=desk.id, domain=tenant.domain) == checkin.CONFIRM_TONE


def test_caller_hanging_up_early_still_checks_in(api, switch, server, tenant, alice, desk):
    code = get_code(api, alice.id)
    channel = default_channel(destination=code)
    channel.update(variable_switchdesk_device_id=str(desk.id), variable_user_context=tenant.domain)
    call = switch.connect_outbound("127.0.0.1", server.port, channel, playback_seconds=30)
    switch.wait_for_command(lambda c: c.headers.get("execute-app-name") == "playback")
    call.hangup_by_caller()
    assert call.wait_closed(10)
    assert device_of(alice) == desk.id
