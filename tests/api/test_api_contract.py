"""The API contract of DESIGN.md: envelope, authentication, status codes, bodies, OpenAPI."""
from __future__ import annotations

import json

from api.spec import REGISTRY

USER = {"name": "John Smith", "username": "John123", "password": "Ab123456", "email": "john@example.com"}


def test_unauthorized_without_key(client, tenant):
    r = client.get("/api/user")
    assert r.status_code == 401
    assert r.get_json() == {"success": False, "msg": "Unauthorized"}


def test_wrong_key_is_401(client, tenant):
    for key in ("nonsense", tenant.key[:-2] + "xx", "sdk_000000000000_abc"):
        r = client.get("/api/user", query_string={"api_key": key})
        assert r.status_code == 401, key
        assert r.get_json()["msg"] == "Unauthorized"


def test_key_in_query_form_json_and_bearer(client, tenant):
    assert client.get("/api/user", query_string={"api_key": tenant.key}).status_code == 200
    assert client.get("/api/user", headers={"Authorization": f"Bearer {tenant.key}"}).status_code == 200
    r = client.post("/api/user", data={**USER, "api_key": tenant.key})
    assert r.status_code == 200, r.get_json()
    r = client.post("/api/user", json={**USER, "username": "json1", "email": "j1@example.com", "api_key": tenant.key})
    assert r.status_code == 200, r.get_json()
    assert "api_key" not in json.dumps(r.get_json())


def test_envelope_lower_case_keys(api):
    body = api.get("/api/user").get_json()
    assert set(body) == {"success", "data"}
    assert body["success"] is True


def test_unknown_route_404_json(api):
    r = api.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.is_json and r.get_json()["success"] is False


def test_wrong_method_405_json(api):
    r = api("PATCH", "/api/user")
    assert r.status_code == 405
    assert r.get_json() == {"success": False, "msg": "Method not allowed"}


def test_malformed_json_400(api):
    r = api.post("/api/user", data="{not json", content_type="application/json")
    assert r.status_code == 400
    assert r.get_json() == {"success": False, "msg": "Malformed JSON body"}


def test_json_body_must_be_object(api):
    r = api.post("/api/user", data="[1,2]", content_type="application/json")
    assert r.status_code == 400
    assert "object" in r.get_json()["msg"]


def test_wrong_type_names_field(api):
    r = api.post("/api/user", json={**USER, "follow_me": "soon"})
    assert r.status_code == 400
    body = r.get_json()
    assert body["msg"].startswith("follow_me:")
    assert body["data"]["errors"][0]["field"] == "follow_me"


def test_oversized_body_413(client, tenant, database):
    from api import create_app

    small = create_app({"TESTING": True, "MAX_CONTENT_LENGTH": 1000}).test_client()
    r = small.post("/api/user", json={**USER, "name": "x" * 5000}, headers=tenant.auth())
    assert r.status_code == 413
    assert r.get_json()["success"] is False
    assert "too large" in r.get_json()["msg"]


def test_form_body_accepted(api, tenant):
    from engine.store.models import Site

    for site_id in (1, 2):  # `sites` names sites of the account
        Site.create(id=site_id, account=tenant.account_id, name=f"Site {site_id}")
    r = api.post("/api/user", data={**USER, "is_agent": "1", "in_reports": "false", "sites": "1,2"})
    assert r.status_code == 200, r.get_json()
    data = r.get_json()["data"]
    assert data["is_agent"] is True and data["in_reports"] is False and data["sites"] == [1, 2]


def test_unicode_and_garbage_never_500(api):
    for payload in ({"name": "\x00"}, {"username": "ü" * 300}, {"sites": "a,b"}, {"permissions": "[]"},
                    {"timezone": 5}, {"email": ["a"]}, {"active": 7}, {"geo_limit": "XX"}):
        r = api.post("/api/user", json={**USER, **payload})
        assert r.status_code == 400, (payload, r.get_json())


