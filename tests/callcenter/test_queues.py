"""Queues (vendor doc: Queues): every documented property, filters, uniqueness, isolation, deletion."""
from __future__ import annotations

import pytest

from engine.callcenter.queues import STRATEGIES
from engine.store import changes
from engine.store.db import db
from engine.store.models import Did, Extension, Queue, Tier, User
from tests.querycount import count_queries

QUEUE = {"name": "Sales", "strategy": "longest-idle-agent", "time_base_score": "system"}

FULL = {
    "name": "Support", "tv_name": "SUP", "site_id": 3, "strategy": "top-down", "record": 1,
    "time_base_score": "queue", "max_wait_time": 600, "max_wait_time_with_no_agent": 120,
    "max_wait_time_with_no_agent_time_reached": 10, "tier_rules_apply": True, "tier_rule_wait_second": 30,
    "tier_rule_no_agent_no_wait": True, "discard_abandoned_after": 90, "abandoned_resume_allowed": True,
    "tier_rule_wait_multiply_level": False, "announce_id": 11, "announce_frequency": 45, "moh_id": 12,
    "sla_strategy": 2, "sla_answer_time": 20, "auto_answer": True, "pre_bridge_announce": 13,
    "join_announce": 14,
    "exits": {"max_wait": {"type": "extension", "target": "200"}, "keys": {"0": {"type": "hangup"}}},
    "ring_timeout": 25,
    "background_color": "#FF00aa", "font_color": "#000000", "labels": [7, 8], "avg_wait_range": 300,
    "audio_playback": {"playlist": [12, 13]}, "music_advanced": True,
}


def media(account_id: int, *ids: int) -> None:
    """Media rows with these ids (queues may only name media the account has)."""
    from engine.store.models import Media

    for media_id in ids:
        Media.create(id=media_id, account=account_id, name=f"m{media_id}", file=f"{media_id}.wav", host="h",
                     rate=8000, duration_ms=1000, size=100)


def create(api, **over):
    from engine.store.models import Site

    if not Site.select().where(Site.id == 3).exists():  # QUEUE's site_id names a site of the account
        Site.create(id=3, account=api.tenant.account_id, name="Site 3")
    r = api.post("/api/cc_queue", json={**QUEUE, **over})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def agent(api, n=1, **over):
    body = {"name": f"Agent {n}", "username": f"agent{n}", "password": "Ab123456", "email": f"agent{n}@x.test",
            "is_agent": True, **over}
    r = api.post("/api/user", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]["id"]


@pytest.fixture
def heard():
    """What change listeners were told, and whether the database was in a transaction then."""
    calls: list[tuple[str, int, list[int], bool]] = []

    def listener(kind, account_id, ids):
        calls.append((kind, account_id, ids, db.obj.in_transaction()))

    changes.listen(listener)
    yield calls
    changes.unlisten(listener)


def test_every_documented_property_round_trips(api, tenant):
    media(tenant.account_id, 11, 12, 13, 14)
    data = create(api, **FULL)
    for key, value in FULL.items():
        assert data[key] == value, key
    assert data["account_id"] == tenant.account_id and data["id"] >= 1
    assert data["user_ids"] == [] and data["users"] == [] and data["extensions"] == ""
    assert api.get(f"/api/cc_queue/{data['id']}").get_json()["data"] == data


def test_defaults(api):
    data = create(api)
    assert data["strategy"] == "longest-idle-agent" and data["tv_name"] is None and data["site_id"] is None
    assert data["labels"] == [] and data["exits"] == {} and data["audio_playback"] == {}
    assert data["tier_rule_wait_multiply_level"] is True and data["record"] == 0


