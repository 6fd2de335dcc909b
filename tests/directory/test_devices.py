"""Devices: SIP phones, their a1-hash, their owner and their own extension."""
from __future__ import annotations

import hashlib

from engine.store.models import Device, Extension
from tests.querycount import count_queries

PASSWORD = "phone1secret99"
DEVICE = {"name": "Desk phone", "sip_username": "desk.101", "sip_password": PASSWORD}


def create(api, **over):
    r = api.post("/api/device", json={**DEVICE, **over})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def a1(user: str, domain: str, password: str) -> str:
    return hashlib.md5(f"{user}:{domain}:{password}".encode()).hexdigest()


def test_create_returns_record_without_password(api, tenant):
    data = create(api, cid_num="+12125550100", cid_name="Front desk", ring=1, delay=5, timeout=20)
    assert data["account_id"] == tenant.account_id and data["name"] == "Desk phone"
    assert data["sip_username"] == "desk.101" and data["user_id"] is None
    assert (data["cid_num"], data["cid_name"], data["ring"], data["delay"], data["timeout"]) == (
        "+12125550100", "Front desk", 1, 5, 20)
    assert data["extension"] is None and data["extensions"] == ""
    assert data["registered"] is False
    for field in ("reg_contact", "reg_user_agent", "reg_network_ip", "reg_expires", "reg_ts"):
        assert data[field] is None
    assert "sip_password" not in data and "sip_a1_hash" not in data
    assert PASSWORD not in str(data)
    assert api.get(f"/api/device/{data['id']}").get_json()["data"] == data


def test_password_stored_only_as_a1_hash(api, tenant):
    data = create(api)
    row = Device.get_by_id(data["id"])
    assert row.sip_a1_hash == a1("desk.101", tenant.domain, PASSWORD)
    stored = " ".join(str(v) for v in row.__data__.values())
    assert PASSWORD not in stored
    # a new password, same username: a new hash
    api.put(f"/api/device/{data['id']}", json={"sip_password": "another1pass22"})
    assert Device.get_by_id(data["id"]).sip_a1_hash == a1("desk.101", tenant.domain, "another1pass22")


def test_new_username_needs_the_password(api, tenant):
    data = create(api)
    r = api.put(f"/api/device/{data['id']}", json={"sip_username": "desk.102"})
    assert r.status_code == 400
    assert r.get_json()["msg"] == "sip_password is required when sip_username changes"
    assert Device.get_by_id(data["id"]).sip_username == "desk.101"
    # the same username again is no change
    assert api.put(f"/api/device/{data['id']}", json={"sip_username": "desk.101"}).status_code == 200
    r = api.put(f"/api/device/{data['id']}", json={"sip_username": "desk.102", "sip_password": PASSWORD})
    assert r.status_code == 200 and r.get_json()["data"]["sip_username"] == "desk.102"
    assert Device.get_by_id(data["id"]).sip_a1_hash == a1("desk.102", tenant.domain, PASSWORD)


def test_sip_password_policy(api):
    for bad in ("short1abc", "onlyletterslong", "123456789012345", "has space 1234abc", "pässword12345",
                "x" * 130 + "1"):
        r = api.post("/api/device", json={**DEVICE, "sip_password": bad})
        assert r.status_code == 400, bad
        assert r.get_json()["msg"].startswith("sip_password:"), bad
    assert Device.select().count() == 0


def test_required_fields_and_formats(api, tenant):
    for missing in ("name", "sip_username", "sip_password"):
        r = api.post("/api/device", json={k: v for k, v in DEVICE.items() if k != missing})
        assert r.status_code == 400 and r.get_json()["msg"].startswith(missing + ":")
    for field, value in (("sip_username", "has space"), ("sip_username", "x" * 65), ("sip_username", "a@b"),
                         ("cid_num", "12a"), ("cid_num", "++1"), ("ring", -1), ("delay", 601), ("timeout", 0),
                         ("extension", "1"), ("extension", "12a"), ("extension", "***123456"),
                         ("cid_name", "bad\nname"), ("user_id", "abc")):
        r = api.post("/api/device", json={**DEVICE, field: value})
        assert r.status_code == 400, (field, value)
        assert r.get_json()["msg"].startswith(field + ":"), (field, r.get_json()["msg"])
    assert Device.select().count() == 0


