"""Statistics from the emulator's mod_callcenter events: counts, waits, agent activity, the rebuild after
switchdesk could not hear, and the API over them."""
from __future__ import annotations

import json

from api import stats as api_stats
from engine.stats import history, hub
from engine.store.models import AgentActivity, QueueInterval, QueueMember, now
from tests.callcenter.test_agents import DOMAIN, check_in, ok, push, start_engine
from tests.support import listed, wait_until

QUEUE = {"strategy": "ring-all", "time_base_score": "system"}


def new_queue(api, name, **fields):
    return ok(api.post("/api/cc_queue", json={"name": name, **QUEUE, **fields})).get_json()["data"]


def qstats(api, queue_id):
    return ok(api.get(f"/api/cc_queue/{queue_id}/stats")).get_json()["data"]


def test_queue_calls_agents_and_rebuild(floor, switch, engine, shop_api, shop):
    queue_id = int(floor.queue.split("@")[0])
    shop_api.put(f"/api/cc_queue/{queue_id}", json={"sla_answer_time": 20, "sla_strategy": 0})
    ok(check_in(shop_api, floor.bob_dev, user_id=floor.bob))
    wait_until(lambda: (floor.queue, f"{floor.bob}@{DOMAIN}") in listed(switch, "tier"))
    switch.wait_for_subscribers(1)
    assert engine.wait_synced(5)
    wait_until(lambda: getattr(AgentActivity.get_or_none(AgentActivity.user == floor.bob), "activity", "")
               == "available")
    cc = switch.callcenter

    # answered at once
    member = cc.member_join(floor.queue, "caller-1")
    push(switch, cc)
    wait_until(lambda: qstats(shop_api, queue_id)["waiting"] == 1)
    offers = cc.dispatch(floor.queue)
    push(switch, cc)
    cc.agent_answered(member, offers[0].agent_name)
    push(switch, cc)
    wait_until(lambda: AgentActivity.get_by_id(floor.bob).activity == "on_call")
    cc.bridge_end(member)
    push(switch, cc)
    wait_until(lambda: qstats(shop_api, queue_id)["today"]["answered"] == 1)
    # abandoned (while ringing the agent, if it was offered): an abandon, not a miss
    member = cc.member_join(floor.queue, "caller-2")
    push(switch, cc)
    rung = len(cc.dispatch(floor.queue))
    push(switch, cc)
    cc.member_abandon(member)
    push(switch, cc)
    wait_until(lambda: qstats(shop_api, queue_id)["today"]["abandoned"] == 1)
    data = qstats(shop_api, queue_id)
    today = data["today"]
    assert (today["offered"], today["answered"], today["abandoned"], today["answered_within_sla"]) == (2, 1, 1, 1)
    assert today["short_abandoned"] == 1 and today["service_level"] == 50.0 and data["waiting"] == 0
    assert data["agents"]["available"] + data["agents"]["ringing"] + data["agents"]["wrap_up"] == 1

    agents = ok(shop_api.get("/api/stats/agents")).get_json()["data"]
    bob = next(a for a in agents if a["user_id"] == floor.bob)
    assert bob["today"]["answered"] == 1 and bob["today"]["offered"] == 1 + rung and bob["today"]["missed"] == 0
    assert bob["checked_in_since"] is not None

    # switchdesk away: one caller joins and stays, one joins and leaves unheard
    engine.stop()
    stays = cc.member_join(floor.queue, "caller-3")
    QueueMember.create(uuid="gone-while-blind", account=shop.account_id, queue=queue_id, joined_at=now() - 30)
    again = start_engine(switch)
    try:
        wait_until(lambda: again.stats.rebuilds >= 1)
        assert again.stats.last_rebuild == {"joined": 1, "answered": 0, "left": 1}
        data = qstats(shop_api, queue_id)
        assert data["waiting"] == 1 and data["today"]["offered"] == 3 and data["today"]["lost"] == 1
        assert QueueMember.get_by_id(stays.uuid).joined_at > 0
        # a second rebuild changes nothing: each call counts once
        assert again.stats.rebuild() == 0
    finally:
        again.stop()


