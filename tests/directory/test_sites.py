"""Sites (`/api/site`), `cnum_by_country` and `blf_ext`: validation on write, and what they put in the
directory entries and the outbound route FreeSWITCH fetches (the real switch: tests/realswitch/test_sites.py)."""
from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

from api import create_app
from engine.directory import accounts
from tests.conftest import Api

AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:p").decode(),
        "Content-Type": "application/x-www-form-urlencoded"}


def _api(tenant) -> Api:
    return Api(create_app({"TESTING": True, "XMLCURL_PASSWORD": "p"}).test_client(), tenant)


def _user(api: Api, name: str, **fields) -> dict:
    response = api.post("/api/user", json={"name": name, "username": name, "password": "Alice-pw-123",
                                           "email": f"{name}@x.test", **fields})
    assert response.status_code == 200, response.json
    return response.json["data"]


def _entry(api: Api, tenant, sip: str) -> tuple[dict[str, str], dict[str, str]]:
    body = (f"section=directory&tag_name=domain&key_name=name&key_value={tenant.domain}&action=sip_auth"
            f"&user={sip}&domain={tenant.domain}")
    user = ET.fromstring(api.client.post("/freeswitch/directory", data=body, headers=AUTH).data).find(".//user")
    return ({p.get("name"): p.get("value") for p in user.iter("param")},
            {v.get("name"): v.get("value") for v in user.iter("variable")})


def _outbound(api: Api, tenant, number: str, site_id: int | None = None) -> list[tuple[str, str]]:
    body = f"section=dialplan&Hunt-Context={tenant.domain}&Hunt-Destination-Number={number.replace('+', '%2B')}"
    if site_id:
        body += f"&variable_switchdesk_site_id={site_id}"
    root = ET.fromstring(api.client.post("/freeswitch/dialplan", data=body, headers=AUTH).data)
    return [(a.get("application"), a.get("data")) for a in root.iter("action")]


def test_sites_crud_validation_and_use(database, tenant, other_tenant):
    api, other = _api(tenant), _api(other_tenant)
    site = api.post("/api/site", json={"name": "London", "outbound_gateway": "uk-carrier", "cid_name": "Acme UK",
                                       "cid_num": "+442079460000", "timezone": "Europe/London"}).json["data"]
    assert {k: site[k] for k in ("name", "outbound_gateway", "cid_num", "timezone")} == {
        "name": "London", "outbound_gateway": "uk-carrier", "cid_num": "+442079460000", "timezone": "Europe/London"}
    # bad input: clear 400s, nothing stored; a taken name 409; another account's site 404
    for bad in ({"name": ""}, {"name": "x", "outbound_gateway": "a b"}, {"name": "x", "cid_num": "12ab"},
                {"name": "x", "timezone": "Mars/Base"}, {"name": "x", "cid_name": "a\nb"}, {}):
        response = api.post("/api/site", json=bad)
        assert response.status_code == 400 and not response.json["success"], (bad, response.json)
    assert api.post("/api/site", json={"name": "London"}).status_code == 409
    assert len(api.get("/api/site").json["data"]) == 1
    assert other.get(f"/api/site/{site['id']}").status_code == 404
    assert other.put(f"/api/site/{site['id']}", json={"name": "Mine"}).status_code == 404
    # references: a device's, a queue's site_id and a user's sites must be sites of the account (400)
    foreign = other.post("/api/site", json={"name": "Paris"}).json["data"]
    response = api.post("/api/device", json={"name": "d", "sip_username": "2001", "sip_password": "Desk-pw-1234",
                                             "site_id": foreign["id"]})
    assert response.status_code == 400 and "site_id: no site with id" in response.json["msg"], response.json
    assert api.get("/api/device").json["data"] == []
    queue_fields = {"name": "q", "strategy": "ring-all", "time_base_score": "system"}
    response = api.post("/api/cc_queue", json={**queue_fields, "site_id": foreign["id"]})
    assert response.status_code == 400 and "site_id: no site with id" in response.json["msg"], response.json
    response = api.post("/api/user", json={"name": "u", "username": "uu1", "password": "Alice-pw-123",
                                           "email": "u@x.test", "sites": [site["id"], foreign["id"]]})
    assert response.status_code == 400 and f"no site with id {foreign['id']}" in response.json["msg"]
    user = _user(api, "alice", sites=[site["id"]])
    device = api.post("/api/device", json={"name": "d", "sip_username": "2001", "sip_password": "Desk-pw-1234",
                                           "user_id": user["id"], "site_id": site["id"]}).json["data"]
    assert device["site_id"] == site["id"]
    queue = api.post("/api/cc_queue", json={**queue_fields, "site_id": site["id"]}).json["data"]
    assert queue["site_id"] == site["id"]
    # in use: 409 naming them
    response = api.delete(f"/api/site/{site['id']}")
    assert response.status_code == 409, response.json
    assert f"user {user['id']}" in response.json["msg"] and f"device {device['id']}" in response.json["msg"]
    assert response.json["data"] == {"user_ids": [user["id"]], "device_ids": [device["id"]],
                                     "queue_ids": [queue["id"]]}
    # the directory names the device's site; the outbound route uses the site's gateway and caller id
    params, variables = _entry(api, tenant, "2001")
    assert variables["switchdesk_site_id"] == str(site["id"])
    assert _outbound(api, tenant, "+14155550199", site["id"])[-3:] == [
        ("set", "effective_caller_id_number=${outbound_caller_id_number}"),
        ("set", "effective_caller_id_number=${switchdesk_cnum_US}"),
        ("bridge", "sofia/gateway/uk-carrier/+14155550199")]
    actions = _outbound(api, tenant, "+14155550199", site["id"])
    assert ("set", "effective_caller_id_name=Acme UK") in actions
    assert ("set", "effective_caller_id_number=+442079460000") in actions
    # without a site (or an account gateway) no route; the account's gateway for devices without a site
    assert _outbound(api, tenant, "+14155550199") == []
    accounts.update_settings(tenant.account_id, {"outbound_gateway": "carrier1"})
    assert _outbound(api, tenant, "+14155550199")[-1] == ("bridge", "sofia/gateway/carrier1/+14155550199")
    # a change of the site takes effect at once (the kept answers are dropped), no site gateway: the account's
    api.put(f"/api/site/{site['id']}", json={"outbound_gateway": None, "cid_name": ""})
    actions = _outbound(api, tenant, "+14155550199", site["id"])
    assert actions[-1] == ("bridge", "sofia/gateway/carrier1/+14155550199")
    assert ("set", "effective_caller_id_name=Acme UK") not in actions
    # freed of its users, devices and queues, the site goes
    api.put(f"/api/user/{user['id']}", json={"sites": []})
    api.put(f"/api/device/{device['id']}", json={"site_id": None})
    api.put(f"/api/cc_queue/{queue['id']}", json={"site_id": None})
    assert "switchdesk_site_id" not in _entry(api, tenant, "2001")[1]
    assert api.delete(f"/api/site/{site['id']}").status_code == 200
    assert api.get(f"/api/site/{site['id']}").status_code == 404