def test_sip_username_unique_per_account_409(api, other_api):
    create(api)
    assert api.post("/api/device", json={**DEVICE, "name": "Other"}).status_code == 409
    assert api.post("/api/device", json={**DEVICE, "sip_username": "DESK.101"}).status_code == 409
    second = create(api, sip_username="desk.102")
    r = api.put(f"/api/device/{second['id']}", json={"sip_username": "desk.101", "sip_password": PASSWORD})
    assert r.status_code == 409
    # another account has its own domain, so the same username is fine there
    assert other_api.post("/api/device", json=DEVICE).status_code == 200


def test_assign_to_user_and_user_record_shows_devices(api, tenant, other_tenant):
    data = create(api, user_id=tenant.admin_id, ring=0, delay=3, timeout=25)
    assert data["user_id"] == tenant.admin_id
    user = api.get(f"/api/user/{tenant.admin_id}").get_json()["data"]
    assert user["devices"] == [{"device_id": data["id"], "ring": 0, "delay": 3, "timeout": 25, "name": "Desk phone"}]
    # another account's user is unknown: 400 naming the field
    r = api.post("/api/device", json={**DEVICE, "sip_username": "x1", "user_id": other_tenant.admin_id})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("user_id:")
    # unassign with null, or with 0 / "" from a form
    r = api.put(f"/api/device/{data['id']}", json={"user_id": None})
    assert r.get_json()["data"]["user_id"] is None
    assert api.get(f"/api/user/{tenant.admin_id}").get_json()["data"]["devices"] == []
    api.put(f"/api/device/{data['id']}", json={"user_id": tenant.admin_id})
    r = api.put(f"/api/device/{data['id']}", data={"user_id": "0"})
    assert r.status_code == 200 and r.get_json()["data"]["user_id"] is None


def test_partial_update_keeps_other_fields(api):
    data = create(api, cid_num="100", cid_name="Desk")
    r = api.put(f"/api/device/{data['id']}", json={"name": "Renamed", "registered": True, "reg_contact": "x"})
    new = r.get_json()["data"]
    assert new["name"] == "Renamed" and new["cid_num"] == "100" and new["cid_name"] == "Desk"
    assert new["registered"] is False and new["reg_contact"] is None  # read-only fields are ignored
    r = api.put(f"/api/device/{data['id']}", json={"cid_num": None, "cid_name": ""})
    assert r.get_json()["data"]["cid_num"] is None and r.get_json()["data"]["cid_name"] is None
    assert api.put(f"/api/device/{data['id']}", json={"name": None}).status_code == 400


def test_device_extension_created_renumbered_removed(api, tenant):
    data = create(api, extension="101")
    assert data["extension"] == "101" and data["extensions"] == "101"
    ext = Extension.get(Extension.number == "101")
    assert (ext.target_type, ext.target_id, ext.account_id) == ("device", data["id"], tenant.account_id)
    r = api.put(f"/api/device/{data['id']}", json={"extension": "102"})
    assert r.get_json()["data"]["extension"] == "102"
    assert Extension.get(Extension.target_id == data["id"]).id == ext.id  # renumbered, not replaced
    # an extension routed elsewhere is a conflict, and nothing changes
    other = create(api, sip_username="desk.200", extension="200")
    r = api.put(f"/api/device/{data['id']}", json={"extension": "200", "name": "Changed"})
    assert r.status_code == 409
    assert Device.get_by_id(data["id"]).name == "Desk phone"
    assert api.post("/api/device", json={**DEVICE, "sip_username": "x9", "extension": "200"}).status_code == 409
    assert Device.select().count() == 2
    r = api.put(f"/api/device/{data['id']}", json={"extension": None})
    assert r.get_json()["data"]["extension"] is None
    assert not Extension.select().where(Extension.target_id == data["id"], Extension.target_type == "device").exists()
    assert other["extension"] == "200"


def test_delete_removes_its_extensions(api):
    data = create(api, extension="101")
    api.post("/api/extension", json={"number": "555", "target_type": "device", "target_id": data["id"]})
    assert api.delete(f"/api/device/{data['id']}").status_code == 200
    assert api.get(f"/api/device/{data['id']}").status_code == 404
    assert Extension.select().count() == 0


