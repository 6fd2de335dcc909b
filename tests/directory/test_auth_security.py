"""Sessions, lock-out, geo limits, IP ranges, permissions and secret handling."""
from __future__ import annotations

import time

import gevent

from engine.directory import security
from engine.store.models import ApiKey, LoginFailure, User, UserSession

AGENT = {"name": "Agent Smith", "username": "smith", "password": "Ab123456", "email": "smith@example.com"}


def make_user(api, **over):
    r = api.post("/api/user", json={**AGENT, **over})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def login(client, username="smith", password="Ab123456", ip="127.0.0.1"):
    return client.post("/api/user/login", json={"username": username, "password": password},
                       environ_base={"REMOTE_ADDR": ip})


def test_login_sets_session_cookie_and_last_login(api, client):
    user = make_user(api, permissions={"users": True})
    r = login(client)
    assert r.status_code == 200
    cookie = r.headers["Set-Cookie"]
    assert "switchdesk_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert r.get_json()["data"]["last_login"] >= int(time.time()) - 5
    # the cookie alone authenticates, without the Call Center API permission
    assert client.get("/api/user").status_code == 200
    assert client.get(f"/api/user/{user['id']}").get_json()["data"]["username"] == "smith"
    # the token is stored only as a digest
    token = client.get_cookie("switchdesk_session").value
    assert UserSession.get().digest == security.digest(token) != token


def test_logout_ends_session(api, client):
    make_user(api)
    login(client)
    assert client.get("/api/user/logout").get_json() == {"success": True}
    assert client.get("/api/user/logout").status_code == 401
    assert UserSession.select().count() == 0


def test_session_expires_after_ttl(api, client):
    make_user(api, session_ttl=60)
    r = login(client)
    assert "Max-Age=60" in r.headers["Set-Cookie"]
    session = UserSession.get()
    assert session.expires - int(time.time()) in range(55, 61)
    UserSession.update(expires=int(time.time()) - 1).execute()
    assert client.get("/api/user/logout").status_code == 401


def test_session_ttl_account_default(api, client, tenant):
    make_user(api)
    login(client)
    from engine.store.models import Account

    ttl = Account.get_by_id(tenant.account_id).session_ttl
    assert UserSession.get().expires - int(time.time()) in range(ttl - 5, ttl + 1)


def test_wrong_password_401_and_lockout_after_five(api, client):
    make_user(api)
    for _ in range(5):
        assert login(client, password="Wrong1234").status_code == 401
    r = login(client)  # correct password, but locked
    assert r.status_code == 429
    assert "Too many failed logins" in r.get_json()["msg"]
    # 15 minutes later the lock is gone
    LoginFailure.update(locked_until=int(time.time()) - 1, first_failure=int(time.time()) - 1000).execute()
    assert login(client).status_code == 200
    assert LoginFailure.select().count() == 0


def test_success_resets_failure_count(api, client):
    make_user(api)
    for _ in range(4):
        login(client, password="Wrong1234")
    assert login(client).status_code == 200
    for _ in range(4):
        login(client, password="Wrong1234")
    assert login(client).status_code == 200


def test_unknown_user_login_401(client, tenant):
    assert login(client, username="nobody").status_code == 401


def test_inactive_user_cannot_log_in(api, client):
    make_user(api, active=0)
    assert login(client).status_code == 401


def test_geo_limit(api, client):
    make_user(api, geo_limit="IL")
    assert login(client, ip="8.8.8.8").status_code == 403  # US
    assert login(client, ip="81.218.1.1").status_code == 200  # IL
    assert login(client, ip="10.1.2.3").status_code == 200  # private: no country, the admin's own network


