"""Account settings: domain, country, time zone, webhook URL and secret, gateway and the user defaults."""
from __future__ import annotations

import pytest

from engine.directory import security
from engine.directory.accounts import issue_api_key
from engine.store import changes
from engine.store.models import ACCOUNT_DEFAULTS, Account, Device, User

SETTINGS = {
    "name": "Acme Ltd", "domain": "pbx.acme.test", "country": "IL", "timezone": "Asia/Jerusalem",
    "event_push_url": "https://crm.example.com/hooks/pbx?x=1", "outbound_gateway": "carrier-1",
    "session_ttl": 3600, "max_snooze": 5, "wrap_up_time": 30, "no_answer_delay_time": 11, "reject_delay_time": 12,
    "busy_delay_time": 13, "max_no_answer": 4,
}


def put(api, **fields):
    return api.put("/api/account", json=fields)


def test_get_shows_settings_and_never_the_secret(api, tenant):
    data = api.get("/api/account").get_json()["data"]
    assert data["id"] == tenant.account_id and data["domain"] == "acme.test" and data["country"] == "US"
    assert data["webhook_secret_set"] is False and data["event_push_url"] is None
    for name, value in ACCOUNT_DEFAULTS.items():
        assert data[name] == value
    assert not {"webhook_secret", "webhook_secret_enc"} & data.keys()


def test_every_setting_round_trips(api):
    r = put(api, **SETTINGS)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()["data"]
    for key, value in SETTINGS.items():
        assert data[key] == value, key
    assert api.get("/api/account").get_json()["data"] == data


def test_partial_put(api):
    put(api, **SETTINGS)
    data = put(api, wrap_up_time=0).get_json()["data"]
    assert data["wrap_up_time"] == 0 and data["country"] == "IL" and data["domain"] == "pbx.acme.test"


def test_form_encoded(api):
    r = api.put("/api/account", data={"country": "de", "max_snooze": "2"})
    assert r.status_code == 200 and r.get_json()["data"]["country"] == "DE"
    assert r.get_json()["data"]["max_snooze"] == 2


@pytest.mark.parametrize(("field", "value"), [
    ("name", ""), ("domain", "not a host"), ("domain", "-bad.test"), ("domain", "a" * 300),
    ("country", "XX"), ("country", "USA"), ("country", "001"), ("timezone", "Mars/Olympus"),
    ("event_push_url", "ftp://example.com/x"), ("event_push_url", "example.com/x"),
    ("event_push_url", "https://"), ("event_push_url", "https://example.com:99999/"),
    ("outbound_gateway", "gw one"), ("outbound_gateway", "gw/1"), ("webhook_secret", "short"),
    ("session_ttl", 10), ("max_snooze", 101), ("wrap_up_time", -1), ("no_answer_delay_time", 86401),
    ("reject_delay_time", "x"), ("busy_delay_time", None), ("max_no_answer", 1001), ("country", None),
    ("name", "bad\x01name"),
])
def test_bad_values_400_naming_the_field(api, tenant, field, value):
    before = api.get("/api/account").get_json()["data"]
    r = put(api, **{field: value, "max_snooze": 9} if field != "max_snooze" else {field: value})
    assert r.status_code == 400, (field, value, r.get_json())
    assert r.get_json()["msg"].startswith(field), r.get_json()
    assert api.get("/api/account").get_json()["data"] == before


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://127.1/hook", "http://2130706433/", "http://0x7f000001/", "http://10.1.2.3/",
    "http://192.168.0.10:8080/", "http://172.16.5.5/", "http://169.254.169.254/latest/meta-data",
    "http://[::1]/", "http://[fe80::1]/", "http://[::ffff:10.0.0.1]/", "http://0.0.0.0/", "http://localhost:9000/",
    "https://api.localhost/", "http://100.64.0.1/",
    # IPv6 that embeds or routes to private IPv4, and the other special ranges
    "http://[2002:7f00:1::1]/", "http://[2002:c0a8:1::]/", "http://[fec0::1]/", "http://[64:ff9b::a00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "http://[::10.0.0.1]/", "http://[fc00::1]/",
    "http://[2001:db8::1]/", "http://[100::1]/",
])
def test_webhook_url_on_private_addresses_refused(api, app, url):
    r = put(api, event_push_url=url)
    assert r.status_code == 400, url
    assert r.get_json()["msg"] == "event_push_url: must not point to a loopback, link-local or private address"
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    r = put(api, event_push_url=url)
    assert r.status_code == 200 and r.get_json()["data"]["event_push_url"] == url


