"""Extensions and DIDs: numbers routed to users, devices and queues; users' read-only number fields."""
from __future__ import annotations

import pytest

from engine.directory import extensions
from engine.store import db as dbmod
from engine.store.models import Account, Did, Extension, Queue, User

DEVICE = {"name": "Phone", "sip_username": "phone1", "sip_password": "phone1secret99"}


def post(api, url, **body):
    r = api.post(url, json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


@pytest.fixture
def targets(api, tenant):
    device = post(api, "/api/device", **DEVICE)
    queue = Queue.create(account=tenant.account_id, name="Sales")
    return {"user": tenant.admin_id, "device": device["id"], "queue": queue.id}


def test_extension_crud(api, tenant, targets):
    data = post(api, "/api/extension", number="201", target_type="user", target_id=targets["user"])
    assert data["account_id"] == tenant.account_id
    assert (data["number"], data["target_type"], data["target_id"]) == ("201", "user", targets["user"])
    assert api.get(f"/api/extension/{data['id']}").get_json()["data"] == data
    r = api.put(f"/api/extension/{data['id']}", json={"target_type": "queue", "target_id": targets["queue"]})
    assert r.get_json()["data"]["number"] == "201" and r.get_json()["data"]["target_type"] == "queue"
    r = api.put(f"/api/extension/{data['id']}", json={"number": "*72#"})
    assert r.get_json()["data"]["number"] == "*72#" and r.get_json()["data"]["target_id"] == targets["queue"]
    assert api.delete(f"/api/extension/{data['id']}").status_code == 200
    assert api.get(f"/api/extension/{data['id']}").status_code == 404


def test_extension_numbers_unique_across_target_types_409(api, targets):
    post(api, "/api/extension", number="300", target_type="queue", target_id=targets["queue"])
    for kind in ("user", "device", "queue"):
        r = api.post("/api/extension", json={"number": "300", "target_type": kind, "target_id": targets[kind]})
        assert r.status_code == 409 and r.get_json()["msg"].startswith("number:")
    other = post(api, "/api/extension", number="301", target_type="user", target_id=targets["user"])
    assert api.put(f"/api/extension/{other['id']}", json={"number": "300"}).status_code == 409
    assert Extension.select().count() == 2


def test_the_same_number_in_another_account_is_fine(api, other_api, targets, other_tenant):
    post(api, "/api/extension", number="300", target_type="user", target_id=targets["user"])
    post(other_api, "/api/extension", number="300", target_type="user", target_id=other_tenant.admin_id)


def test_extension_bad_input_names_the_field(api, targets, other_tenant):
    cases = [
        ({"number": "1", "target_type": "user", "target_id": targets["user"]}, "number"),
        ({"number": "12345678901234567", "target_type": "user", "target_id": targets["user"]}, "number"),
        ({"number": "12a", "target_type": "user", "target_id": targets["user"]}, "number"),
        ({"number": "***123456", "target_type": "user", "target_id": targets["user"]}, "number"),
        ({"number": "200", "target_type": "group", "target_id": 1}, "target_type"),
        ({"number": "200", "target_type": "user", "target_id": other_tenant.admin_id}, "target_id"),
        ({"number": "200", "target_type": "device", "target_id": 999}, "target_id"),
        ({"number": "200", "target_type": "queue", "target_id": 999}, "target_id"),
        ({"number": "200", "target_type": "user"}, "target_id"),
    ]
    for body, field in cases:
        r = api.post("/api/extension", json=body)
        assert r.status_code == 400, body
        assert r.get_json()["msg"].startswith(field + ":"), (body, r.get_json()["msg"])
    assert "999" in api.post("/api/extension", json=cases[6][0]).get_json()["msg"]
    assert Extension.select().count() == 0
    data = post(api, "/api/extension", number="200", target_type="user", target_id=targets["user"])
    r = api.put(f"/api/extension/{data['id']}", json={"target_id": 999})  # checked on PUT too
    assert r.status_code == 400 and r.get_json()["msg"].startswith("target_id:")
    assert Extension.get_by_id(data["id"]).target_id == targets["user"]


def test_extension_list_filters(api, targets):
    post(api, "/api/extension", number="210", target_type="user", target_id=targets["user"])
    post(api, "/api/extension", number="100", target_type="queue", target_id=targets["queue"])
    post(api, "/api/extension", number="211", target_type="device", target_id=targets["device"])
    numbers = lambda q: [e["number"] for e in api.get("/api/extension", query_string=q).get_json()["data"]]  # noqa: E731
    assert numbers({}) == ["100", "210", "211"]
    assert numbers({"number": "21"}) == ["210", "211"]
    assert numbers({"target_type": "queue"}) == ["100"]
    assert numbers({"target_type": "device", "target_id": targets["device"]}) == ["211"]


def test_other_accounts_extension_and_did_are_404(api, other_api, targets):
    ext = post(api, "/api/extension", number="201", target_type="user", target_id=targets["user"])
    did = post(api, "/api/did", number="+12125550100", target_type="user", target_id=targets["user"])
    for url in (f"/api/extension/{ext['id']}", f"/api/did/{did['id']}"):
        assert other_api.get(url).status_code == 404
        assert other_api.put(url, json={"number": "202"}).status_code == 404
        assert other_api.delete(url).status_code == 404
    assert other_api.get("/api/extension").get_json()["data"] == []
    assert other_api.get("/api/did").get_json()["data"] == []


def test_did_crud_and_normalisation(api, tenant, targets):
    data = post(api, "/api/did", number="(212) 555-0100", target_type="queue", target_id=targets["queue"])
    assert data["number"] == "+12125550100"  # the account's country is US
    assert api.get(f"/api/did/{data['id']}").get_json()["data"] == data
    Account.update(country="DE").where(Account.id == tenant.account_id).execute()
    r = api.put(f"/api/did/{data['id']}", json={"number": "030 1234567", "target_type": "user",
                                                 "target_id": targets["user"]})
    assert r.get_json()["data"]["number"] == "+49301234567"
    assert r.get_json()["data"]["target_type"] == "user"
    assert api.delete(f"/api/did/{data['id']}").status_code == 200
    assert Did.select().count() == 0


def test_did_rules(api, other_api, targets, other_tenant):
    post(api, "/api/did", number="+12125550100", target_type="user", target_id=targets["user"])
    # unique across accounts: the public context finds the account by the number
    r = other_api.post("/api/did", json={"number": "2125550100", "target_type": "user",
                                         "target_id": other_tenant.admin_id})
    assert r.status_code == 409 and r.get_json()["msg"].startswith("number:")
    for body, field in (
        ({"number": "12", "target_type": "user", "target_id": targets["user"]}, "number"),
        ({"number": "abc", "target_type": "user", "target_id": targets["user"]}, "number"),
        ({"number": "+1212555010099999", "target_type": "user", "target_id": targets["user"]}, "number"),
        ({"number": "+12125550101", "target_type": "device", "target_id": targets["device"]}, "target_type"),
        ({"number": "+12125550101", "target_type": "queue", "target_id": 999}, "target_id"),
    ):
        r = api.post("/api/did", json=body)
        assert r.status_code == 400, body
        assert r.get_json()["msg"].startswith(field + ":"), (body, r.get_json()["msg"])
    assert Did.select().count() == 1


def test_user_record_shows_its_own_extensions_and_dids(api, tenant, targets):
    post(api, "/api/extension", number="202", target_type="user", target_id=targets["user"])
    post(api, "/api/extension", number="201", target_type="user", target_id=targets["user"])
    post(api, "/api/extension", number="299", target_type="device", target_id=targets["device"])
    post(api, "/api/did", number="+12125550101", target_type="user", target_id=targets["user"])
    post(api, "/api/did", number="+12125550100", target_type="user", target_id=targets["user"])
    user = api.get(f"/api/user/{tenant.admin_id}").get_json()["data"]
    assert user["extensions"] == "201,202"  # the device's extension is not the user's
    assert user["dids"] == "+12125550100,+12125550101"


def test_deleting_a_user_removes_its_numbers(api, tenant):
    user = post(api, "/api/user", name="Agent", username="agent1", password="Ab123456", email="a@example.com")
    post(api, "/api/extension", number="201", target_type="user", target_id=user["id"])
    post(api, "/api/did", number="+12125550100", target_type="user", target_id=user["id"])
    keep = post(api, "/api/extension", number="202", target_type="user", target_id=tenant.admin_id)
    assert api.delete(f"/api/user/{user['id']}").status_code == 200
    assert [e.id for e in Extension.select()] == [keep["id"]]
    assert Did.select().count() == 0
    assert User.get_or_none(User.id == user["id"]) is None


def test_loaders_and_delete_for(api, targets):
    post(api, "/api/extension", number="500", target_type="queue", target_id=targets["queue"])
    post(api, "/api/extension", number="400", target_type="queue", target_id=targets["queue"])
    post(api, "/api/did", number="+12125550100", target_type="queue", target_id=targets["queue"])
    assert extensions.numbers_for("queue", [targets["queue"], 999]) == {targets["queue"]: ["400", "500"], 999: []}
    assert extensions.dids_for("queue", [targets["queue"]]) == {targets["queue"]: ["+12125550100"]}
    assert extensions.routes_for("queue", [targets["queue"], 999]) == (
        {targets["queue"]: ["400", "500"], 999: []}, {targets["queue"]: ["+12125550100"], 999: []})
    with pytest.raises(RuntimeError):
        extensions.delete_for("queue", [targets["queue"]])  # only inside the deleting transaction
    with dbmod.db.atomic():
        assert extensions.delete_for("queue", [targets["queue"]]) == 3
    assert extensions.numbers_for("queue", [targets["queue"]]) == {targets["queue"]: []}


def test_writing_a_number_needs_the_target_modules_permission(client, tenant, targets):
    from tests.conftest import Api

    User.update(is_admin=False, permissions={"call_center_api": True, "devices": True}).where(
        User.id == tenant.admin_id).execute()
    api = Api(client, tenant)
    r = api.post("/api/extension", json={"number": "201", "target_type": "queue", "target_id": targets["queue"]})
    assert r.status_code == 403 and r.get_json()["msg"] == "Permission denied: queues"
    dev = post(api, "/api/extension", number="202", target_type="device", target_id=targets["device"])
    r = api.put(f"/api/extension/{dev['id']}", json={"target_type": "user", "target_id": targets["user"]})
    assert r.status_code == 403
    Extension.create(account=tenant.account_id, number="203", target_type="queue", target_id=targets["queue"])
    assert [e["number"] for e in api.get("/api/extension").get_json()["data"]] == ["202"]
    assert api.get("/api/extension?target_type=queue").status_code == 403
    assert api.get("/api/did").get_json()["data"] == []
    assert api.post("/api/did", json={"number": "+12125550100", "target_type": "user",
                                      "target_id": targets["user"]}).status_code == 403
