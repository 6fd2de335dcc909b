"""Pause reasons: the ids setPause takes, and the reserved system reason for On Break."""
from __future__ import annotations

from engine.callcenter import pauses
from engine.store.models import PauseReason


def create(api, **body):
    r = api.post("/api/pause", json={"name": "Lunch", "max_duration": 1800, **body})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def test_crud(api, tenant):
    data = create(api)
    assert data["account_id"] == tenant.account_id
    assert (data["name"], data["max_duration"], data["system"]) == ("Lunch", 1800, False)
    assert api.get(f"/api/pause/{data['id']}").get_json()["data"] == data
    r = api.put(f"/api/pause/{data['id']}", json={"max_duration": 0})
    assert r.get_json()["data"]["max_duration"] == 0 and r.get_json()["data"]["name"] == "Lunch"
    assert api.delete(f"/api/pause/{data['id']}").status_code == 200
    assert api.get(f"/api/pause/{data['id']}").status_code == 404


def test_defaults_and_bad_input(api):
    r = api.post("/api/pause", data={"name": "Training"})
    assert r.status_code == 200 and r.get_json()["data"]["max_duration"] == 0
    for body, field in (({"max_duration": 10}, "name"), ({"name": ""}, "name"), ({"name": "x", "max_duration": -1},
                        "max_duration"), ({"name": "x", "max_duration": 86401}, "max_duration"),
                        ({"name": "x", "max_duration": "ten"}, "max_duration"), ({"name": "a\x01"}, "name")):
        r = api.post("/api/pause", json=body)
        assert r.status_code == 400, body
        assert r.get_json()["msg"].startswith(field + ":"), body
    assert PauseReason.select().count() == 1


def test_name_unique_per_account_409(api, other_api):
    create(api)
    assert api.post("/api/pause", json={"name": "Lunch"}).status_code == 409
    other = create(api, name="Coffee")
    assert api.put(f"/api/pause/{other['id']}", json={"name": "Lunch"}).status_code == 409
    assert other_api.post("/api/pause", json={"name": "Lunch"}).status_code == 200


def test_system_reason_is_listed_and_fixed(api, tenant):
    create(api)
    listed = api.get("/api/pause").get_json()["data"]
    system = [r for r in listed if r["system"]]
    assert len(system) == 1 and system[0]["name"] == "On Break"
    assert pauses.system_reason(tenant.account_id).id == system[0]["id"]  # created once only
    assert len(api.get("/api/pause").get_json()["data"]) == 2
    sid = system[0]["id"]
    r = api.put(f"/api/pause/{sid}", json={"max_duration": 60})
    assert r.status_code == 400
    assert api.delete(f"/api/pause/{sid}").status_code == 400
    assert PauseReason.get_by_id(sid).max_duration == 0
    # clients cannot take the reserved name
    for name in ("On Break", "on break"):
        assert api.post("/api/pause", json={"name": name}).status_code == 400


def test_system_reason_is_per_account(api, other_api, tenant, other_tenant):
    mine = pauses.system_reason(tenant.account_id)
    theirs = pauses.system_reason(other_tenant.account_id)
    assert mine.id != theirs.id and pauses.system_reason(tenant.account_id).id == mine.id
    assert other_api.get(f"/api/pause/{mine.id}").status_code == 404


def test_other_accounts_reason_is_404(api, other_api):
    data = create(api)
    assert other_api.get(f"/api/pause/{data['id']}").status_code == 404
    assert other_api.put(f"/api/pause/{data['id']}", json={"name": "Mine"}).status_code == 404
    assert other_api.delete(f"/api/pause/{data['id']}").status_code == 404
    assert [r["name"] for r in other_api.get("/api/pause").get_json()["data"]] == ["On Break"]
    assert PauseReason.get_by_id(data["id"]).name == "Lunch"


def test_permission_module(client, tenant):
    from engine.store.models import User
    from tests.conftest import Api

    User.update(is_admin=False, permissions={"call_center_api": True}).where(User.id == tenant.admin_id).execute()
    api = Api(client, tenant)
    assert api.get("/api/pause").status_code == 403
    User.update(permissions={"call_center_api": True, "pauses": True}).where(User.id == tenant.admin_id).execute()
    assert api.get("/api/pause").status_code == 200
