"""mod_xml_curl endpoints, driven by the byte-exact requests a real FreeSWITCH sent (fixtures)."""
from __future__ import annotations

import base64
import hashlib
import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from api import create_app
from engine.directory import accounts, fscache, views
from engine.store.models import Account, Device, Did, Extension, Queue, User

FIXTURES = Path(os.environ.get("SWITCHDESK_FIXTURES",
                               Path(__file__).resolve().parents[1] / "recordings" / "freeswitch"))
AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:xml-s3cret").decode()}


def recorded_requests(name: str) -> list[tuple[str, bytes]]:
    """(path, form body) of every request in an xml-curl-*.http transcript."""
    raw = (FIXTURES / name).read_bytes()
    out = []
    pos = 0
    header = re.compile(rb"<<< REQUEST \d+ (\d+) @[\d.]+\n")
    while (m := header.search(raw, pos)) is not None:
        size = int(m.group(1))
        request = raw[m.end():m.end() + size]
        pos = m.end() + size
        head, _, body = request.partition(b"\r\n\r\n")
        path = head.split(b" ")[1].decode()
        out.append((path, body))
    return out


@pytest.fixture
def fs_client(database):
    app = create_app({"TESTING": True, "XMLCURL_PASSWORD": "xml-s3cret"})
    return app.test_client()


@pytest.fixture
def example(database):
    """The fixtures' world: domain example.test, device 2001, queue q1."""
    account = Account.create(name="Example", domain="example.test")
    a1 = hashlib.md5(b"2001:example.test:Desk-2001-pw").hexdigest()  # FreeSWITCH's a1-hash
    agent = User.create(account=account, name="Agent", username="agent2001", username_key="agent2001",
                        email="a@example.test", email_key="a@example.test", password_hash="x", is_agent=True)
    device = Device.create(account=account, name="Front desk", sip_username="2001", sip_a1_hash=a1,
                           cid_name="Front Desk 2001", cid_num="2001", user=agent)
    queue = Queue.create(account=account, name="Support", strategy="sequentially-by-next-agent-order")
    return account, device, queue, agent


def post(client, path, body, headers=AUTH, ip="127.0.0.1"):
    # the recording's bindings were at /<section>; ours are at /freeswitch/<section>
    headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    return client.post("/freeswitch" + path, data=body, headers=headers, environ_base={"REMOTE_ADDR": ip})


def parse(response) -> ET.Element:
    assert response.mimetype == "text/xml"
    root = ET.fromstring(response.data)
    assert root.tag == "document" and root.get("type") == "freeswitch/xml"
    return root


def is_not_found(root: ET.Element) -> bool:
    return root.find("./section[@name='result']/result[@status='not found']") is not None


def test_every_recorded_request_gets_a_well_formed_answer(fs_client, example):
    for name in ("xml-curl-configuration.http", "xml-curl-directory.http", "xml-curl-dialplan.http"):
        requests = recorded_requests(name)
        assert requests, name
        for path, body in requests:
            r = post(fs_client, path, body)
            assert r.status_code == 200, (name, path)
            parse(r)


def test_directory_sip_auth_answers_a1_hash_and_device_variables(fs_client, example, heard):
    account, device, _, _ = example
    sip_auth = [b for p, b in recorded_requests("xml-curl-directory.http")
                if b"action=sip_auth" in b and b"user=2001&" in b]
    assert sip_auth
    root = parse(post(fs_client, "/directory", sip_auth[0]))
    domain = root.find("./section[@name='directory']/domain[@name='example.test']")
    user = domain.find("./user[@id='2001']")
    assert user.find("./params/param[@name='a1-hash']").get("value") == device.sip_a1_hash
    assert user.find("./params/param[@name='password']") is None
    variables = {v.get("name"): v.get("value") for v in user.iter("variable")}
    assert variables["switchdesk_device_id"] == str(device.id)
    assert variables["user_context"] == "example.test"
    assert variables["effective_caller_id_name"] == "Front Desk 2001"
    assert user.get("cacheable") == str(fscache.DEFAULT_MS)  # FreeSWITCH keeps it; fscache flushes it


def test_directory_is_not_cacheable_when_the_views_are_off(fs_client, example, monkeypatch):
    monkeypatch.setenv(views.ENV, "0")
    sip_auth = [b for p, b in recorded_requests("xml-curl-directory.http")
                if b"action=sip_auth" in b and b"user=2001&" in b]
    user = parse(post(fs_client, "/directory", sip_auth[0])).find(".//user[@id='2001']")
    assert user is not None and user.get("cacheable") is None


def test_directory_unknown_user_and_gateways_not_found(fs_client, example):
    requests = recorded_requests("xml-curl-directory.http")
    unknown = [b for _, b in requests if b"user=2999&" in b]
    startup = [b for _, b in requests if b"purpose=gateways" in b]
    assert unknown and startup
    assert is_not_found(parse(post(fs_client, "/directory", unknown[0])))
    assert is_not_found(parse(post(fs_client, "/directory", startup[0])))