@pytest.mark.parametrize("url", [
    "http://%31%32%37.0.0.1/", "https://exa%6dple.com/hook", "http://[fe80::1%25eth0]/", "http://a_b.example/",
    "http://exa mple.com/", "http://example.com\\@10.0.0.1/",
])
def test_webhook_url_with_a_host_that_is_not_plain_refused_when_set(api, app, url):
    """Refused at once with 400, even where private targets are allowed, instead of failing at send
    time for 24 hours while the account's later events wait behind it."""
    app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    before = api.get("/api/account").get_json()["data"]["event_push_url"]
    r = put(api, event_push_url=url)
    assert r.status_code == 400, (url, r.get_json())
    assert r.get_json()["msg"].startswith("event_push_url: "), r.get_json()
    assert api.get("/api/account").get_json()["data"]["event_push_url"] == before


def test_webhook_url_public_and_cleared(api):
    for url in ("http://93.184.216.34/x", "https://hooks.example.com/pbx", "http://[2001:4860:4860::8888]/",
                "http://[2002:5db8:d822::1]/", "https://bücher.example/hook"):
        assert put(api, event_push_url=url).get_json()["data"]["event_push_url"] == url
    assert put(api, event_push_url="").get_json()["data"]["event_push_url"] is None
    put(api, event_push_url="https://hooks.example.com/pbx")
    assert put(api, event_push_url=None).get_json()["data"]["event_push_url"] is None


def test_webhook_secret_write_only_and_encrypted(api, tenant):
    secret = "s3cret-0123456789-abcdef"
    r = put(api, webhook_secret=secret)
    assert r.status_code == 200 and r.get_json()["data"]["webhook_secret_set"] is True
    assert secret not in r.get_data(as_text=True)
    stored = Account.get_by_id(tenant.account_id).webhook_secret_enc
    assert secret not in stored and security.decrypt_secret(stored) == secret
    assert put(api, name="x").get_json()["data"]["webhook_secret_set"] is True  # kept when not submitted
    assert put(api, webhook_secret="").get_json()["data"]["webhook_secret_set"] is False
    assert Account.get_by_id(tenant.account_id).webhook_secret_enc is None


def test_webhook_secret_without_a_key_is_a_4xx_naming_the_fix_and_changes_nothing(api, tenant, monkeypatch):
    monkeypatch.delenv(security.SECRET_KEY_ENV)
    security.use_key_file(None)
    try:
        r = put(api, webhook_secret="s3cret-0123456789-abcdef", name="Renamed", wrap_up_time=77)
        assert r.status_code == 409, r.get_json()
        assert r.get_json()["msg"].startswith("webhook_secret: cannot be stored: ")
        assert "switchdesk init" in r.get_json()["msg"] and security.SECRET_KEY_ENV in r.get_json()["msg"]
        account = Account.get_by_id(tenant.account_id)
        assert account.name != "Renamed" and account.wrap_up_time != 77 and account.webhook_secret_enc is None
    finally:
        security.use_key_file(None)


