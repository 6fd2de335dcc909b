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


def test_form_body_accepted(api):
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