def test_user_call_for_originate_is_answered(fs_client, example):
    calls = [b for _, b in recorded_requests("xml-curl-directory.http") if b"action=user_call" in b]
    assert len(calls) >= 2
    for body in calls:
        root = parse(post(fs_client, "/directory", body))
        assert root.find(".//user[@id='2001']") is not None


def test_callcenter_conf_for_queue_load(fs_client, example):
    account, _, queue, _ = example
    body = next(b for _, b in recorded_requests("xml-curl-configuration.http") if b"CC-Queue=q1%40example.test" in b)
    # the recorded request names q1@example.test; ours are <queue_id>@<domain>
    original = body
    body = body.replace(b"CC-Queue=q1%40example.test", f"CC-Queue={queue.id}%40example.test".encode())
    root = parse(post(fs_client, "/configuration", body))
    conf = root.find("./section[@name='configuration']/configuration[@name='callcenter.conf']")
    queues = conf.findall("./queues/queue")
    assert [q.get("name") for q in queues] == [f"{queue.id}@example.test"]
    params = {p.get("name"): p.get("value") for p in queues[0].iter("param")}
    assert params["strategy"] == "round-robin"  # sequentially-by-next-agent-order
    assert params["discard-abandoned-after"] == "60" and params["tier-rules-apply"] == "false"
    assert conf.find("./agents") is None and conf.find("./tiers") is None
    # the recorded q1 name is not one of ours
    assert is_not_found(parse(post(fs_client, "/configuration", original)))


def test_callcenter_conf_without_queue_lists_all(fs_client, example):
    account, _, queue, _ = example
    other = Queue.create(account=account, name="Sales", strategy="ring-all")
    body = b"hostname=vm&section=configuration&tag_name=configuration&key_name=name&key_value=callcenter.conf"
    root = parse(post(fs_client, "/configuration", body))
    names = [q.get("name") for q in root.iter("queue")]
    assert names == [f"{queue.id}@example.test", f"{other.id}@example.test"]


def test_other_config_files_not_found(fs_client, example):
    startup = [b for _, b in recorded_requests("xml-curl-configuration.http") if b"key_value=sofia.conf" in b]
    assert startup and is_not_found(parse(post(fs_client, "/configuration", startup[0])))


def test_requires_basic_auth_and_allowed_address(fs_client, example):
    body = recorded_requests("xml-curl-directory.http")[0][1]
    assert post(fs_client, "/directory", body, headers={}).status_code == 401
    bad = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:wrong").decode()}
    assert post(fs_client, "/directory", body, headers=bad).status_code == 401
    assert post(fs_client, "/directory", body, ip="203.0.113.5").status_code == 401
    unset = create_app({"TESTING": True}).test_client()
    assert post(unset, "/directory", body).status_code == 401


def _dialplan_body(number: str, context: str) -> bytes:
    body = next(b for _, b in recorded_requests("xml-curl-dialplan.http") if b"Caller-Destination-Number=8000" in b)
    encoded = urllib.parse.quote(number, safe="*")  # as FreeSWITCH encodes it: '+' is %2B
    body = body.replace(b"Destination-Number=8000", f"Destination-Number={encoded}".encode())
    return body.replace(b"Context=default", f"Context={context}".encode())


def test_dialplan_routes_checkin_codes_to_outbound_socket(fs_client, example):
    root = parse(post(fs_client, "/dialplan", _dialplan_body("***123456", "example.test")))
    actions = [(a.get("application"), a.get("data")) for a in root.iter("action")]
    assert ("socket", "127.0.0.1:8040 async full") in actions
    cond = root.find(".//condition")
    assert re.match(cond.get("expression"), "***123456")


def test_dialplan_extensions_to_queue_user_device(fs_client, example):
    account, device, queue, agent = example
    Extension.create(account=account, number="7000", target_type="queue", target_id=queue.id)
    Extension.create(account=account, number="2001", target_type="device", target_id=device.id)
    Extension.create(account=account, number="300", target_type="user", target_id=agent.id)
    q = [(a.get("application"), a.get("data"))
         for a in parse(post(fs_client, "/dialplan", _dialplan_body("7000", "example.test"))).iter("action")]
    assert ("callcenter", f"{queue.id}@example.test") in q
    d = [(a.get("application"), a.get("data"))
         for a in parse(post(fs_client, "/dialplan", _dialplan_body("2001", "example.test"))).iter("action")]
    assert ("bridge", "user/2001@example.test") in d
    u = [(a.get("application"), a.get("data"))
         for a in parse(post(fs_client, "/dialplan", _dialplan_body("300", "example.test"))).iter("action")]
    assert ("bridge", "user/2001@example.test") in u
    # the recorded context "default" is no account's: nothing routes there
    assert is_not_found(parse(post(fs_client, "/dialplan", _dialplan_body("7000", "default"))))


