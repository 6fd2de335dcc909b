"""Who may change whom: users, permission groups, the last admin, credentials, and agents acting on others."""
from __future__ import annotations

import types

import pytest

from engine.directory import accounts
from engine.directory import users as service
from engine.errors import ServiceError
from engine.store.models import AgentState, ApiKey, Device, PermissionGroup, User, UserSession
from tests.conftest import Api
from tests.support import make_agent

PASSWORD = "Ab123456"


class KeyApi(Api):
    """The test client authenticating with a given API key."""

    def __init__(self, client, key: str):
        self.client = client
        self.key = key

    def __call__(self, method: str, url: str, **kwargs):
        headers = kwargs.pop("headers", {})
        headers["Authorization"] = f"Bearer {self.key}"
        return self.client.open(url, method=method, headers=headers, **kwargs)


def make_user(api, username: str, **over) -> dict:
    body = {"name": username, "username": username, "password": PASSWORD, "email": f"{username}@example.com", **over}
    r = api.post("/api/user", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def as_user(client, user_id: int) -> KeyApi:
    return KeyApi(client, accounts.issue_api_key(User.get_by_id(user_id)))


@pytest.fixture
def manager(api, client):
    """A user manager: `call_center_api` and `users` only, with its own API key."""
    user = make_user(api, "manager", permissions={"call_center_api": True, "users": True})
    return types.SimpleNamespace(user=user, api=as_user(client, user["id"]))


def login(client, username: str, password: str):
    return client.post("/api/user/login", json={"username": username, "password": password})


# --- users ---------------------------------------------------------------------------------------


def test_user_manager_cannot_take_over_the_admin(api, client, tenant, manager):
    admin_url = f"/api/user/{tenant.admin_id}"
    before = api.get(admin_url).get_json()["data"]
    for change in ({"password": "Hijack12345"}, {"email": "mine@evil.test"}, {"active": 0},
                   {"api_ip_ranges": ["203.0.113.0/24"]}, {"name": "Pwned"}):
        r = manager.api.put(admin_url, json=change)
        assert r.status_code == 403, change
        assert r.get_json() == {"success": False, "msg": "Permission denied: only an admin can change an admin"}
    r = manager.api.delete(admin_url)
    assert r.status_code == 403 and r.get_json()["msg"] == "Permission denied: only an admin can delete an admin"
    assert manager.api.post(f"{admin_url}/revoke").status_code == 403
    assert api.get(admin_url).get_json()["data"] == before
    assert login(client, "admin", "Hijack12345").status_code == 401
    assert login(client, "admin", tenant.password).status_code == 200
    assert ApiKey.select().where(ApiKey.user == tenant.admin_id).count() == 1


def test_only_an_admin_makes_an_admin(api, manager):
    r = manager.api.post("/api/user", json={"name": "x", "username": "sneaky", "password": PASSWORD,
                                            "email": "sneaky@example.com", "is_admin": True})
    assert r.status_code == 403 and r.get_json()["msg"] == "Permission denied: only an admin can make a user admin"
    assert not User.select().where(User.username == "sneaky").exists()
    r = manager.api.put(f"/api/user/{manager.user['id']}", json={"is_admin": True})
    assert r.status_code == 403
    assert User.get_by_id(manager.user["id"]).is_admin is False
    clerk = make_user(api, "clerk")
    assert manager.api.put(f"/api/user/{clerk['id']}", json={"is_admin": True}).status_code == 403
    # an admin can, and a record sent back unchanged is not a change of rights
    assert manager.api.put(f"/api/user/{clerk['id']}", json={"is_admin": False, "name": "Clerk"}).status_code == 200
    made = api.put(f"/api/user/{clerk['id']}", json={"is_admin": True})
    assert made.status_code == 200 and made.get_json()["data"]["is_admin"] is True
    assert manager.api.put(f"/api/user/{clerk['id']}", json={"name": "Admin now"}).status_code == 403


def test_non_admin_acts_only_within_its_rights(api, manager):
    richer = make_user(api, "richer", permissions={"call_center_api": True, "users": True, "settings": True})
    for method, url, body in (("PUT", f"/api/user/{richer['id']}", {"password": "Zz987654"}),
                              ("PUT", f"/api/user/{richer['id']}", {"name": "x"}),
                              ("POST", f"/api/user/{richer['id']}/revoke", None),
                              ("DELETE", f"/api/user/{richer['id']}", None)):
        r = manager.api(method, url, json=body)
        assert r.status_code == 403, (method, url, body)
        assert r.get_json()["msg"] == (f"Permission denied: user {richer['id']} has permissions you do not have "
                                       "(settings)")
    assert User.get_by_id(richer["id"]).name == "richer"
    # rights that come from a permission group count the same
    group = api.post("/api/pgroup", json={"name": "Ops", "permissions": {"reports": True}}).get_json()["data"]
    grouped = make_user(api, "grouped", pgroup_id=group["id"])
    assert manager.api.put(f"/api/user/{grouped['id']}", json={"email": "g@evil.test"}).status_code == 403
    assert manager.api.delete(f"/api/user/{grouped['id']}").status_code == 403
    # within its rights it may do what it likes, but not raise anyone, itself included
    peer = make_user(api, "peer", permissions={"users": True})
    assert manager.api.put(f"/api/user/{peer['id']}", json={"password": "Zz987654", "name": "P"}).status_code == 200
    r = manager.api.put(f"/api/user/{peer['id']}", json={"pgroup_id": group["id"]})
    assert r.status_code == 403 and r.get_json()["msg"] == "You cannot grant permissions you do not have: reports"
    assert manager.api.put(f"/api/user/{manager.user['id']}", json={"pgroup_id": group["id"]}).status_code == 403
    assert manager.api.delete(f"/api/user/{peer['id']}").status_code == 200


def test_own_password_and_profile_but_not_own_limits(api, client, manager):
    me = f"/api/user/{manager.user['id']}"
    r = manager.api.put(me, json={"password": "Zz987654", "name": "Me", "timezone": "Europe/Paris"})
    assert r.status_code == 200 and r.get_json()["data"]["name"] == "Me"
    assert login(client, "manager", "Zz987654").status_code == 200
    assert manager.api.put(me, json={"permissions": {"call_center_api": True, "users": True}}).status_code == 200
    assert manager.api.put(me, json={"permissions": {"settings": True}}).status_code == 403
    api.put(me, json={"api_ip_ranges": ["127.0.0.0/8"], "geo_limit": "IL"})
    for lift in ({"api_ip_ranges": []}, {"geo_limit": ""}, {"api_ip_ranges": ["0.0.0.0/0"]}):
        r = manager.api.put(me, json=lift)
        assert r.status_code == 403 and r.get_json()["msg"].startswith("Permission denied: "), lift
    assert manager.api.put(me, json={"api_ip_ranges": ["127.0.0.0/8"], "geo_limit": "IL"}).status_code == 200


def test_last_active_admin_stays(api, tenant):
    me = f"/api/user/{tenant.admin_id}"
    for change, doing in (({"active": 0}, "deactivated"), ({"is_admin": False}, "demoted")):
        r = api.put(me, json=change)
        assert r.status_code == 409, change
        assert r.get_json() == {"success": False, "msg": f"User {tenant.admin_id} is the last active admin of "
                                                         f"the account and cannot be {doing}; make another user "
                                                         "admin first"}
    with pytest.raises(ServiceError) as gone:
        service.delete_user(tenant.account_id, tenant.admin_id, service.SYSTEM)
    assert gone.value.status == 409
    # an inactive admin does not count; an active one does
    second = make_user(api, "second", is_admin=True, active=0)
    assert api.put(me, json={"active": 0}).status_code == 409
    assert api.put(f"/api/user/{second['id']}", json={"active": 1}).status_code == 200
    assert api.put(me, json={"is_admin": False}).get_json()["data"]["is_admin"] is False


def test_taken_username_or_email_names_nothing_of_the_other_account(api, other_api, tenant):
    make_user(api, "Jonh123")
    for body in ({"username": "JONH123", "email": "new@example.com"},
                 {"username": "fresh", "email": "jonh123@EXAMPLE.com"}):
        r = other_api.post("/api/user", json={"name": "x", "password": PASSWORD, **body})
        assert r.status_code == 409
        msg = r.get_json()["msg"]
        assert msg in ("username: already taken", "email: already taken")
        for secret in ("Acme", tenant.domain, str(tenant.account_id), "Jonh123", "jonh123@"):
            assert secret not in msg
    # the same answer as within one account: nothing tells the two apart
    same = api.post("/api/user", json={"name": "x", "password": PASSWORD, "username": "jonh123", "email": "a@b.co"})
    assert same.get_json()["msg"] == "username: already taken"


# --- permission groups ---------------------------------------------------------------------------


def test_group_editing_stays_within_the_editors_rights(api, manager, tenant):
    low = api.post("/api/pgroup", json={"name": "Low", "permissions": {"users": True}}).get_json()["data"]
    member = make_user(api, "member", pgroup_id=low["id"])
    # a member with more rights than the manager (its own override) protects its group
    richer = make_user(api, "richer", pgroup_id=low["id"], permissions={"reports": True})
    lower = {"permissions": {"call_center_api": True}}
    r = manager.api.put(f"/api/pgroup/{low['id']}", json=lower)
    assert r.status_code == 403
    assert r.get_json()["msg"] == (f"Permission denied: user {richer['id']} of permission group {low['id']} has "
                                   "rights you do not have")
    assert manager.api.delete(f"/api/pgroup/{low['id']}").status_code == 403
    api.put(f"/api/user/{richer['id']}", json={"pgroup_id": None})
    assert manager.api.put(f"/api/pgroup/{low['id']}", json=lower).status_code == 200
    # an admin in the group protects it too
    api.put(f"/api/user/{tenant.admin_id}", json={"pgroup_id": low["id"]})
    assert manager.api.put(f"/api/pgroup/{low['id']}", json={"name": "Renamed"}).status_code == 403
    assert PermissionGroup.get_by_id(low["id"]).name == "Low"
    # a group holding more than the manager is not its to edit or delete, even empty
    high = api.post("/api/pgroup", json={"name": "High", "permissions": {"settings": True}}).get_json()["data"]
    r = manager.api.put(f"/api/pgroup/{high['id']}", json={"name": "Mine"})
    assert r.status_code == 403 and r.get_json()["msg"] == (f"Permission denied: permission group {high['id']} "
                                                            "has permissions you do not have (settings)")
    assert manager.api.delete(f"/api/pgroup/{high['id']}").status_code == 403
    # nor to hand out
    assert manager.api.put(f"/api/user/{member['id']}", json={"pgroup_id": high["id"]}).status_code == 403
    # another account's group is 404
    assert manager.api.get("/api/pgroup/999999").status_code == 404


# --- credentials ---------------------------------------------------------------------------------


def test_password_change_ends_sessions_but_keeps_keys_and_revoke_ends_both(api, client):
    user = make_user(api, "smith", permissions={"call_center_api": True})
    key = accounts.issue_api_key(User.get_by_id(user["id"]))
    assert login(client, "smith", PASSWORD).status_code == 200
    assert api.put(f"/api/user/{user['id']}", json={"password": "Zz987654"}).status_code == 200
    assert UserSession.select().where(UserSession.user == user["id"]).count() == 0
    assert client.get(f"/api/user/{user['id']}").status_code == 401  # the session cookie is dead
    own = KeyApi(client, key)
    assert own.get(f"/api/user/{user['id']}").status_code == 200  # the key still works
    assert login(client, "smith", "Zz987654").status_code == 200
    r = api.post(f"/api/user/{user['id']}/revoke")
    assert r.status_code == 200 and r.get_json() == {"success": True, "data": {"sessions": 1, "api_keys": 1}}
    assert own.get(f"/api/user/{user['id']}").status_code == 401
    assert client.get(f"/api/user/{user['id']}").status_code == 401
    # a user may end its own credentials without the users permission; not someone else's
    key = accounts.issue_api_key(User.get_by_id(user["id"]))
    other = make_user(api, "other")
    assert KeyApi(client, key).post(f"/api/user/{other['id']}/revoke").status_code == 403
    assert KeyApi(client, key).post(f"/api/user/{user['id']}/revoke").get_json()["data"]["api_keys"] == 1
    assert ApiKey.select().where(ApiKey.user == user["id"]).count() == 0
    assert "/api/user/{user_id}/revoke" in client.get("/api/openapi.json").get_json()["paths"]


# --- agents --------------------------------------------------------------------------------------


def _device(account_id: int, sip: str, user=None) -> Device:
    return Device.create(account=account_id, name=f"Desk {sip}", sip_username=sip, sip_a1_hash="0" * 32, user=user)


def test_forcing_another_agent_out_of_a_device_needs_agents(api, client, tenant):
    from engine.callcenter import agents

    clerk = make_agent(tenant.account_id, "clerk", permissions={"call_center_api": True})
    bob = make_agent(tenant.account_id, "bob")
    bobs, own, spare = (_device(tenant.account_id, sip) for sip in ("3001", "3002", "3003"))
    agents.check_in(tenant.account_id, bob.id, bobs.id, force=False)
    clerk_api = as_user(client, clerk.id)
    r = clerk_api.get("/api/cc_agent/checkInDevice", query_string={"device_id": bobs.id, "forceCheckOut": 1})
    assert r.status_code == 403
    assert r.get_json() == {"success": False,
                            "msg": f"Permission denied: agents (needed to check another agent out of device {bobs.id})"}
    assert AgentState.get_by_id(bob.id).device_id == bobs.id
    assert not AgentState.select().where((AgentState.user == clerk.id) & AgentState.device.is_null(False)).exists()
    # forceCheckOut on itself (moving from its own device) needs nothing more
    assert clerk_api.get("/api/cc_agent/checkInDevice", query_string={"device_id": own.id}).status_code == 200
    r = clerk_api.get("/api/cc_agent/checkInDevice", query_string={"device_id": spare.id, "forceCheckOut": 1})
    assert r.status_code == 200 and AgentState.get_by_id(clerk.id).device_id == spare.id
    # a check-in code that would take the phone from whoever holds it needs agents too
    r = clerk_api.get("/api/cc_agent/checkIn", query_string={"forceCheckOut": 1})
    assert r.status_code == 403 and r.get_json()["msg"] == "Permission denied: agents"
    assert clerk_api.get("/api/cc_agent/checkIn").status_code == 200
    # and every call naming another agent
    for call in ("checkOut", "wrapup", "setQueues?queue_ids=1", "setPause?id=0",
                 f"checkInDevice?device_id={spare.id}", "checkIn"):
        sep = "&" if "?" in call else "?"
        r = clerk_api.get(f"/api/cc_agent/{call}{sep}user_id={bob.id}")
        assert r.status_code == 403, call
    assert AgentState.get_by_id(bob.id).device_id == bobs.id
    User.update(permissions={"call_center_api": True, "agents": True}).where(User.id == clerk.id).execute()
    r = clerk_api.get("/api/cc_agent/checkInDevice", query_string={"device_id": bobs.id, "forceCheckOut": 1})
    assert r.status_code == 200 and AgentState.get_by_id(bob.id).device_id is None
