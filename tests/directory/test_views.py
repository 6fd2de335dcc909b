"""engine.directory.views: the call path's in-memory directory and kept xml_curl answers.

Kept answers equal freshly built ones, and every change made through the API is
served from the moment the API call returns (the change notices of
engine.store.changes drop what they change). On PostgreSQL, a change another
process commits is served once its notice is heard, and nothing is kept while
nobody hears.
"""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from api import create_app
from api.freeswitch import _UrlencodedForm
from engine.calls import call_fields
from engine.directory import fscache, views
from engine.store import changes, fastq
from engine.store.models import Account, Device, Did, Extension, Queue, User
from tests.api.test_xml_curl import example, recorded_requests  # noqa: F401 - `example` is a fixture
from tests.conftest import Api
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("SWITCHDESK_TEST_DB", "")
needs_pg = pytest.mark.skipif(not PG_URL.startswith("postgres"),
                              reason="needs SWITCHDESK_TEST_DB=postgresql://... (the PostgreSQL run of .ci/run)")
AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:xml-s3cret").decode(),
        "Content-Type": "application/x-www-form-urlencoded"}
PASSWORD = "phone1secret99"


@pytest.fixture
def client(database):
    return create_app({"TESTING": True, "XMLCURL_PASSWORD": "xml-s3cret"}).test_client()


@pytest.fixture
def api(client, tenant) -> Api:
    return Api(client, tenant)


@pytest.fixture
def cache_on(monkeypatch, database):
    """The views on; on PostgreSQL with this process hearing other processes' changes, as `serve` does."""
    monkeypatch.setenv(views.ENV, "1")
    views.clear()
    remote = None
    if PG_URL.startswith("postgres"):
        from engine.store import pgnotify

        remote = pgnotify.RemoteChanges.for_database(database, backoff=(0.05, 0.2)).start()
        assert remote.wait_listening(5)
    yield
    if remote is not None:
        remote.stop()
    views.clear()