def test_bad_input_isolation_and_retention(api, tenant, other_api):
    queue = new_queue(api, "Q")
    assert other_api.get(f"/api/cc_queue/{queue['id']}/stats").status_code == 404  # another account's queue
    assert api.get("/api/stats/queues", query_string={"queue_ids": "x"}).status_code == 400
    assert api.get("/api/cc_queue/99999999/stats").status_code == 404
    QueueInterval.create(account=tenant.account_id, queue=queue["id"], start=now() - 400 * 86400, offered=1)
    QueueInterval.create(account=tenant.account_id, queue=queue["id"], start=now() - 900, offered=1)
    assert history.clean_up() == 1 and QueueInterval.select().count() == 1


def read_events(response, count):
    """The first `count` SSE messages of a streamed response, as (event, data)."""
    out, buffer = [], ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                out.append((fields["event"], json.loads(fields["data"])))
        if len(out) >= count:
            response.close()
            return out
    return out


def test_wallboard_links_and_stream(api, tenant, other_api, app, monkeypatch):
    queue = new_queue(api, "Sales", tv_name="SALES")
    other = new_queue(api, "Other")
    assert api.post("/api/wallboard", json={"name": "x", "queue_ids": [999999]}).status_code == 400
    assert api.post("/api/wallboard", json={}).status_code == 400
    link = ok(api.post("/api/wallboard", json={"name": "Floor TV", "queue_ids": [queue["id"]]})).get_json()["data"]
    token = link["token"]
    listed_links = ok(api.get("/api/wallboard")).get_json()["data"]
    assert "token" not in listed_links[0] and token not in json.dumps(listed_links)
    client = api.client
    page = client.get(f"/tv?token={token}")
    assert page.status_code == 200 and b"wallboard.js" in page.data
    assert client.get("/tv?token=nope").status_code == 404
    stream = client.get(f"/tv/stream?token={token}")
    [(event, data)] = read_events(stream, 1)
    assert event == "snapshot" and [q["id"] for q in data["queues"]] == [queue["id"]] and data["agents"] == []
    assert data["queues"][0]["tv_name"] == "SALES" and other["id"] not in [q["id"] for q in data["queues"]]
    # the API's stream: behind `stats`, per account
    stream = client.get("/api/stats/stream", headers={"Authorization": f"Bearer {tenant.key}"})
    [(event, data)] = read_events(stream, 1)
    assert event == "snapshot" and {q["id"] for q in data["queues"]} == {queue["id"], other["id"]}
    assert other_api.delete(f"/api/wallboard/{link['id']}").status_code == 404  # another account's link
    app.config["STATS_STREAM_SECONDS"] = 30  # a stream that lasts (under TESTING it ends after its snapshot)
    stream = client.get(f"/tv/stream?token={token}")
    chunks = iter(stream.response)
    assert b"event: snapshot" in next(chunks)
    ok(api.delete(f"/api/wallboard/{link['id']}"))
    hub.touch(tenant.account_id, [queue["id"]], [])  # a change wakes the stream: it finds the link revoked
    assert b"event: end" in next(chunks)
    assert next(chunks, None) is None
    stream.close()
    assert client.get(f"/tv?token={token}").status_code == 404
    # bounded: beyond the account's share, 429; a stream closed unread gives its place back
    monkeypatch.setattr(api_stats, "MAX_STREAMS_PER_ACCOUNT", 1)
    auth = {"Authorization": f"Bearer {tenant.key}"}
    first = client.get("/api/stats/stream", headers=auth)
    refused = client.get("/api/stats/stream", headers=auth)
    assert refused.status_code == 429 and refused.get_json()["success"] is False
    elsewhere = other_api.client.get("/api/stats/stream", headers={"Authorization": f"Bearer {other_api.tenant.key}"})
    assert elsewhere.status_code == 200  # another account's share
    elsewhere.close()
    first.close()
    assert api_stats.open_streams().get(tenant.account_id, 0) == 0
    again = client.get("/api/stats/stream", headers=auth)
    assert again.status_code == 200
    again.close()
    assert api_stats.open_streams() == {}
