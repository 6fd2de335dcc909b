"""Queue membership (tiers), from the queue side, the user side and the user record."""
from __future__ import annotations

import json

import pytest

from engine.directory.accounts import issue_api_key
from engine.store import changes
from engine.store.models import Queue, Tier, TimeGroup, User
from tests.callcenter.test_queues import agent, create
from tests.querycount import count_queries


@pytest.fixture
def setup(api):
    a, b = agent(api, 1), agent(api, 2)
    q1, q2 = create(api, name="Sales")["id"], create(api, name="Support")["id"]
    return a, b, q1, q2


def members(api, queue_id):
    r = api.get(f"/api/cc_queue/{queue_id}/users")
    assert r.status_code == 200, r.get_json()
    return r.get_json()["data"]


def test_get_rows_match_the_vendor_example(api, setup):
    a, b, q1, _ = setup
    api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 4, 10, 1, None], [b, 4, 10, 1]]})
    assert members(api, q1) == [[a, 4, 10, 1, "Agent 1", None, False], [b, 4, 10, 1, "Agent 2", None, False]]


def test_post_adds_and_updates_with_defaults(api, setup):
    a, b, q1, _ = setup
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a]]})
    assert r.status_code == 200 and r.get_json()["data"] == [[a, 3, 1, 1, "Agent 1", None, False]]
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[b, 1, 5, 2]]})
    assert [row[0] for row in r.get_json()["data"]] == [a, b]  # added, a kept
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 2, 7, 0]]})
    assert r.get_json()["data"][0] == [a, 2, 7, 0, "Agent 1", None, False]  # level 0 sorts first


def test_form_json_text_and_comma_separated_ids(api, setup):
    a, b, q1, q2 = setup
    r = api.post(f"/api/cc_queue/{q1}/users", data={"users": json.dumps([[a, 4, 3, 2, None]])})
    assert r.status_code == 200 and r.get_json()["data"] == [[a, 4, 3, 2, "Agent 1", None, False]]
    r = api.post(f"/api/cc_queue/{q2}/users", data={"users": f"{a},{b}"})
    assert [row[:4] for row in r.get_json()["data"]] == [[a, 3, 1, 1], [b, 3, 1, 1]]


def test_put_replaces_all(api, setup):
    a, b, q1, _ = setup
    api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a], [b]]})
    r = api.put(f"/api/cc_queue/{q1}/users", json={"users": [[b, 4]]})
    assert r.get_json()["data"] == [[b, 4, 1, 1, "Agent 2", None, False]]
    r = api.put(f"/api/cc_queue/{q1}/users", json={"users": []})
    assert r.status_code == 200 and r.get_json()["data"] == []
    assert Tier.select().count() == 0


def test_delete_by_ids_array_or_comma_list(api, setup):
    a, b, q1, _ = setup
    c = agent(api, 3)
    api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a], [b], [c]]})
    r = api.delete(f"/api/cc_queue/{q1}/users", json={"ids": [a]})
    assert [row[0] for row in r.get_json()["data"]] == [b, c]
    r = api.delete(f"/api/cc_queue/{q1}/users", query_string={"ids": f"{b},{c}"})
    assert r.status_code == 200 and r.get_json()["data"] == []
    # not a member any more: ignored; unknown user: 400 naming it
    assert api.delete(f"/api/cc_queue/{q1}/users", json={"ids": [a]}).status_code == 200
    r = api.delete(f"/api/cc_queue/{q1}/users", json={"ids": [a, 987654]})
    assert r.status_code == 400 and "987654" in r.get_json()["msg"]
    assert api.delete(f"/api/cc_queue/{q1}/users").status_code == 400  # ids required


def test_only_agents_of_the_account(api, other_api, setup, other_tenant):
    a, _, q1, _ = setup
    plain = agent(api, 5, is_agent=False)
    foreign = agent(other_api, 6)
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a], [plain]]})
    assert r.status_code == 400
    assert r.get_json()["msg"] == f"users: user {plain} is not an agent (set is_agent first)"
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a], [foreign]]})
    unknown = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a], [999999]]})
    assert r.status_code == unknown.status_code == 400
    # another account's user reads exactly like an id that does not exist
    assert r.get_json()["msg"] == f"users: no user with id {foreign}"
    assert unknown.get_json()["msg"] == "users: no user with id 999999"
    assert Tier.select().count() == 0  # a refused request changes nothing, not even the good rows


@pytest.mark.parametrize(("row", "where"), [
    ([1, 0], "users.0.mode"), ([1, 5], "users.0.mode"), ([1, 7], "users.0.mode"),
    ([1, 3, -1], "users.0.position"), ([1, 3, 1001], "users.0.position"),
    ([1, 3, 1, 1001], "users.0.level"), ([1, 3, 1, "x"], "users.0.level"),
    ([1, 3, 1, 1, -4], "users.0.timegroup_id"), ([1, 3, 1, 1, None, 9], "users.0"), ([], "users.0"),
    (["abc"], "users.0.user_id"),
])
def test_row_values_validated(api, setup, row, where):
    a, _, q1, _ = setup
    row = [a if item == 1 and i == 0 else item for i, item in enumerate(row)]
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [row]})
    assert r.status_code == 400 and r.get_json()["msg"].startswith(where + ":"), r.get_json()
    assert Tier.select().count() == 0


