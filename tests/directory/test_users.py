"""The Users section of the vendor document."""
from __future__ import annotations

from engine.store.models import User

USER = {"name": "John Smith", "username": "Jonh123", "password": "Ab123456", "email": "usersmail@mail.com",
        "in_reports": True, "is_agent": True}


def create(api, **over):
    r = api.post("/api/user", json={**USER, **over})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def test_create_returns_record_without_password(api, tenant):
    data = create(api)
    assert data["account_id"] == tenant.account_id
    again = api.get(f"/api/user/{data['id']}").get_json()["data"]
    assert again["is_agent"] is True and again["is_admin"] is False and again["override_device"] is False
    assert data["active"] == 1 and data["in_reports"] is True and data["pgroup_id"] == 0
    assert data["username"] == "Jonh123" and data["name"] == "John Smith"
    assert "password" not in data and "password_hash" not in data
    for field in ("devices", "queues", "queue_perms"):
        assert data[field] == []
    assert data["extensions"] == "" and data["dids"] == "" and data["online"] == 0
    assert data["pause_id"] == 0 and data["vm_name"] is None  # pause_id 0: not paused, as setPause?id=0
    assert data["timezone"] == "UTC"


def test_every_documented_field_round_trips(api, tenant):
    from engine.store.models import Extension, Site, VoicemailBox

    VoicemailBox.create(id=8, account=tenant.account_id, name="Front desk")  # vm_id names a box of the account
    for site_id in (1, 2):  # sites name sites of the account, blf_ext one of its extensions
        Site.create(id=site_id, account=tenant.account_id, name=f"Site {site_id}")
    Extension.create(account=tenant.account_id, number="820", target_type="queue", target_id=1)
    full = {**USER, "active": 0, "timezone": "Asia/Jerusalem", "sites": [1, 2], "groups": "3,4",
            "intercept_groups": [5], "intercept_other_groups": [6], "geo_limit": "il,US", "follow_me": 15,
            "dr_id": 7, "call_timeout": 30, "vm_id": 8, "permissions": {"queues": True},
            "override_device": True, "ecnam": "Sales", "ecnum": "+97231234567", "ocnam": "Acme",
            "ocnum": "18005551234", "user_record": 1, "cnum_by_country": {"GB": "+442079460123"}, "blf_ext": "820",
            "rec_inb_ext": 1,
            "rec_out_ext": 0, "rec_inb_int": 1, "rec_out_int": 0, "session_ttl": 600, "max_snooze": 2,
            "wrap_up_time": 20, "no_answer_delay_time": 5, "reject_delay_time": 6, "busy_delay_time": 7,
            "max_no_answer": 4, "api_ip_ranges": "10.0.0.0/8,192.168.1.7"}
    data = create(api, **full)
    expected = {**full, "groups": [3, 4], "geo_limit": "IL,US", "api_ip_ranges": ["10.0.0.0/8", "192.168.1.7/32"]}
    for key, value in expected.items():
        if key == "password":
            continue
        assert data[key] == value, key
    again = api.get(f"/api/user/{data['id']}").get_json()["data"]
    assert again == data


def test_password_policy(api):
    for bad in ("Ab1", "abcdefgh1", "ABCDEFGH1", "Abcdefghi"):
        r = api.post("/api/user", json={**USER, "password": bad})
        assert r.status_code == 400
        assert r.get_json()["msg"].startswith("password:")
    assert User.select().where(User.username == "Jonh123").count() == 0


def test_password_stored_as_slow_hash(api):
    create(api)
    stored = User.get(User.username == "Jonh123").password_hash
    assert stored.startswith("$argon2id$") and "Ab123456" not in stored


def test_required_fields(api):
    for missing in ("name", "username", "password", "email"):
        body = {k: v for k, v in USER.items() if k != missing}
        r = api.post("/api/user", json=body)
        assert r.status_code == 400
        assert r.get_json()["msg"].startswith(missing + ":")


def test_unique_username_and_email_409(api, other_api):
    create(api)
    r = api.post("/api/user", json={**USER, "email": "other@mail.com", "username": "JONH123"})
    assert r.status_code == 409
    r = api.post("/api/user", json={**USER, "username": "someoneelse", "email": "USERSMAIL@mail.com"})
    assert r.status_code == 409
    # unique across accounts too: the username is the login name
    r = other_api.post("/api/user", json={**USER, "email": "x@y.com"})
    assert r.status_code == 409


