"""A user's caller-ID overrides of its devices (`override_device`, ecnam/ecnum/ocnam/ocnum) in the directory
entry of its devices and on calls through the outbound gateway (the real switch: test_user_routing.py)."""
from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from api import create_app
from engine.directory import accounts
from tests.conftest import Api

AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:p").decode(),
        "Content-Type": "application/x-www-form-urlencoded"}


def test_overrides_reach_the_directory_and_the_outbound_route(database, tenant):
    api = Api(create_app({"TESTING": True, "XMLCURL_PASSWORD": "p"}).test_client(), tenant)
    user = api.post("/api/user", json={"name": "A", "username": "alice", "password": "Alice-pw-123",
                                       "email": "a@x.test"}).json["data"]
    api.post("/api/device", json={"name": "d", "sip_username": "2001", "sip_password": "Desk-pw-1234",
                                  "user_id": user["id"], "cid_name": "Desk", "cid_num": "2001"})

    def variables() -> dict[str, str]:
        body = (f"section=directory&tag_name=domain&key_name=name&key_value={tenant.domain}&action=sip_auth"
                f"&user=2001&domain={tenant.domain}")
        root = ET.fromstring(api.client.post("/freeswitch/directory", data=body, headers=AUTH).data)
        return {v.get("name"): v.get("value") for v in root.iter("variable")}

    assert variables()["effective_caller_id_name"] == "Desk" and "outbound_caller_id_number" not in variables()
    # stored but not in force without override_device
    api.put(f"/api/user/{user['id']}", json={"ecnam": "Sales", "ecnum": "5550100", "ocnum": "+14155550100"})
    assert variables()["effective_caller_id_name"] == "Desk"
    api.put(f"/api/user/{user['id']}", json={"override_device": True})
    seen = variables()
    assert (seen["effective_caller_id_name"], seen["effective_caller_id_number"]) == ("Sales", "5550100")
    assert seen["outbound_caller_id_number"] == "+14155550100" and "outbound_caller_id_name" not in seen
    # a value FreeSWITCH would expand is never served
    api.put(f"/api/user/{user['id']}", json={"ecnam": "${system(id)}"})
    assert variables()["effective_caller_id_name"] == "Desk"
    # calls through the gateway show the outbound caller id, when the caller's entry has one
    accounts.update_settings(tenant.account_id, {"outbound_gateway": "carrier1"})
    body = f"section=dialplan&Hunt-Context={tenant.domain}&Hunt-Destination-Number=%2B14155550199"
    extension = ET.fromstring(api.client.post("/freeswitch/dialplan", data=body, headers=AUTH).data).find(
        ".//extension")
    conditions = extension.findall("condition")
    assert [(c.get("field"), c.get("break")) for c in conditions] == [
        ("destination_number", None), ("${outbound_caller_id_name}", "never"),
        ("${outbound_caller_id_number}", "never"), ("${switchdesk_cnum_US}", "never"), ("destination_number", None)]
    assert conditions[2].find("action").get("data") == "effective_caller_id_number=${outbound_caller_id_number}"
    # set before the bridge, which comes last; the caller's number for the destination's country (US) last
    actions = [(a.get("application"), a.get("data")) for a in extension.iter("action")]
    assert actions[-1] == ("bridge", "sofia/gateway/carrier1/+14155550199")
    assert actions[-2] == ("set", "effective_caller_id_number=${switchdesk_cnum_US}")
    assert actions[-3] == ("set", "effective_caller_id_number=${outbound_caller_id_number}")


def test_pickup_code_routes_only_members_of_the_group(database, tenant):
    api = Api(create_app({"TESTING": True, "XMLCURL_PASSWORD": "p"}).test_client(), tenant)
    ids = {}
    for name, fields in (("alice", {"intercept_groups": [7]}), ("bob", {"intercept_other_groups": [7, 9]}),
                         ("carol", {})):
        user = api.post("/api/user", json={"name": name, "username": name, "password": "Alice-pw-123",
                                           "email": f"{name}@x.test", **fields}).json["data"]
        device = api.post("/api/device", json={"name": name, "sip_username": f"20{len(ids)}1",
                                               "sip_password": "Desk-pw-1234", "user_id": user["id"]}).json["data"]
        ids[name] = (user["id"], device["id"])
    api.post("/api/extension", json={"number": "811", "target_type": "user", "target_id": ids["alice"][0]})

    def actions(number: str, device_id: int) -> list[tuple[str, str]]:
        body = (f"section=dialplan&Hunt-Context={tenant.domain}&Hunt-Destination-Number={number}"
                f"&variable_switchdesk_device_id={device_id}")
        root = ET.fromstring(api.client.post("/freeswitch/dialplan", data=body, headers=AUTH).data)
        return [(a.get("application"), a.get("data")) for a in root.iter("action")]

    group = f"switchdesk-{tenant.account_id}-7"
    assert f"user/2001@{tenant.domain},pickup/{group}" in dict(actions("811", ids["carol"][1]))["bridge"]
    assert ("pickup", group) in actions("*87", ids["bob"][1])
    assert ("pickup", group) in actions("*8", ids["alice"][1])  # its first group
    assert ("pickup", group) in actions("*8", ids["bob"][1])  # no group of its own: the first it may intercept
    assert ("pickup", f"switchdesk-{tenant.account_id}-9") in actions("*89", ids["bob"][1])
    assert actions("*87", ids["carol"][1]) == [] and actions("*85", ids["bob"][1]) == []