def test_openapi_lists_every_route(client, app):
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<int:{arg}>", "{" + arg + "}").replace(f"<{arg}>", "{" + arg + "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
    assert len(REGISTRY) >= 9
    user_schema = doc["components"]["schemas"]["UserCreate"]
    assert set(user_schema["required"]) == {"name", "username", "password", "email"}


def test_integers_beyond_64_bits_are_400_or_404_never_500(api):
    """Ids and paging numbers too large for the database: a 404 in a path, a 400 in a query or body."""
    r = api.get("/api/cc_queue/9223372036854775808")
    assert r.status_code == 404 and r.get_json()["success"] is False
    r = api.get("/api/cc_queue?offset=9223372036854775808")
    assert r.status_code == 400 and r.get_json()["msg"].startswith("offset:")
    for url in ("/api/user/9223372036854775808", f"/api/user/{2**53 + 1}", "/api/phone_list/99999999999999999999",
                "/api/cc_queue/9223372036854775808/users"):
        assert api.get(url).status_code == 404, url
        # every method of the route: a 404 too (werkzeug's own `max` made PUT and DELETE a 405)
        assert api.put(url, json={}).status_code == 404, url
        assert api.delete(url).status_code == 404, url
    for url in ("/api/user?offset=9223372036854775808", "/api/phone_list?offset=99999999999999999999999",
                "/api/user?limit=9223372036854775808"):
        assert api.get(url).status_code == 400, url
    r = api.post("/api/user", json={**USER, "pgroup_id": 2**63})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("pgroup_id:")
    r = api.post("/api/cc_queue", json={"name": "Q", "strategy": "ring-all", "time_base_score": "queue",
                                        "users": [[2**64]]})
    assert r.status_code == 400


def test_validation_messages_carry_no_library_prefix(api):
    """pydantic's "Value error, " / "Assertion failed, " never reach the client, in `msg` or `data.errors`."""
    r = api.post("/api/user", json={**USER, "timezone": "Mars/Olympus"})
    assert r.status_code == 400
    body = r.get_json()
    assert body["msg"].startswith("timezone: unknown time zone 'Mars/Olympus'"), body["msg"]
    assert body["data"]["errors"][0]["reason"].startswith("unknown time zone")
    r = api.post("/api/user", json={**USER, "name": "a\x01b", "password": "short"})
    assert all(not e["reason"].startswith(("Value error", "Assertion failed")) for e in r.get_json()["data"]["errors"])

    from pydantic import field_validator

    from api.spec import Schema, parse

    class Probe(Schema):
        n: int

        @field_validator("n")
        @classmethod
        def _positive(cls, value: int) -> int:
            if value <= 0:
                raise AssertionError("must be positive")  # as a plain `assert` (pytest rewrites those here)
            return value

    try:
        parse(Probe, {"n": -1})
    except Exception as exc:  # the APIError is what we look at
        assert exc.status == 400 and exc.msg == "n: must be positive", exc.msg
    else:
        raise AssertionError("no error")


def test_openapi_describes_get_forms_bodies_and_status_codes(client):
    doc = client.get("/api/openapi.json").get_json()
    paths = doc["paths"]
    # the GET forms of the agent endpoints take query parameters, their POST forms a body
    for name, required in (("checkIn", set()), ("checkInDevice", {"device_id"}), ("checkOut", set()),
                           ("setPause", {"id"}), ("setQueues", {"queue_ids"}), ("wrapup", set())):
        get = paths[f"/api/cc_agent/{name}"]["get"]
        params = {p["name"]: p for p in get["parameters"] if p["in"] == "query"}
        assert "user_id" in params and "requestBody" not in get, name
        assert {n for n, p in params.items() if p["required"]} == required, name
        assert "requestBody" in paths[f"/api/cc_agent/{name}"]["post"], name
        assert {"400", "401", "403", "404"} <= set(get["responses"]), name
    queue_ids = {p["name"]: p for p in paths["/api/cc_agent/setQueues"]["get"]["parameters"]}["queue_ids"]
    assert queue_ids["style"] == "form" and queue_ids["explode"] is False  # queue_ids=1,2,3
    assert "409" in paths["/api/cc_agent/setQueues"]["post"]["responses"]
    # the bulk deletes: a JSON array of phones (or {"phones": ...}, or a form field), ids for memberships
    leads = paths["/api/phone_list/{list_id}/lead"]["delete"]["requestBody"]
    assert leads["required"] is True
    json_body = leads["content"]["application/json"]["schema"]
    assert any(s.get("type") == "array" and s["items"] == {"type": "string"} for s in json_body["oneOf"])
    assert "phones" in leads["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
    for path in ("/api/cc_queue/{queue_id}/users", "/api/user/{user_id}/queues"):
        body = paths[path]["delete"]["requestBody"]
        assert body["required"] is True
        ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert doc["components"]["schemas"][ref]["required"] == ["ids"]
    # status codes from the declarations
    get_queue = paths["/api/cc_queue/{queue_id}"]["get"]["responses"]
    assert {"200", "400", "401", "403", "404"} <= set(get_queue)
    assert "409" in paths["/api/cc_queue"]["post"]["responses"]
    assert "429" in paths["/api/user/login"]["post"]["responses"]  # named in its description
    assert "409" in paths["/api/timegroup/{timegroup_id}"]["delete"]["responses"]  # likewise
    assert "503" in paths["/api/cc_agent/originate"]["get"]["responses"]
    assert "413" in paths["/api/phone_list/{list_id}/lead"]["post"]["responses"]
    assert set(paths["/api/health"]["get"]["responses"]) == {"200"}
    assert paths["/api/cc_queue/{queue_id}"]["get"]["parameters"][0]["schema"]["maximum"] == 2**53