def test_every_valid_mode_and_the_range_limits(api, setup):
    a, _, q1, _ = setup
    for mode in (1, 2, 3, 4):
        r = api.put(f"/api/cc_queue/{q1}/users", json={"users": [[a, mode, 0, 1000]]})
        assert r.get_json()["data"][0][1:4] == [mode, 0, 1000]


def test_duplicate_rows_refused(api, setup):
    a, _, q1, _ = setup
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 1], [a, 2]]})
    assert r.status_code == 400 and str(a) in r.get_json()["msg"]


def test_timegroup_must_belong_to_the_account(api, setup, tenant, other_tenant):
    a, _, q1, _ = setup
    mine = TimeGroup.create(account=tenant.account_id, name="Office")
    theirs = TimeGroup.create(account=other_tenant.account_id, name="Office")
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 3, 1, 1, theirs.id]]})
    assert r.status_code == 400 and r.get_json()["msg"] == f"users.timegroup_id: no time group with id {theirs.id}"
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 3, 1, 1, mine.id]]})
    assert r.get_json()["data"][0][5] == mine.id
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 3, 1, 1, 0]]})  # 0: no time group
    assert r.get_json()["data"][0][5] is None


def test_joined_is_read_only_and_kept_on_update(api, setup):
    a, _, q1, _ = setup
    api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a]]})
    Tier.update(joined=True).execute()
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 4, 2, 2, None, False]]})
    assert r.status_code == 400  # a sixth item (joined) is not writable
    r = api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 4, 2, 2]]})
    assert r.get_json()["data"] == [[a, 4, 2, 2, "Agent 1", None, True]]


# --- the user side -------------------------------------------------------------------------------


def test_user_side_rest(api, setup):
    a, _, q1, q2 = setup
    url = f"/api/user/{a}/queues"
    assert api.get(url).get_json()["data"] == []
    r = api.post(url, json={"queues": [[q1, 4, 10, 2]]})
    assert r.status_code == 200 and r.get_json()["data"] == [[q1, 4, 10, 2, None]]
    r = api.post(url, data={"queues": json.dumps([[q2]])})
    assert r.get_json()["data"] == [[q1, 4, 10, 2, None], [q2, 3, 1, 1, None]]
    assert members(api, q2) == [[a, 3, 1, 1, "Agent 1", None, False]]
    r = api.put(url, json={"queue_perms": [[q2, 1]]})
    assert r.get_json()["data"] == [[q2, 1, 1, 1, None]]
    r = api.delete(url, query_string={"ids": str(q2)})
    assert r.get_json()["data"] == []
    r = api.delete(url, json={"ids": [q1, 424242]})
    assert r.status_code == 400 and r.get_json()["msg"] == "ids: no queue with id 424242"


def test_user_side_rules(api, other_api, setup):
    a, _, q1, _ = setup
    plain = agent(api, 5, is_agent=False)
    foreign_queue = create(other_api, name="Theirs")["id"]
    foreign_user = agent(other_api, 6)
    r = api.post(f"/api/user/{plain}/queues", json={"queues": [[q1]]})
    assert r.status_code == 400 and "is not an agent" in r.get_json()["msg"]
    r = api.post(f"/api/user/{a}/queues", json={"queues": [[q1], [foreign_queue]]})
    assert r.status_code == 400 and r.get_json()["msg"] == f"queues: no queue with id {foreign_queue}"
    assert api.get(f"/api/user/{foreign_user}/queues").status_code == 404
    assert api.post(f"/api/user/{foreign_user}/queues", json={"queues": [[q1]]}).status_code == 404
    assert api.get("/api/user/999999/queues").status_code == 404
    r = api.post(f"/api/user/{a}/queues", json={"queues": [[q1, 9]]})
    assert r.status_code == 400 and r.get_json()["msg"].startswith("queues.0.mode:")
    assert Tier.select().count() == 0


# --- the user record -----------------------------------------------------------------------------


def test_user_record_shows_queue_perms_and_joined_queues(api, setup):
    a, b, q1, q2 = setup
    api.put(f"/api/user/{a}/queues", json={"queues": [[q2, 4, 5, 6], [q1]]})
    Tier.update(joined=True).where(Tier.queue == q2).execute()
    record = api.get(f"/api/user/{a}").get_json()["data"]
    assert record["queue_perms"] == [[q1, 3, 1, 1, None], [q2, 4, 5, 6, None]]
    assert record["queues"] == [q2]
    assert api.get(f"/api/user/{b}").get_json()["data"]["queue_perms"] == []