def test_dialplan_outbound_gateway_and_dids(fs_client, example):
    account, _, queue, _ = example
    assert is_not_found(parse(post(fs_client, "/dialplan", _dialplan_body("+14155550100", "example.test"))))
    accounts.update_settings(account.id, {"outbound_gateway": "carrier1"})  # its notice drops the kept answer
    actions = [(a.get("application"), a.get("data")) for a in
               parse(post(fs_client, "/dialplan", _dialplan_body("+14155550100", "example.test"))).iter("action")]
    assert ("bridge", "sofia/gateway/carrier1/+14155550100") in actions
    Did.create(account=account, number="+97235550100", target_type="queue", target_id=queue.id)
    actions = [(a.get("application"), a.get("data")) for a in
               parse(post(fs_client, "/dialplan", _dialplan_body("+97235550100", "public"))).iter("action")]
    assert ("callcenter", f"{queue.id}@example.test") in actions
    actions = [(a.get("application"), a.get("data")) for a in
               parse(post(fs_client, "/dialplan", _dialplan_body("97235550100", "public"))).iter("action")]
    assert ("callcenter", f"{queue.id}@example.test") in actions


def test_client_strings_are_escaped(fs_client, example):
    account, device, _, _ = example
    Device.update(cid_name='Evil"/><param name="password" value="x').where(Device.id == device.id).execute()
    sip_auth = next(b for _, b in recorded_requests("xml-curl-directory.http")
                    if b"action=sip_auth" in b and b"user=2001&" in b)
    root = parse(post(fs_client, "/directory", sip_auth))
    assert root.find(".//param[@name='password']") is None
    assert any(v.get("value", "").startswith('Evil"/>') for v in root.iter("variable"))


def _actions(response) -> list[tuple[str | None, str | None]]:
    return [(a.get("application"), a.get("data")) for a in parse(response).iter("action")]


def test_dialplan_exports_what_the_call_events_need(fs_client, example):
    account, device, queue, _ = example
    Extension.create(account=account, number="7000", target_type="queue", target_id=queue.id)
    Extension.create(account=account, number="2001", target_type="device", target_id=device.id)
    first_leg = [
        ("export", f"switchdesk_account_id={account.id}"),
        ("export", "switchdesk_call_id=${uuid}"),
    ]
    queue_call = _actions(post(fs_client, "/dialplan", _dialplan_body("7000", "example.test")))
    assert queue_call[:4] == [*first_leg, ("export", "switchdesk_call_type=queue"),
                              ("export", "switchdesk_dst_num=${destination_number}")]
    assert queue_call.index(("export", "switchdesk_call_type=queue")) < queue_call.index(
        ("callcenter", f"{queue.id}@example.test"))
    internal = _actions(post(fs_client, "/dialplan", _dialplan_body("2001", "example.test")))
    assert ("export", "switchdesk_call_type=internal") in internal
    accounts.update_settings(account.id, {"outbound_gateway": "carrier1"})
    outbound = _actions(post(fs_client, "/dialplan", _dialplan_body("+14155550100", "example.test")))
    assert outbound[:4] == [*first_leg, ("export", "switchdesk_call_type=outbound"),
                            ("export", "switchdesk_dst_num=${destination_number}")]
    Did.create(account=account, number="+97235550100", target_type="device", target_id=device.id)
    did = _actions(post(fs_client, "/dialplan", _dialplan_body("+97235550100", "public")))
    assert ("export", "switchdesk_call_type=inbound") in did and first_leg[0] in did
    # the check-in code is not a call: nothing exported
    checkin = _actions(post(fs_client, "/dialplan", _dialplan_body("***123456", "example.test")))
    assert not any(app == "export" for app, _ in checkin)


def test_dialplan_keeps_click_to_call_variables(fs_client, example):
    """A click-to-call leg transferred into the dialplan keeps its own type, number, lead and tags."""
    account, device, _, _ = example
    Account.update(outbound_gateway="carrier1").execute()
    body = _dialplan_body("+14155550100", "example.test") + (
        b"&variable_switchdesk_call_type=outbound&variable_switchdesk_dst_num=%2B14155550100"
        b"&variable_switchdesk_call_id=abc&variable_switchdesk_lead_id=L-1&variable_switchdesk_tags=vip%2Cuk"
    )
    actions = _actions(post(fs_client, "/dialplan", body))
    assert ("export", "switchdesk_call_type=${switchdesk_call_type}") in actions
    assert ("export", "switchdesk_dst_num=${switchdesk_dst_num}") in actions
    assert ("export", "switchdesk_call_id=${switchdesk_call_id}") in actions
    assert ("export", "switchdesk_lead_id=${switchdesk_lead_id}") in actions
    assert ("export", "switchdesk_tags=${switchdesk_tags}") in actions
    assert ("export", "switchdesk_src_device_id=${switchdesk_src_device_id}") not in actions  # not on this channel
    # client text never reaches the dialplan document
    assert not any("vip" in (data or "") or "L-1" in (data or "") for _, data in actions)
