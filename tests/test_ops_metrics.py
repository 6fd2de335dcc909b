"""GET /metrics: Prometheus text, labelled by route, DB gauges at scrape time, engine state, loopback only."""
from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from engine.engine import Engine
from engine.events.outbox import emit
from engine.store.db import db
from engine.store.models import AgentState, User
from tests.fakeswitch.server import FakeSwitch
from tests.support import wait_until


def scrape(client, **kw) -> dict[str, list]:
    resp = client.get("/metrics", **kw)
    assert resp.status_code == 200, resp.data
    assert resp.mimetype == "text/plain"
    families = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        families[family.name] = family.samples
    return families


def value(families, sample_name, **labels) -> float | None:
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_bucket")
    for sample in families.get(family, []):
        if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def test_requests_by_route_not_raw_path(api, client, tenant):
    for _ in range(2):
        assert api.get(f"/api/user/{tenant.admin_id}").status_code == 200
    assert api.get("/api/user/987654").status_code == 404
    assert client.get("/no/such/page").status_code == 404
    assert client.open("/api/health", method="BREW").status_code == 405
    families = scrape(client)
    assert value(families, "switchdesk_http_requests_total", route="/api/user/<int:user_id>", status="200",
                 method="GET") == 2
    assert value(families, "switchdesk_http_requests_total", route="/api/user/<int:user_id>", status="404") == 1
    assert value(families, "switchdesk_http_requests_total", route="unmatched", status="404") == 1
    assert value(families, "switchdesk_http_requests_total", route="unmatched", status="405", method="other") == 1
    assert value(families, "switchdesk_http_request_duration_seconds_count", route="/api/user/<int:user_id>") == 3
    routes = {s.labels["route"] for s in families["switchdesk_http_requests"]}
    assert routes == {"/api/user/<int:user_id>", "unmatched"}  # never a raw path with an id
    assert {s.labels["method"] for s in families["switchdesk_http_requests"]} == {"GET", "other"}


def test_only_loopback_unless_public(database):
    app = create_app({"TESTING": True})
    remote = {"environ_base": {"REMOTE_ADDR": "203.0.113.7"}}
    resp = app.test_client().get("/metrics", **remote)
    assert resp.status_code == 403 and resp.get_json()["success"] is False
    assert app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    public = create_app({"TESTING": True, "METRICS_PUBLIC": True})
    assert public.test_client().get("/metrics", **remote).status_code == 200


def test_outbox_backlog_and_age_and_agents_by_status(api, client, tenant):
    with db.atomic():
        emit(tenant.account_id, "agent:checkin", {"x": 1}, ts=int(time.time()) - 120)
        emit(tenant.account_id, "agent:checkout", {"x": 2})
    for i, status in enumerate(["Available", "Available", "On Break", None]):
        user = User.create(account=tenant.account_id, name=f"a{i}", username=f"a{i}", username_key=f"a{i}",
                           email=f"a{i}@x.test", email_key=f"a{i}@x.test", password_hash="x", is_agent=True)
        AgentState.create(user=user, account=tenant.account_id, fs_status=status)
    families = scrape(client)
    assert value(families, "switchdesk_outbox_backlog") == 2
    assert 119 <= value(families, "switchdesk_outbox_oldest_age_seconds") < 200
    assert value(families, "switchdesk_agents", status="Available") == 2
    assert value(families, "switchdesk_agents", status="On Break") == 1
    assert value(families, "switchdesk_agents", status="unknown") == 1
    assert value(families, "switchdesk_engine_running") == 0
    assert "switchdesk_esl_connected" not in families
    # a box serving other domains (--domains) counts only its own accounts
    other_box = create_app({"TESTING": True, "ACCOUNT_IDS": [tenant.account_id + 1000]}).test_client()
    families = scrape(other_box)
    assert value(families, "switchdesk_outbox_backlog") == 0
    assert value(families, "switchdesk_outbox_oldest_age_seconds") == 0
    assert value(families, "switchdesk_agents", status="Available") is None


@pytest.fixture
def engine_app(database):
    fs = FakeSwitch(password="ClueCon").start()
    engine = Engine("127.0.0.1", fs.port, "ClueCon", resync_every=3600)
    app = create_app({"TESTING": True, "ENGINE": engine})
    engine.start()
    assert engine.commands.wait_connected(10) and engine.events.wait_connected(10)
    yield fs, engine, app
    engine.stop()
    fs.stop()


def test_engine_gauges_and_calls_waiting(engine_app):
    fs, engine, app = engine_app
    assert engine.wait_synced(10)
    client = app.test_client()
    families = scrape(client)
    assert value(families, "switchdesk_esl_connected", connection="events") == 1
    assert value(families, "switchdesk_esl_connected", connection="commands") == 1
    assert value(families, "switchdesk_sync_last_duration_seconds") is not None
    fs.wait_for_subscribers(1)
    fs.push_event(fs.make_event("CUSTOM", {"CC-Queue": "7@acme.test", "CC-Action": "members-count",
                                           "CC-Count": "3", "CC-Selection": "Single-Queue"},
                                subclass="callcenter::info"))
    fs.emit_heartbeat()
    wait_until(lambda: value(scrape(client), "switchdesk_queue_calls_waiting", queue="7@acme.test") == 3)
    families = scrape(client)
    assert value(families, "switchdesk_esl_events_total", event="callcenter::info") == 1
    assert value(families, "switchdesk_esl_events_total", event="HEARTBEAT") >= 1
    fs.push_event(fs.make_event("CUSTOM", {"CC-Queue": "7@acme.test", "CC-Action": "members-count",
                                           "CC-Count": "0", "CC-Selection": "Single-Queue"},
                                subclass="callcenter::info"))
    wait_until(lambda: value(scrape(client), "switchdesk_queue_calls_waiting", queue="7@acme.test") == 0)
    fs.down()
    wait_until(lambda: value(scrape(client), "switchdesk_esl_connected", connection="events") == 0)