def test_form_encoded_create_with_json_text_and_comma_lists(api):
    r = api.post("/api/cc_queue", data={**QUEUE, "labels": "1, 2,3", "exits": '{"no_agent": {"type": "hangup"}}',
                                        "audio_playback": '{"x": "y"}', "auto_answer": "true", "record": "1"})
    assert r.status_code == 200, r.get_json()
    data = r.get_json()["data"]
    assert data["labels"] == [1, 2, 3] and data["exits"] == {"no_agent": {"type": "hangup"}}
    assert data["audio_playback"] == {"x": "y"}
    assert data["auto_answer"] is True and data["record"] == 1


def test_required_on_post(api):
    for missing in ("name", "strategy", "time_base_score"):
        body = {k: v for k, v in QUEUE.items() if k != missing}
        r = api.post("/api/cc_queue", json=body)
        assert r.status_code == 400 and r.get_json()["msg"].startswith(missing + ":"), r.get_json()
    assert Queue.select().count() == 0


def test_every_strategy_accepted_and_others_refused(api):
    for i, strategy in enumerate(STRATEGIES):
        assert create(api, name=f"q{i}", strategy=strategy)["strategy"] == strategy
    assert len(STRATEGIES) == 10 and "ring-progressively" in STRATEGIES
    r = api.post("/api/cc_queue", json={**QUEUE, "strategy": "round_robin"})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("strategy:")
    r = api.post("/api/cc_queue", json={**QUEUE, "time_base_score": "member"})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("time_base_score:")


@pytest.mark.parametrize(("field", "value"), [
    ("max_wait_time", -1), ("max_wait_time", 86401), ("ring_timeout", 3601), ("announce_frequency", "x"),
    ("sla_strategy", -2), ("record", 2), ("background_color", "x" * 65), ("font_color", "a\nb"),
    ("font_color", "a\x01b"), ("labels", "1,x"), ("labels", [0]), ("exits", "[1, 2]"), ("exits", "{bad"),
    ("audio_playback", [1]), ("announce_id", 0), ("moh_id", -5), ("tier_rules_apply", "maybe"),
    ("name", ""), ("name", "x" * 201), ("tv_name", "a\x07b"), ("exits", {"a": "b\x00"}),
    ("exits", {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": {"m": {"n": {"o": {
        "p": {"q": {"r": {"s": {"t": {"u": {"v": 1}}}}}}}}}}}}}}}}}}}}}}),
    ("exits", {"big": "x" * 70000}), ("users", [[1, 9]]),
])
def test_bad_values_400_naming_the_field(api, field, value):
    r = api.post("/api/cc_queue", json={**QUEUE, field: value})
    assert r.status_code == 400, (field, value, r.get_json())
    assert r.get_json()["msg"].startswith(field), r.get_json()
    assert Queue.select().count() == 0