def xml(client, section: str, fields: dict[str, str]) -> bytes:
    r = client.post(f"/freeswitch/{section}", data=urllib.parse.urlencode(fields).encode(), headers=AUTH,
                    environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert r.status_code == 200
    return r.data


def directory(client, domain: str, user: str) -> bytes:
    return xml(client, "directory", {"section": "directory", "action": "sip_auth", "user": user, "domain": domain})


def dialplan(client, context: str, number: str, **variables: str) -> bytes:
    return xml(client, "dialplan", {"section": "dialplan", "Hunt-Context": context, "Hunt-Destination-Number": number,
                                    **{f"variable_{k}": v for k, v in variables.items()}})


def a1(user: str, domain: str, password: str) -> bytes:
    return hashlib.md5(f"{user}:{domain}:{password}".encode()).hexdigest().encode()


NOT_FOUND = b'status="not found"'


def make_device(api, **fields) -> dict:
    r = api.post("/api/device", json={"name": "Desk", "sip_username": "desk.101", "sip_password": PASSWORD, **fields})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


# -- kept answers are the answers ----------------------------------------------------------------------


def test_kept_answers_equal_fresh_ones_for_every_recorded_request(client, example, monkeypatch,  # noqa: F811
                                                                   cache_on):
    """The recorded FreeSWITCH requests (and our own numbers) answered without the views, then twice with."""
    account, device, queue, agent = example
    Extension.create(account=account, number="7000", target_type="queue", target_id=queue.id)
    Extension.create(account=account, number="2001", target_type="device", target_id=device.id)
    Extension.create(account=account, number="300", target_type="user", target_id=agent.id)
    Did.create(account=account, number="+97235550100", target_type="queue", target_id=queue.id)
    Account.update(outbound_gateway="carrier1").execute()
    requests = [(path, body) for name in ("xml-curl-configuration.http", "xml-curl-directory.http",
                                          "xml-curl-dialplan.http") for path, body in recorded_requests(name)]
    dialplan_body = next(b for _, b in recorded_requests("xml-curl-dialplan.http")
                         if b"Caller-Destination-Number=8000" in b)
    for number, context in (("7000", "example.test"), ("2001", "example.test"), ("300", "example.test"),
                            ("%2B14155550100", "example.test"), ("***123456", "example.test"),
                            ("97235550100", "public"), ("%2B97235550100", "public"), ("555", "public")):
        body = dialplan_body.replace(b"Destination-Number=8000", f"Destination-Number={number}".encode())
        requests.append(("/dialplan", body.replace(b"Context=default", f"Context={context}".encode())))
        requests.append(("/dialplan", body.replace(b"Context=default", f"Context={context}".encode())
                         + b"&variable_switchdesk_call_id=abc&variable_switchdesk_tags=x"))
    requests.append(("/configuration", f"section=configuration&key_value=callcenter.conf&CC-Queue={queue.id}"
                                       "%40example.test".encode()))

    def answers() -> list[bytes]:
        return [client.post("/freeswitch" + path, data=body, headers=AUTH,
                            environ_base={"REMOTE_ADDR": "127.0.0.1"}).data for path, body in requests]

    def kept_answers() -> list[bytes]:
        """With the views on, directory users are also marked for FreeSWITCH to keep (engine.directory.fscache)."""
        kept = answers()
        assert sum(f' cacheable="{fscache.DEFAULT_MS}"'.encode() in a for a in kept) >= 2
        return [a.replace(f' cacheable="{fscache.DEFAULT_MS}"'.encode(), b"") for a in kept]

    monkeypatch.setenv(views.ENV, "0")
    fresh = answers()
    monkeypatch.setenv(views.ENV, "1")
    assert kept_answers() == fresh
    assert len(views._entries) > 10  # they were kept ...
    assert kept_answers() == fresh  # ... and served
    assert sum(b"a1-hash" in a for a in fresh) >= 2 and sum(b"callcenter" in a for a in fresh) >= 2


def test_the_raw_form_reader_reads_what_werkzeug_reads():
    from werkzeug.datastructures import MultiDict

    for name in ("xml-curl-configuration.http", "xml-curl-directory.http", "xml-curl-dialplan.http"):
        for _, body in recorded_requests(name):
            expected = MultiDict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
            form = _UrlencodedForm(body)
            for key in expected:
                assert form.get(key) == expected.get(key), key
            assert form.get("no-such-field") == ""
    form = _UrlencodedForm(b"a=1&a=2&b=x+y%2Bz&c=&d=%C3%A9&ab=no")
    assert (form.get("a"), form.get("b"), form.get("c"), form.get("d"), form.get("b", "?")) == ("1", "x y+z", "", "é",
                                                                                               "x y+z")


# -- a change is served as soon as the API call returns --------------------------------------------------


def test_password_change_and_device_delete_are_served_at_once(api, client, tenant, cache_on):
    data = make_device(api)
    assert a1("desk.101", tenant.domain, PASSWORD) in directory(client, tenant.domain, "desk.101")
    assert ("device", tenant.account_id, "desk.101") in views._entries  # kept
    assert api.put(f"/api/device/{data['id']}", json={"sip_password": "another1pass22"}).status_code == 200
    answer = directory(client, tenant.domain, "desk.101")
    assert a1("desk.101", tenant.domain, "another1pass22") in answer
    assert a1("desk.101", tenant.domain, PASSWORD) not in answer
    # a rename: the old username is nobody's any more
    assert api.put(f"/api/device/{data['id']}", json={"sip_username": "desk.102",
                                                       "sip_password": PASSWORD}).status_code == 200
    assert NOT_FOUND in directory(client, tenant.domain, "desk.101")
    assert a1("desk.102", tenant.domain, PASSWORD) in directory(client, tenant.domain, "desk.102")
    # deleted: its credentials are never served again
    assert api.delete(f"/api/device/{data['id']}").status_code == 200
    assert NOT_FOUND in directory(client, tenant.domain, "desk.102")
    assert views.device(tenant.account_id, "desk.102") is None
    # and a new device under a name that found nothing before is found
    assert NOT_FOUND in directory(client, tenant.domain, "desk.103")
    make_device(api, sip_username="desk.103")
    assert a1("desk.103", tenant.domain, PASSWORD) in directory(client, tenant.domain, "desk.103")


def test_extension_move_and_delete_are_served_at_once(api, client, tenant, cache_on):
    first, second = make_device(api), make_device(api, sip_username="desk.202")
    queue = Queue.create(account=tenant.account_id, name="Support")
    r = api.post("/api/extension", json={"number": "500", "target_type": "device", "target_id": first["id"]})
    assert r.status_code == 200, r.get_json()
    ext = r.get_json()["data"]
    assert b"user/desk.101@acme.test" in dialplan(client, tenant.domain, "500")
    assert api.put(f"/api/extension/{ext['id']}", json={"target_id": second["id"]}).status_code == 200
    assert b"user/desk.202@acme.test" in dialplan(client, tenant.domain, "500")
    assert api.put(f"/api/extension/{ext['id']}", json={"number": "501"}).status_code == 200
    assert NOT_FOUND in dialplan(client, tenant.domain, "500")
    assert b"user/desk.202@acme.test" in dialplan(client, tenant.domain, "501")
    assert api.put(f"/api/extension/{ext['id']}", json={"target_type": "queue",
                                                          "target_id": queue.id}).status_code == 200
    assert f"{queue.id}@acme.test".encode() in dialplan(client, tenant.domain, "501")
    assert api.delete(f"/api/cc_queue/{queue.id}").status_code == 200  # takes its extensions with it
    assert NOT_FOUND in dialplan(client, tenant.domain, "501")
    # the device's own extension goes with the device
    assert api.put(f"/api/device/{first['id']}", json={"extension": "600"}).status_code == 200
    assert b"user/desk.101@acme.test" in dialplan(client, tenant.domain, "600")
    assert api.delete(f"/api/device/{first['id']}").status_code == 200
    assert NOT_FOUND in dialplan(client, tenant.domain, "600")


def test_user_delete_drops_its_numbers_and_its_devices_owner(api, client, tenant, cache_on):
    user = User.create(account=tenant.account_id, name="Ann", username="ann", username_key="ann",
                       email="ann@acme.test", email_key="ann@acme.test", password_hash="x", is_agent=True)
    device = make_device(api, user_id=user.id)
    assert api.post("/api/extension", json={"number": "700", "target_type": "user",
                                            "target_id": user.id}).status_code == 200
    assert b"user/desk.101@acme.test" in dialplan(client, tenant.domain, "700")
    assert views.device_by_id(tenant.account_id, device["id"]).user_id == user.id
    assert api.delete(f"/api/user/{user.id}").status_code == 200
    assert NOT_FOUND in dialplan(client, tenant.domain, "700")
    assert views.device_by_id(tenant.account_id, device["id"]).user_id is None


def test_account_changes_are_served_at_once(api, client, tenant, cache_on):
    queue = Queue.create(account=tenant.account_id, name="Support")
    assert api.post("/api/extension", json={"number": "800", "target_type": "queue",
                                            "target_id": queue.id}).status_code == 200
    assert NOT_FOUND in dialplan(client, tenant.domain, "+14155550100")  # no gateway yet
    assert NOT_FOUND in dialplan(client, "acme2.test", "800")  # no such domain yet
    assert api.put("/api/account", json={"outbound_gateway": "carrier1"}).status_code == 200
    assert b"sofia/gateway/carrier1/+14155550100" in dialplan(client, tenant.domain, "+14155550100")
    assert api.put("/api/account", json={"domain": "acme2.test"}).status_code == 200
    assert NOT_FOUND in dialplan(client, tenant.domain, "800")
    assert f"{queue.id}@acme2.test".encode() in dialplan(client, "acme2.test", "800")
    assert views.account_by_domain(tenant.domain) is None
    assert views.account(tenant.account_id).domain == "acme2.test"


def test_a_new_account_is_found_at_once(client, database, cache_on):
    from engine.directory import accounts

    assert views.account_by_domain("new.test") is None
    new = accounts.create_account("New", "new.test", "newadmin")
    assert views.account_by_domain("new.test").id == new.account.id


def test_did_changes_are_served_at_once(api, client, tenant, cache_on):
    queue = Queue.create(account=tenant.account_id, name="Support")
    assert NOT_FOUND in dialplan(client, "public", "12125550100")
    r = api.post("/api/did", json={"number": "+12125550100", "target_type": "queue", "target_id": queue.id})
    assert r.status_code == 200, r.get_json()
    assert f"{queue.id}@acme.test".encode() in dialplan(client, "public", "12125550100")
    assert api.delete(f"/api/did/{r.get_json()['data']['id']}").status_code == 200
    assert NOT_FOUND in dialplan(client, "public", "12125550100")


# -- what the views keep, and when they keep nothing -----------------------------------------------------


def test_call_field_lookups_come_from_memory(api, tenant, database, cache_on):
    device = make_device(api, extension="101")
    account = views.account(tenant.account_id)
    assert call_fields._dialed_device({"variable_dialed_user": "desk.101", "variable_dialed_domain": "ACME.test"},
                                      account) == device["id"]
    assert call_fields._guess_type({"Caller-Destination-Number": "101"}, account, "inbound", device["id"]) == (
        "internal", None)
    executed = []
    original = database.execute_sql
    database.execute_sql = lambda *a, **k: executed.append(a) or original(*a, **k)
    try:
        for _ in range(3):
            assert views.account(tenant.account_id) == account
            assert views.account_by_domain("acme.test") == account
            assert call_fields._dialed_device({"variable_dialed_user": "desk.101",
                                               "variable_dialed_domain": "acme.test"}, account) == device["id"]
            assert call_fields._device_user(tenant.account_id, device["id"]) is None
            assert views.extension(tenant.account_id, "101").target_id == device["id"]
    finally:
        del database.execute_sql
    assert len(executed) == 2  # the first lookup of the domain and of the device by id; then memory only


def test_agent_and_tier_notices_keep_everything(api, tenant, cache_on):
    make_device(api)
    assert views.device(tenant.account_id, "desk.101") is not None
    kept = dict(views._entries)
    changes.notify("agent", tenant.account_id, [tenant.admin_id])
    changes.notify("tier", tenant.account_id, [tenant.admin_id])
    assert views._entries == kept
    changes.notify("device", tenant.account_id + 1, [1])  # another account's: this one's stay
    assert ("device", tenant.account_id, "desk.101") in views._entries


def test_a_lookup_overtaken_by_a_notice_keeps_nothing(api, tenant, cache_on):
    """Read before the commit, noticed meanwhile: what was read may be the old state, so it is not kept."""
    data = make_device(api)
    old = views.device(tenant.account_id, "desk.101")
    views.clear()

    def load():
        row = old  # as read just before another greenlet commits the deletion ...
        Device.delete().where(Device.id == data["id"]).execute()
        changes.notify("device", tenant.account_id, [data["id"]])  # ... and its notice arrives
        return tenant.account_id, row

    assert views.cached(("device", tenant.account_id, "desk.101"), load) is old  # this caller gets what it read
    assert ("device", tenant.account_id, "desk.101") not in views._entries
    assert views.device(tenant.account_id, "desk.101") is None  # the next one reads the database


def test_unknown_domains_are_kept_briefly(database, cache_on):
    """Another process may create an account without this one hearing (SQLite: `switchdesk account create`)."""
    assert views.account_by_domain("later.test") is None
    Account.create(name="Later", domain="later.test")  # no notice, as from another process
    assert views.account_by_domain("later.test") is None
    views._entries[("domain", "later.test")] = (None, None, 1.0)  # expired long ago
    assert views.account_by_domain("later.test").domain == "later.test"


def test_bounded_and_switchable(database, monkeypatch, cache_on):
    monkeypatch.setattr(views, "MAX_ENTRIES", 5)
    for n in range(20):
        views.account_by_domain(f"d{n}.test")
    assert len(views._entries) == 5 and ("domain", "d19.test") in views._entries
    assert sum(len(keys) for keys in views._tags.values()) == 5
    monkeypatch.setenv(views.ENV, "0")
    views.clear()
    views.account_by_domain("x.test")
    assert views._entries == {}


def test_a_new_database_starts_empty(tmp_path, database, cache_on):
    Account.create(name="A", domain="a.test")
    assert views.account_by_domain("a.test") is not None
    from tests.conftest import bind_test_database

    if PG_URL.startswith("postgres"):
        pytest.skip("one PostgreSQL database per run")
    (tmp_path / "other").mkdir()
    other = bind_test_database(tmp_path / "other")
    try:
        assert views.account_by_domain("a.test") is None
    finally:
        other.close()


def test_compiled_statements_write_what_peewee_writes(database):
    from engine.store.models import ActiveCall

    account = Account.create(name="A", domain="a.test")
    import peewee

    fastq.execute("test.insert", lambda u, a, d: ActiveCall.insert({
        ActiveCall.uuid: u, ActiveCall.account: a, ActiveCall.call_id: u, ActiveCall.seen_ms: 5,
        ActiveCall.data: peewee.Value(d, converter=False)}), "leg-1", account.id, ActiveCall.data.db_value({"a": [1]}))
    row = ActiveCall.get(ActiveCall.uuid == "leg-1")
    assert (row.data, row.rang, row.ended_at, row.account_id) == ({"a": [1]}, False, None, account.id)
    done = fastq.execute("test.flag", lambda u: ActiveCall.update({ActiveCall.rang: True}).where(
        (ActiveCall.uuid == u) & (ActiveCall.rang == False)), "leg-1")  # noqa: E712
    again = fastq.execute("test.flag", lambda u: ActiveCall.update({ActiveCall.rang: True}).where(
        (ActiveCall.uuid == u) & (ActiveCall.rang == False)), "leg-1")  # noqa: E712
    assert (done, again, ActiveCall.get(ActiveCall.uuid == "leg-1").rang) == (1, 0, True)


# -- PostgreSQL: other processes' changes -----------------------------------------------------------------

DELETER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from engine.store import db
from engine.directory import devices
db.bind(sys.argv[2])
with db.db.connection_context():
    devices.delete_device(int(sys.argv[3]), int(sys.argv[4]))
"""


@needs_pg
def test_postgres_keeps_only_while_hearing_and_hears_other_processes(api, client, tenant, database, monkeypatch):
    from engine.store import pgnotify

    monkeypatch.setenv(views.ENV, "1")

    data = make_device(api)
    assert changes.hearing_epoch() is None
    assert a1("desk.101", tenant.domain, PASSWORD) in directory(client, tenant.domain, "desk.101")
    assert views._entries == {}  # nobody hears other boxes: nothing kept
    remote = pgnotify.RemoteChanges.for_database(database, backoff=(0.05, 0.2)).start()
    try:
        assert remote.wait_listening(5)
        assert a1("desk.101", tenant.domain, PASSWORD) in directory(client, tenant.domain, "desk.101")
        assert ("device", tenant.account_id, "desk.101") in views._entries
        # another process deletes the device through the service: its NOTIFY drops what was kept
        subprocess.run([sys.executable, "-c", DELETER, str(ROOT), PG_URL, str(tenant.account_id), str(data["id"])],
                       check=True, timeout=60, capture_output=True)
        wait_until(lambda: ("device", tenant.account_id, "desk.101") not in views._entries, timeout=5)
        assert NOT_FOUND in directory(client, tenant.domain, "desk.101")
        directory(client, tenant.domain, "desk.999")
        assert views._entries
    finally:
        remote.stop()
    # nobody hears any more: what was kept is dropped and nothing is kept until a listener is back
    assert changes.hearing_epoch() is None
    assert not views.armed() and views._entries == {}