def test_queue_perms_written_through_the_user_api(api, setup):
    a, _, q1, q2 = setup
    r = api.put(f"/api/user/{a}", json={"queue_perms": [[q1, 4], [q2]]})
    assert r.status_code == 200 and r.get_json()["data"]["queue_perms"] == [[q1, 4, 1, 1, None], [q2, 3, 1, 1, None]]
    r = api.put(f"/api/user/{a}", json={"queue_perms": [[q2, 1]]})  # replace semantics
    assert r.get_json()["data"]["queue_perms"] == [[q2, 1, 1, 1, None]]
    r = api.put(f"/api/user/{a}", json={"name": "Renamed"})  # not submitted: untouched
    assert r.get_json()["data"]["queue_perms"] == [[q2, 1, 1, 1, None]]
    r = api.put(f"/api/user/{a}", json={"queue_perms": None})
    assert r.get_json()["data"]["queue_perms"] == [] and Tier.select().count() == 0
    r = api.post("/api/user", json={"name": "New", "username": "newagent", "password": "Ab123456",
                                    "email": "n@x.test", "is_agent": True, "queue_perms": f"{q1},{q2}"})
    assert r.status_code == 200 and [row[0] for row in r.get_json()["data"]["queue_perms"]] == [q1, q2]


def test_queue_perms_refused_changes_nothing(api, setup):
    a, _, q1, _ = setup
    r = api.put(f"/api/user/{a}", json={"name": "Changed", "queue_perms": [[q1], [31337]]})
    assert r.status_code == 400 and r.get_json()["msg"] == "queue_perms: no queue with id 31337"
    assert User.get_by_id(a).name == "Agent 1" and Tier.select().count() == 0
    r = api.post("/api/user", json={"name": "New", "username": "newagent", "password": "Ab123456",
                                    "email": "n@x.test", "queue_perms": [[q1]]})  # not an agent
    assert r.status_code == 400 and "is not an agent" in r.get_json()["msg"]
    assert User.select().where(User.username == "newagent").count() == 0


def test_queue_perms_needs_the_queues_permission(api, client, setup):
    a, _, q1, _ = setup
    manager = agent(api, 7, permissions={"call_center_api": True, "users": True})
    key = issue_api_key(User.get_by_id(manager))
    r = client.put(f"/api/user/{a}", json={"queue_perms": [[q1]]}, query_string={"api_key": key})
    assert r.status_code == 403 and "queues" in r.get_json()["msg"]
    assert client.put(f"/api/user/{a}", json={"name": "ok"}, query_string={"api_key": key}).status_code == 200
    assert Tier.select().count() == 0


def test_deleting_a_user_removes_its_tiers(api, setup, tenant):
    a, b, q1, q2 = setup
    api.put(f"/api/user/{a}/queues", json={"queues": [[q1], [q2]]})
    api.put(f"/api/user/{b}/queues", json={"queues": [[q1]]})
    heard = []
    changes.listen(listener := lambda kind, account_id, ids: heard.append((kind, ids)))
    try:
        assert api.delete(f"/api/user/{a}").status_code == 200
    finally:
        changes.unlisten(listener)
    assert [(t.queue_id, t.user_id) for t in Tier.select()] == [(q1, b)]
    assert ("tier", [a]) in heard
    assert members(api, q1) == [[b, 3, 1, 1, "Agent 2", None, False]]


def test_membership_change_notifications(api, setup, tenant):
    a, b, q1, _ = setup
    heard = []
    changes.listen(listener := lambda kind, account_id, ids: heard.append((kind, account_id, ids)))
    try:
        api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a], [b]]})
        api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a], [b, 4]]})  # only b changes
        api.put(f"/api/cc_queue/{q1}/users", json={"users": [[b, 4]]})  # only a leaves
        api.post(f"/api/cc_queue/{q1}/users", json={"users": [[a, 99]]})  # refused
    finally:
        changes.unlisten(listener)
    acct = tenant.account_id
    assert heard == [("tier", acct, sorted([a, b])), ("tier", acct, [b]), ("tier", acct, [a])]


def test_lists_with_memberships_run_constant_queries(api, database):
    queues = [create(api, name=f"q{i}")["id"] for i in range(3)]

    def measure():
        with count_queries(database) as counter:
            users = api.get("/api/user").get_json()["data"]
        return counter.count, len(users)

    agents = [agent(api, 1)]
    api.put(f"/api/user/{agents[0]}/queues", json={"queues": [[q] for q in queues]})
    small = measure()
    for i in range(2, 12):
        uid = agent(api, i)
        api.put(f"/api/user/{uid}/queues", json={"queues": [[q] for q in queues]})
    large = measure()
    assert large[1] == small[1] + 10
    assert small[0] == large[0], (small, large)


def test_bulk_assignment(api, database):
    """Many agents in one request: a few statements, not one per row."""
    queue = create(api, name="Big")["id"]
    uids = [agent(api, i) for i in range(1, 31)]
    with count_queries(database) as counter:
        r = api.put(f"/api/cc_queue/{queue}/users", json={"users": [[u, 3, i, 1] for i, u in enumerate(uids)]})
    assert r.status_code == 200 and len(r.get_json()["data"]) == 30
    first = counter.count
    with count_queries(database) as counter:
        api.put(f"/api/cc_queue/{queue}/users", json={"users": [[u, 4, i, 1] for i, u in enumerate(uids)]})
    assert counter.count <= first + 2, (first, counter.count)
    assert {t.mode for t in Tier.select()} == {4}
    assert Queue.select().count() == 1