def test_deleting_the_user_unassigns_the_device(api, tenant):
    user = api.post("/api/user", json={"name": "Agent", "username": "agent1", "password": "Ab123456",
                                      "email": "a@example.com"}).get_json()["data"]
    data = create(api, user_id=user["id"])
    assert api.delete(f"/api/user/{user['id']}").status_code == 200
    assert api.get(f"/api/device/{data['id']}").get_json()["data"]["user_id"] is None


def test_list_filters(api, tenant):
    create(api, name="Reception", sip_username="rec.1", user_id=tenant.admin_id)
    create(api, name="Lab", sip_username="lab.1")
    create(api, name="Storage", sip_username="store.rec")
    names = lambda r: [d["name"] for d in r.get_json()["data"]]  # noqa: E731
    assert names(api.get("/api/device")) == ["Reception", "Lab", "Storage"]
    assert names(api.get("/api/device?q=rec")) == ["Reception", "Storage"]
    assert names(api.get(f"/api/device?user_id={tenant.admin_id}")) == ["Reception"]
    assert names(api.get("/api/device?limit=1&offset=1")) == ["Lab"]


def test_other_accounts_device_is_404(api, other_api):
    data = create(api)
    assert other_api.get(f"/api/device/{data['id']}").status_code == 404
    assert other_api.put(f"/api/device/{data['id']}", json={"name": "Mine"}).status_code == 404
    assert other_api.delete(f"/api/device/{data['id']}").status_code == 404
    assert other_api.get("/api/device").get_json()["data"] == []
    assert Device.get_by_id(data["id"]).name == "Desk phone"


def test_lists_run_a_constant_number_of_queries(api, tenant, database):
    def measure(url):
        with count_queries(database) as counter:
            assert api.get(url).status_code == 200
        return counter.count

    create(api, sip_username="d0", extension="100", user_id=tenant.admin_id)
    few_devices, few_users = measure("/api/device"), measure("/api/user")
    for i in range(1, 25):
        create(api, sip_username=f"d{i}", extension=f"1{i:02d}", user_id=tenant.admin_id)
        api.post("/api/user", json={"name": f"U{i}", "username": f"user{i}", "password": "Ab123456",
                                    "email": f"u{i}@example.com"})
    assert measure("/api/device") == few_devices
    assert measure("/api/user") == few_users


def test_permission_module(client, tenant):
    from engine.store.models import User
    from tests.conftest import Api

    User.update(is_admin=False, permissions={"call_center_api": True}).where(User.id == tenant.admin_id).execute()
    api = Api(client, tenant)
    assert api.get("/api/device").status_code == 403
    assert api.post("/api/device", json=DEVICE).status_code == 403
    User.update(permissions={"call_center_api": True, "devices": True}).where(User.id == tenant.admin_id).execute()
    assert api.post("/api/device", json=DEVICE).status_code == 200


def test_account_domain_is_fixed_once_a_device_exists(api):
    assert api.put("/api/account", json={"domain": "acme2.test"}).status_code == 200
    create(api)
    assert api.put("/api/account", json={"domain": "acme3.test"}).status_code == 409


def test_changes_are_notified_after_commit(api, tenant):
    from engine.store import changes
    from engine.store.db import db

    heard = []

    def listener(kind, account_id, ids):
        heard.append((kind, account_id, ids, db.obj.in_transaction()))

    changes.listen(listener)
    try:
        data = create(api, extension="101")
        ext_id = Extension.get(Extension.number == "101").id
        assert ("device", tenant.account_id, [data["id"]], False) in heard
        assert ("extension", tenant.account_id, [ext_id], False) in heard
        heard.clear()
        api.put(f"/api/device/{data['id']}", json={"sip_username": "nope"})  # refused: nothing to hear
        assert heard == []
        api.delete(f"/api/device/{data['id']}")
        # the extension that routed to it went with it: the dialplan views hear of that too
        assert sorted(heard) == [("device", tenant.account_id, [data["id"]], False),
                                 ("extension", tenant.account_id, [ext_id], False)]
    finally:
        changes.unlisten(listener)