def test_partial_put_changes_only_submitted(api):
    data = create(api, timezone="Europe/Paris", follow_me=5)
    r = api.put(f"/api/user/{data['id']}", json={"name": "Johnny", "id": 999, "account_id": 42, "ts": 1,
                                                  "last_login": 5})
    assert r.status_code == 200
    new = r.get_json()["data"]
    assert new["name"] == "Johnny"
    assert new["id"] == data["id"] and new["account_id"] == data["account_id"] and new["ts"] == data["ts"]
    assert new["last_login"] is None
    assert {k: v for k, v in new.items() if k != "name"} == {k: v for k, v in data.items() if k != "name"}


def test_put_null_override_falls_back_to_default(api):
    data = create(api, wrap_up_time=30)
    new = api.put(f"/api/user/{data['id']}", json={"wrap_up_time": None}).get_json()["data"]
    assert new["wrap_up_time"] is None
    r = api.put(f"/api/user/{data['id']}", json={"name": None})
    assert r.status_code == 400


def test_put_password_changes_login(api, client):
    data = create(api)
    assert api.put(f"/api/user/{data['id']}", json={"password": "Zz987654"}).status_code == 200
    assert client.post("/api/user/login", json={"username": "Jonh123", "password": "Ab123456"}).status_code == 401
    assert client.post("/api/user/login", json={"username": "Jonh123", "password": "Zz987654"}).status_code == 200


def test_search_q_and_is_agent(api):
    create(api)
    create(api, name="Mary Major", username="mary", email="mary@corp.example", is_agent=False)
    create(api, name="Bob", username="bobby", email="robert@MAIL.com", is_agent=True)

    def names(**params):
        return sorted(u["username"] for u in api.get("/api/user", query_string=params).get_json()["data"])

    assert names(q="MARY") == ["mary"]
    assert names(q="mail.com") == ["Jonh123", "bobby"]
    assert names(q="jonh") == ["Jonh123"]
    assert names(q="%") == []
    assert names(is_agent=1) == ["Jonh123", "bobby"]
    assert names(is_agent=0) == ["admin", "mary"]
    assert names(q="o", is_agent=1) == ["Jonh123", "bobby"]
    assert len(api.get("/api/user", query_string={"limit": 2}).get_json()["data"]) == 2
    create(api, name="Jane", username="jane_doe", email="jane@corp.example")
    create(api, name="Janex", username="janexdoe", email="jx@corp.example")
    assert names(q="e_d") == ["jane_doe"]  # `_` (and `%`) match themselves, not any character

    def ids(**params):
        return [u["id"] for u in api.get("/api/user", query_string=params).get_json()["data"]]

    everyone = ids()
    assert len(everyone) == 6 and everyone == sorted(everyone)
    assert ids(limit=2, offset=1) == everyone[1:3]
    assert ids(offset=4) == everyone[4:]
    assert ids(q="jane", limit=1, offset=1) == everyone[5:6]


def test_delete_user(api):
    data = create(api)
    assert api.delete(f"/api/user/{data['id']}").get_json() == {"success": True}
    assert api.get(f"/api/user/{data['id']}").status_code == 404
    assert api.delete(f"/api/user/{data['id']}").status_code == 404


def test_cannot_delete_self(api, tenant):
    r = api.delete(f"/api/user/{tenant.admin_id}")
    assert r.status_code == 400


def test_other_account_is_404(api, other_api):
    data = create(api)
    for method in ("GET", "PUT", "DELETE"):
        r = other_api(method, f"/api/user/{data['id']}", json={"name": "x"})
        assert r.status_code == 404, method
    assert all(u["account_id"] != data["account_id"] for u in other_api.get("/api/user").get_json()["data"])
    assert api.get(f"/api/user/{data['id']}").get_json()["data"]["name"] == "John Smith"


def test_list_is_constant_queries(api, database):
    for i in range(30):
        create(api, username=f"user{i}", email=f"u{i}@example.com")
    from tests.querycount import count_queries

    with count_queries(database) as few:
        assert len(api.get("/api/user").get_json()["data"]) == 31
    for i in range(30, 60):
        create(api, username=f"user{i}", email=f"u{i}@example.com")
    with count_queries(database) as many:
        assert len(api.get("/api/user").get_json()["data"]) == 61
    assert few.count == many.count