def test_key_file_is_read_when_the_environment_has_none(api, tenant, monkeypatch, tmp_path):
    monkeypatch.delenv(security.SECRET_KEY_ENV)
    path = tmp_path / "switchdesk.key"
    assert security.default_key_file(f"sqlite:///{tmp_path}/x.db") == str(path)
    assert security.create_key_file(str(path)) and not security.create_key_file(str(path))
    assert path.stat().st_mode & 0o777 == 0o600
    security.use_key_file(str(path))
    try:
        assert put(api, webhook_secret="s3cret-0123456789-abcdef").status_code == 200
        stored = Account.get_by_id(tenant.account_id).webhook_secret_enc
        assert security.decrypt_secret(stored) == "s3cret-0123456789-abcdef"
    finally:
        security.use_key_file(None)


def test_domain_lower_cased_unique_and_fixed_once_a_device_exists(api, tenant, other_tenant):
    assert put(api, domain="PBX.Acme.Test").get_json()["data"]["domain"] == "pbx.acme.test"
    r = put(api, domain="globex.test")
    assert r.status_code == 409 and r.get_json()["msg"] == "domain: globex.test is already used by another account"
    Device.create(account=tenant.account_id, name="desk", sip_username="1001", sip_a1_hash="0" * 32)
    r = put(api, domain="new.acme.test")
    assert r.status_code == 409 and "cannot change once the account has a device" in r.get_json()["msg"]
    assert Account.get_by_id(tenant.account_id).domain == "pbx.acme.test"
    # submitting the same domain is no change, and other settings still save
    r = put(api, domain="pbx.acme.test", wrap_up_time=44)
    assert r.status_code == 200 and r.get_json()["data"]["wrap_up_time"] == 44


def test_only_own_account_changes(api, other_api, tenant, other_tenant):
    put(api, **SETTINGS)
    other = other_api.get("/api/account").get_json()["data"]
    assert other["id"] == other_tenant.account_id and other["domain"] == "globex.test"
    assert other["country"] == "US" and other["wrap_up_time"] == ACCOUNT_DEFAULTS["wrap_up_time"]


def test_user_values_fall_back_to_the_account_defaults(api, tenant):
    r = api.post("/api/user", json={"name": "A", "username": "agent1", "password": "Ab123456",
                                    "email": "a@x.test", "wrap_up_time": 5})
    uid = r.get_json()["data"]["id"]
    put(api, wrap_up_time=60, max_no_answer=9)
    user, account = User.get_by_id(uid), Account.get_by_id(tenant.account_id)
    assert user.effective("wrap_up_time", account) == 5
    assert user.effective("max_no_answer", account) == 9
    api.put(f"/api/user/{uid}", json={"wrap_up_time": None})
    assert User.get_by_id(uid).effective("wrap_up_time", account) == 60


def test_settings_permission_required(api, client):
    r = api.post("/api/user", json={"name": "A", "username": "agent1", "password": "Ab123456", "email": "a@x.test",
                                    "permissions": {"call_center_api": True, "users": True}})
    key = issue_api_key(User.get_by_id(r.get_json()["data"]["id"]))
    for method in ("GET", "PUT"):
        r = client.open("/api/account", method=method, json={"name": "x"}, query_string={"api_key": key})
        assert r.status_code == 403 and r.get_json()["msg"] == "Permission denied: settings"


def test_change_notification(api, tenant):
    heard = []
    changes.listen(listener := lambda kind, account_id, ids: heard.append((kind, account_id, ids)))
    try:
        put(api, wrap_up_time=ACCOUNT_DEFAULTS["wrap_up_time"])  # no change
        put(api, country="ZZ")  # refused
        put(api, wrap_up_time=77)
    finally:
        changes.unlisten(listener)
    assert heard == [("account", tenant.account_id, [tenant.account_id])]


def test_serve_flag_reaches_the_app_config(monkeypatch):
    from engine import cli, server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda *a, **kw: seen.update(kw) or 0)
    assert cli.cmd_serve(cli.build_parser().parse_args(["serve", "--webhook-allow-private"])) == 0
    assert seen["webhook_allow_private"] is True
    assert cli.build_parser().parse_args(["serve"]).webhook_allow_private is False