def test_missing_permission_403(api, client, tenant):
    user = make_user(api, permissions={"call_center_api": True})
    from engine.directory.accounts import issue_api_key

    key = issue_api_key(User.get_by_id(user["id"]))
    r = client.get("/api/user", query_string={"api_key": key})
    assert r.status_code == 403
    assert r.get_json() == {"success": False, "msg": "Permission denied: users"}
    # own record is readable, and is the record an admin reads
    own = client.get(f"/api/user/{user['id']}", query_string={"api_key": key})
    assert own.status_code == 200
    assert own.get_json()["data"] == api.get(f"/api/user/{user['id']}").get_json()["data"]


def test_key_needs_call_center_api_permission(api, client):
    user = make_user(api, permissions={"users": True})
    from engine.directory.accounts import issue_api_key

    key = issue_api_key(User.get_by_id(user["id"]))
    r = client.get("/api/user", query_string={"api_key": key})
    assert r.status_code == 403
    assert r.get_json()["msg"] == "Permission denied: call_center_api"


def test_permission_groups_and_overrides(api, client):
    group = api.post("/api/pgroup", json={"name": "Supervisors",
                                          "permissions": {"call_center_api": True, "users": True}}).get_json()["data"]
    user = make_user(api, pgroup_id=group["id"])
    assert user["pgroup"] == "Supervisors" and user["pgroup_id"] == group["id"]
    from engine.directory.accounts import issue_api_key

    key = issue_api_key(User.get_by_id(user["id"]))
    assert client.get("/api/user", query_string={"api_key": key}).status_code == 200
    api.put(f"/api/user/{user['id']}", json={"permissions": {"users": False}})
    assert client.get("/api/user", query_string={"api_key": key}).status_code == 403
    assert api.post("/api/user", json={**AGENT, "username": "x1", "email": "x1@e.com",
                                       "pgroup_id": 9999}).status_code == 400


def test_non_admin_cannot_escalate(api, client):
    user = make_user(api, permissions={"call_center_api": True, "users": True})
    from engine.directory.accounts import issue_api_key

    key = issue_api_key(User.get_by_id(user["id"]))
    r = client.put(f"/api/user/{user['id']}", json={"permissions": {"settings": True}},
                   headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403
    r = client.post("/api/pgroup", json={"name": "x", "permissions": {"reports": True}},
                    headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403


def test_api_ip_ranges(api, client):
    user = make_user(api, permissions={"call_center_api": True, "users": True}, api_ip_ranges=["192.0.2.0/24"])
    from engine.directory.accounts import issue_api_key

    key = issue_api_key(User.get_by_id(user["id"]))
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/user", headers=headers, environ_base={"REMOTE_ADDR": "192.0.2.9"}).status_code == 200
    r = client.get("/api/user", headers=headers, environ_base={"REMOTE_ADDR": "198.51.100.1"})
    assert r.status_code == 403


def test_api_key_stored_as_sha256_only(tenant):
    rows = list(ApiKey.select())
    assert len(rows) == 1
    secret = tenant.key.split("_", 2)[2]
    assert rows[0].digest == security.digest(secret)
    assert secret not in rows[0].digest and len(secret) >= 43  # 256 bits, base64


def test_password_hashing_does_not_block_other_greenlets():
    ticks = []

    def ticker():
        for _ in range(200):
            ticks.append(time.monotonic())
            gevent.sleep(0.001)

    t = gevent.spawn(ticker)
    start = time.monotonic()
    hashes = [security.hash_password("Ab123456xyz") for _ in range(3)]
    elapsed = time.monotonic() - start
    t.kill()
    assert all(h.startswith("$argon2id$") for h in hashes)
    during = [x for x in ticks if start <= x <= start + elapsed]
    # the ticker kept running while the hashes were computed in the thread pool
    assert len(during) >= 3
    assert security.verify_password(hashes[0], "Ab123456xyz")
    assert not security.verify_password(hashes[0], "wrong")
    assert not security.verify_password(None, "anything")


def test_webhook_secret_encryption_round_trip():
    token = security.encrypt_secret("s3cret")
    assert "s3cret" not in token
    assert security.decrypt_secret(token) == "s3cret"
