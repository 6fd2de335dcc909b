"""Voicemail boxes through the API (permission module `voicemail`): create, rename, PIN, greeting media,
a user's vm_id / vm_name, deletion refused while a user has the box; messages through a stand-in for
the event socket (the real switch: tests/realswitch/test_user_routing.py); the directory entry of a box."""
from __future__ import annotations

import base64
import hashlib

import pytest

from api import create_app
from engine.store.models import Media
from tests.conftest import Api

LIST = ("1796313429:0:vm-1:acme.test:inbox:/var/lib/freeswitch/storage/voicemail/default/acme.test/vm-1/"
        "msg_83bd841c-9aef-4cd1-b7dd-4c82e06bf275.wav:83bd841c-9aef-4cd1-b7dd-4c82e06bf275:Jane: Doe:3401:5\n")


class Client:
    def __init__(self):
        self.sent: list[str] = []

    def api(self, command, timeout=None, check=True):
        self.sent.append(command)
        return LIST if command.startswith("vm_list") else "+OK"


class Commands:
    def __init__(self):
        self.client = Client()

    def require_client(self):
        return self.client


class Events:
    """What the app's metrics hook into; nothing happens here."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class Engine:
    def __init__(self):
        self.commands = Commands()
        self.events = Events()


@pytest.fixture
def engine():
    return Engine()


@pytest.fixture
def api(database, tenant, engine) -> Api:
    app = create_app({"TESTING": True, "ENGINE": engine, "XMLCURL_PASSWORD": "p"})
    return Api(app.test_client(), tenant)


def test_boxes_users_and_messages(api, tenant, other_tenant, engine):
    assert api.post("/api/voicemail", json={"name": "Sales"}).json["msg"].startswith("pin")
    assert api.post("/api/voicemail", json={"name": "Sales", "pin": "12a4"}).status_code == 400
    greeting = Media.create(account=tenant.account_id, name="g", file="g.wav", host="h", rate=8000,
                            duration_ms=1000, size=100)
    box = api.post("/api/voicemail", json={"name": "Sales", "pin": "1234", "greeting_id": greeting.id}).json["data"]
    assert box["box"] == f"vm-{box['id']}" and box["greeting_id"] == greeting.id and "pin" not in box
    assert api.post("/api/voicemail", json={"name": "Sales", "pin": "1234"}).status_code == 409
    # a user names it; vm_name is the box's name; another account's box or an unknown one is refused
    user = api.post("/api/user", json={"name": "A", "username": "alice", "password": "Alice-pw-123",
                                       "email": "a@x.test", "vm_id": box["id"], "follow_me": 5,
                                       "call_timeout": 20}).json["data"]
    assert user["vm_id"] == box["id"] and user["vm_name"] == "Sales"
    assert api.put(f"/api/user/{user['id']}", json={"vm_id": 999}).json["msg"] == "vm_id: no voicemail box with id 999"
    other = Api(api.client, other_tenant)
    assert other.get(f"/api/voicemail/{box['id']}").status_code == 404
    assert other.get(f"/api/voicemail/{box['id']}/messages").status_code == 404
    # the greeting media cannot go while the box plays it; the box cannot go while the user has it
    r = api.delete(f"/api/media/{greeting.id}")
    assert r.status_code == 409 and f"voicemail box {box['id']} (Sales): greeting_id" in r.json["msg"]
    r = api.delete(f"/api/voicemail/{box['id']}")
    assert r.status_code == 409 and r.json["data"] == {"user_ids": [user["id"]]}
    # messages, as mod_voicemail lists them
    messages = api.get(f"/api/voicemail/{box['id']}/messages").json["data"]
    assert messages == [{"uuid": "83bd841c-9aef-4cd1-b7dd-4c82e06bf275", "created": 1796313429, "read": 0,
                         "folder": "inbox", "cid_name": "Jane: Doe", "cid_number": "3401", "seconds": 5}]
    assert engine.commands.client.sent[-1] == f"vm_list vm-{box['id']}@{tenant.domain}"
    assert api.get(f"/api/voicemail/{box['id']}/messages/not-a-uuid/file").status_code == 404
    assert api.get(f"/api/voicemail/{box['id']}/messages/{'0' * 8}-0000-0000-0000-{'0' * 12}/file").status_code == 404
    # the file is outside this box's disk here: 404, never another file
    assert api.get(f"/api/voicemail/{box['id']}/messages/{messages[0]['uuid']}/file").status_code == 404
    assert api.delete(f"/api/voicemail/{box['id']}/messages/{messages[0]['uuid']}").status_code == 200
    assert engine.commands.client.sent[-1] == f"vm_delete vm-{box['id']}@{tenant.domain} {messages[0]['uuid']}"
    # PIN change; rename
    r = api.put(f"/api/voicemail/{box['id']}", json={"pin": "987654", "name": "Sales desk"})
    assert r.status_code == 200 and r.json["data"]["name"] == "Sales desk"
    assert api.get(f"/api/user/{user['id']}").json["data"]["vm_name"] == "Sales desk"


def test_box_directory_entry_and_user_dialplan(api, tenant):
    box = api.post("/api/voicemail", json={"name": "B", "pin": "4321"}).json["data"]
    user = api.post("/api/user", json={"name": "A", "username": "alice", "password": "Alice-pw-123",
                                       "email": "a@x.test", "vm_id": box["id"], "follow_me": 5,
                                       "call_timeout": 12}).json["data"]
    for sip in ("2001", "2002", "2003"):
        api.post("/api/device", json={"name": sip, "sip_username": sip, "sip_password": "Desk-pw-1234",
                                      "user_id": user["id"]})
    api.post("/api/extension", json={"number": "801", "target_type": "user", "target_id": user["id"]})
    auth = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:p").decode(),
            "Content-Type": "application/x-www-form-urlencoded"}

    def ask(section, body):
        return api.client.post(f"/freeswitch/{section}", data=body, headers=auth).data.decode()

    lookup = (f"section=directory&tag_name=domain&key_name=name&key_value={tenant.domain}&action=voicemail-lookup"
              f"&key=id&user=vm-{box['id']}&domain={tenant.domain}")
    entry = ask("directory", lookup)
    a1 = hashlib.md5(f"vm-{box['id']}:{tenant.domain}:4321".encode()).hexdigest()
    assert f'name="vm-a1-hash" value="{a1}"' in entry and f'<user id="vm-{box["id"]}">' in entry
    # never an entry for SIP authentication
    assert 'status="not found"' in ask("directory", lookup.replace("voicemail-lookup", "sip_auth"))
    # follow_me 5 within call_timeout 12: 5 s, 5 s, 2 s, then the box
    dial = ask("dialplan", f"section=dialplan&Hunt-Context={tenant.domain}&Hunt-Destination-Number=801")
    assert (f"[leg_timeout=5]user/2001@{tenant.domain}|[leg_timeout=5]user/2002@{tenant.domain}|"
            f"[leg_timeout=2]user/2003@{tenant.domain}") in dial
    assert "continue_on_fail=true" in dial and f"default {tenant.domain} vm-{box['id']}" in dial
    # follow_me 0: all at once; the change reaches the kept dialplan answer at once
    api.put(f"/api/user/{user['id']}", json={"follow_me": 0})
    dial = ask("dialplan", f"section=dialplan&Hunt-Context={tenant.domain}&Hunt-Destination-Number=801")
    assert f"user/2001@{tenant.domain},user/2002@{tenant.domain},user/2003@{tenant.domain}" in dial


def test_permission_module_voicemail(api, client, tenant):
    from engine.directory import accounts
    from engine.store.models import User

    user = api.post("/api/user", json={"name": "Q", "username": "qonly", "password": "Qonly-pw-123",
                                       "email": "q@example.test", "permissions": {"call_center_api": True,
                                                                                  "users": True}}).json["data"]
    headers = {"Authorization": f"Bearer {accounts.issue_api_key(User.get_by_id(user['id']))}"}
    assert api.client.get("/api/voicemail", headers=headers).status_code == 403