def test_deeply_nested_json_text_is_400_not_500(api):
    r = api.post("/api/cc_queue", data={**QUEUE, "exits": "[" * 100000 + "]" * 100000})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("exits")
    body = '{"name": "x", "strategy": "random", "time_base_score": "system", "exits": ' + "[" * 100000 + "]" * 100000
    r = api.post("/api/cc_queue", data=body + "}", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.get_json()["msg"] == "Malformed JSON body"


def test_partial_put_changes_only_submitted_fields(api, tenant):
    media(tenant.account_id, 11, 12, 13, 14)
    data = create(api, **FULL)
    r = api.put(f"/api/cc_queue/{data['id']}", json={"ring_timeout": 5, "tv_name": None, "labels": None,
                                                     "user_ids": [99], "extensions": "123"})
    assert r.status_code == 200, r.get_json()
    after = r.get_json()["data"]
    assert after["ring_timeout"] == 5 and after["tv_name"] is None and after["labels"] == []
    assert after["user_ids"] == [] and after["extensions"] == ""  # read-only: ignored
    for key in set(FULL) - {"ring_timeout", "tv_name", "labels"}:
        assert after[key] == data[key], key
    r = api.put(f"/api/cc_queue/{data['id']}", json={"strategy": None})
    assert r.status_code == 400 and r.get_json()["msg"] == "strategy: may not be null"
    r = api.put(f"/api/cc_queue/{data['id']}", json={"strategy": "nope", "ring_timeout": 9})
    assert r.status_code == 400
    assert Queue.get_by_id(data["id"]).ring_timeout == 5


def test_names_unique_per_account_409(api, other_api):
    first = create(api)
    r = api.post("/api/cc_queue", json=QUEUE)
    assert r.status_code == 409 and r.get_json()["msg"].startswith("name:")
    second = create(api, name="Billing")
    r = api.put(f"/api/cc_queue/{second['id']}", json={"name": "Sales"})
    assert r.status_code == 409
    assert api.put(f"/api/cc_queue/{first['id']}", json={"name": "Sales"}).status_code == 200  # its own name
    assert other_api.post("/api/cc_queue", json=QUEUE).status_code == 200  # another account may
    assert Queue.select().where(Queue.name == "Sales").count() == 2


def test_list_filters(api):
    create(api, name="A", strategy="ring-all")
    create(api, name="B", strategy="ring-all", time_base_score="queue")
    create(api, name="C", strategy="random")
    names = lambda **q: [x["name"] for x in api.get("/api/cc_queue", query_string=q).get_json()["data"]]  # noqa: E731
    assert names() == ["A", "B", "C"]
    assert names(name="B") == ["B"]
    assert names(strategy="ring-all") == ["A", "B"]
    assert names(strategy="ring-all", time_base_score="queue") == ["B"]
    assert names(name="A", strategy="random") == []
    assert names(limit=2, offset=1) == ["B", "C"]
    r = api.get("/api/cc_queue", query_string={"strategy": "bogus"})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("strategy:")


def test_another_accounts_queue_is_404(api, other_api):
    queue = create(api)
    url = f"/api/cc_queue/{queue['id']}"
    assert other_api.get(url).status_code == 404
    assert other_api.put(url, json={"name": "x"}).status_code == 404
    assert other_api.delete(url).status_code == 404
    assert other_api.get(url + "/users").status_code == 404
    assert other_api.post(url + "/users", json={"users": []}).status_code == 404
    assert other_api.get("/api/cc_queue").get_json()["data"] == []
    assert api.get("/api/cc_queue/999999").status_code == 404
    assert Queue.get_by_id(queue["id"]).name == "Sales"


def test_users_on_post_and_put_set_the_agents(api):
    a, b, c = agent(api, 1), agent(api, 2), agent(api, 3)
    queue = create(api, users=[[a, 4, 10], [b]])
    assert queue["user_ids"] == [a, b]
    # the vendor document's rows: [user_id, mode, position, level, name, timegroup_id, joined]
    assert queue["users"] == [[a, 4, 10, 1, "Agent 1", None, False], [b, 3, 1, 1, "Agent 2", None, False]]
    after = api.put(f"/api/cc_queue/{queue['id']}", json={"users": [[c, 1, 2, 3]]}).get_json()["data"]
    assert after["user_ids"] == [c] and after["users"] == [[c, 1, 2, 3, "Agent 3", None, False]]
    # a PUT without `users` leaves the agents alone
    assert api.put(f"/api/cc_queue/{queue['id']}", json={"tv_name": "x"}).get_json()["data"]["user_ids"] == [c]


def test_create_with_bad_agent_creates_nothing(api, other_api):
    a = agent(api)
    plain = agent(api, 2, is_agent=False)
    r = api.post("/api/cc_queue", json={**QUEUE, "users": [[a], [plain]]})
    assert r.status_code == 400 and str(plain) in r.get_json()["msg"]
    assert Queue.select().count() == 0 and Tier.select().count() == 0


def test_extensions_shown_read_only(api, tenant):
    queue = create(api)
    Extension.create(account=tenant.account_id, number="701", target_type="queue", target_id=queue["id"])
    Extension.create(account=tenant.account_id, number="700", target_type="queue", target_id=queue["id"])
    assert api.get(f"/api/cc_queue/{queue['id']}").get_json()["data"]["extensions"] == "700,701"


def test_delete_removes_tiers_extensions_and_dids_in_one_go(api, tenant, heard):
    a, b = agent(api, 1), agent(api, 2)
    queue = create(api, users=[[a], [b]])
    keep = create(api, name="Other", users=[[a]])
    ext = Extension.create(account=tenant.account_id, number="701", target_type="queue", target_id=queue["id"])
    did = Did.create(account=tenant.account_id, number="+14155550100", target_type="queue", target_id=queue["id"])
    heard.clear()
    r = api.delete(f"/api/cc_queue/{queue['id']}")
    assert r.status_code == 200 and r.get_json() == {"success": True}
    assert Queue.get_or_none(Queue.id == queue["id"]) is None
    assert Tier.select().where(Tier.queue == queue["id"]).count() == 0
    assert [t.queue_id for t in Tier.select()] == [keep["id"]]
    assert Extension.get_or_none(Extension.id == ext.id) is None and Did.get_or_none(Did.id == did.id) is None
    assert api.get(f"/api/cc_queue/{queue['id']}").status_code == 404
    kinds = {kind: (ids, in_tx) for kind, _acct, ids, in_tx in heard}
    assert kinds["queue"] == ([queue["id"]], False)
    assert kinds["tier"] == (sorted([a, b]), False)
    assert kinds["extension"][0] == [ext.id] and kinds["did"][0] == [did.id]


def test_foreign_key_cascade_on_the_database_itself(api, tenant):
    """Even a delete that bypasses the service leaves no orphan tier (SQLite runs with foreign_keys on)."""
    a = agent(api)
    queue = create(api, users=[[a]])
    Queue.delete().where(Queue.id == queue["id"]).execute()
    assert Tier.select().count() == 0
    other = create(api, name="Other", users=[[a]])
    User.delete().where(User.id == a).execute()
    assert Tier.select().where(Tier.queue == other["id"]).count() == 0


def test_list_runs_a_constant_number_of_queries(api, database):
    agents = [agent(api, i) for i in range(1, 4)]
    create(api, name="q0", users=[[a] for a in agents])

    def measure():
        with count_queries(database) as counter:
            r = api.get("/api/cc_queue")
        assert r.status_code == 200
        return counter.count, len(r.get_json()["data"])

    small = measure()
    for i in range(1, 12):
        create(api, name=f"q{i}", users=[[a] for a in agents])
    large = measure()
    assert (small[1], large[1]) == (1, 12)
    assert small[0] == large[0], (small, large)


def test_notifications_come_after_commit_and_not_for_refused_writes(api, tenant, heard):
    queue = create(api)
    assert heard == [("queue", tenant.account_id, [queue["id"]], False)]
    heard.clear()
    assert api.put(f"/api/cc_queue/{queue['id']}", json={"ring_timeout": -1}).status_code == 400
    assert api.post("/api/cc_queue", json=QUEUE).status_code == 409
    assert heard == []
    api.put(f"/api/cc_queue/{queue['id']}", json={"ring_timeout": queue["ring_timeout"]})
    assert heard == []  # nothing changed, nothing to tell
    api.put(f"/api/cc_queue/{queue['id']}", json={"ring_timeout": 7})
    assert heard == [("queue", tenant.account_id, [queue["id"]], False)]


def test_notify_refuses_to_run_inside_a_transaction(database):
    with database.atomic(), pytest.raises(RuntimeError):
        changes.notify("queue", 1, [1])


def test_queues_permission_required(api, client):
    uid = agent(api, 9, permissions={"call_center_api": True, "users": True})
    from engine.directory.accounts import issue_api_key

    key = issue_api_key(User.get_by_id(uid))
    for method, url in (("GET", "/api/cc_queue"), ("POST", "/api/cc_queue"), ("GET", f"/api/user/{uid}/queues")):
        r = client.open(url, method=method, query_string={"api_key": key}, json=QUEUE)
        assert r.status_code == 403 and r.get_json()["msg"] == "Permission denied: queues"
    assert Queue.select().count() == 0


def test_openapi_documents_strategies_and_modes(client):
    doc = client.get("/api/openapi.json").get_json()
    for path in ("/api/cc_queue", "/api/cc_queue/{queue_id}", "/api/cc_queue/{queue_id}/users",
                 "/api/user/{user_id}/queues", "/api/account"):
        assert path in doc["paths"], path
    create_schema = doc["components"]["schemas"]["QueueCreate"]
    assert set(create_schema["required"]) == {"name", "strategy", "time_base_score"}
    text = str(create_schema)
    assert "sequentially-by-next-agent-order behaves exactly as round-robin" in text
    assert "4 = locked" in str(doc["components"]["schemas"]["MembersBody"])


def test_queue_record_rows_have_seven_items_and_round_trip(api):
    """Every reply carrying a queue record shows `users` as the vendor document does, and such a record can be
    written back unchanged (the 7-item rows are read as [user_id, mode, position, level, -, timegroup_id, -])."""
    a, b = agent(api, 1), agent(api, 2)
    created = create(api, users=[[a, 4, 10], [b, 1, 2, 3]])
    qid = created["id"]
    expected = [[a, 4, 10, 1, "Agent 1", None, False], [b, 1, 2, 3, "Agent 2", None, False]]
    assert created["users"] == expected
    assert api.get(f"/api/cc_queue/{qid}").get_json()["data"]["users"] == expected
    assert api.get("/api/cc_queue").get_json()["data"][0]["users"] == expected
    record = api.get(f"/api/cc_queue/{qid}").get_json()["data"]
    r = api.put(f"/api/cc_queue/{qid}", json=record)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["data"]["users"] == expected
    assert [row[:4] for row in api.get(f"/api/cc_queue/{qid}/users").get_json()["data"]] == [
        [a, 4, 10, 1], [b, 1, 2, 3]]  # by level, position
    # 6 items is neither form
    assert api.put(f"/api/cc_queue/{qid}", json={"users": [[a, 1, 1, 1, "x", None]]}).status_code == 400


def test_time_base_score_empty_means_the_default(api):
    """The vendor document shows `"time_base_score": ""`: accepted on create and update as the default (system),
    and an empty filter is no filter."""
    r = api.post("/api/cc_queue", json={**QUEUE, "time_base_score": ""})
    assert r.status_code == 200, r.get_json()
    data = r.get_json()["data"]
    assert data["time_base_score"] == "system"
    api.put(f"/api/cc_queue/{data['id']}", json={"time_base_score": "queue"})
    r = api.put(f"/api/cc_queue/{data['id']}", data={"time_base_score": ""})
    assert r.status_code == 200 and r.get_json()["data"]["time_base_score"] == "system"
    r = api.get("/api/cc_queue?name=&strategy=&time_base_score=")
    assert r.status_code == 200 and len(r.get_json()["data"]) == 1
    assert api.post("/api/cc_queue", json={**QUEUE, "name": "B", "time_base_score": "other"}).status_code == 400


def test_colours_are_free_text(api):
    """`background_color` / `font_color` are strings in the vendor document: any one-line text up to 64 chars."""
    for colour in ("red", "#FF00aa", "rgb(255, 0, 170)", "", "hsl(120 100% 50% / 0.5)"):
        r = api.post("/api/cc_queue", json={**QUEUE, "name": f"Q {colour}", "background_color": colour,
                                            "font_color": colour})
        assert r.status_code == 200, (colour, r.get_json())
        data = r.get_json()["data"]
        assert data["background_color"] == colour and data["font_color"] == colour
        assert api.get(f"/api/cc_queue/{data['id']}").get_json()["data"]["font_color"] == colour
    for bad in ("x" * 65, "re\nd", "a\tb", "a\x00"):
        r = api.post("/api/cc_queue", json={**QUEUE, "name": "bad", "background_color": bad})
        assert r.status_code == 400 and r.get_json()["msg"].startswith("background_color:"), bad