def test_cnum_by_country_and_blf_ext(database, tenant):
    api = _api(tenant)
    user = _user(api, "alice", override_device=True)
    api.post("/api/device", json={"name": "d", "sip_username": "2001", "sip_password": "Desk-pw-1234",
                                  "user_id": user["id"]})
    url = f"/api/user/{user['id']}"
    for bad in ({"cnum_by_country": {"XX": "+441234567"}}, {"cnum_by_country": {"GB": "abc"}},
                {"cnum_by_country": {"GB": ""}}, {"cnum_by_country": ["GB"]}, {"cnum_by_country": "nope"},
                {"cnum_by_country": {"gb": "+441111111", "GB": "+442222222"}},
                {"cnum_by_country": {f"C{i}": "123" for i in range(400)}},
                {"blf_ext": "12a"}, {"blf_ext": "555"}):  # 555: no such extension
        response = api.put(url, json=bad)
        assert response.status_code == 400 and not response.json["success"], (bad, response.json)
    assert api.get(url).json["data"]["cnum_by_country"] is None
    # as a JSON object or its text (forms); country codes upper-cased
    response = api.put(url, data={"cnum_by_country": '{"gb": "+442079460123", "FR": "+33142685300"}'})
    assert response.status_code == 200, response.json
    assert response.json["data"]["cnum_by_country"] == {"FR": "+33142685300", "GB": "+442079460123"}
    _, variables = _entry(api, tenant, "2001")
    assert (variables["switchdesk_cnum_GB"], variables["switchdesk_cnum_FR"]) == ("+442079460123", "+33142685300")
    # the outbound route picks the variable of the destination's country; national numbers are the account's
    accounts.update_settings(tenant.account_id, {"outbound_gateway": "carrier1", "country": "GB"})
    assert ("set", "effective_caller_id_number=${switchdesk_cnum_GB}") in _outbound(api, tenant, "02079460999")
    assert ("set", "effective_caller_id_number=${switchdesk_cnum_FR}") in _outbound(api, tenant, "+33142685399")
    assert not [a for a in _outbound(api, tenant, "12") if "cnum" in (a[1] or "")]
    # blf_ext: an extension of the account, one user's only; the device's legs carry its presence
    api.post("/api/extension", json={"number": "801", "target_type": "user", "target_id": user["id"]})
    assert api.put(url, json={"blf_ext": "801"}).json["data"]["blf_ext"] == "801"
    params, variables = _entry(api, tenant, "2001")
    assert variables["presence_id"] == f"801@{tenant.domain}"
    assert f"presence_id=801@{tenant.domain}}}" in params["dial-string"]
    bob = _user(api, "bob")
    response = api.put(f"/api/user/{bob['id']}", json={"blf_ext": "801"})
    assert response.status_code == 409 and "already the BLF extension" in response.json["msg"]
    # cleared: back to the domain's dial string and no presence_id
    api.put(url, json={"blf_ext": None, "cnum_by_country": {}})
    params, variables = _entry(api, tenant, "2001")
    assert "dial-string" not in params and "presence_id" not in variables and "switchdesk_cnum_GB" not in variables
