"""Batched webhook delivery (the account's `event_push_batch` above 1): body, signature, order, retries, 4xx."""
from __future__ import annotations

import hashlib
import hmac
import random
import time
from collections import Counter

import gevent

from engine.events import delivery
from engine.events.delivery import _Lane
from engine.events.outbox import emit
from engine.store.db import db
from engine.store.models import Account, OutboxEvent
from tests.events import test_webhooks as base
from tests.events.test_webhooks import (
    SECRET,
    Received,
    call_storm,
    record_events,
    record_while_delivering,
    set_target,
    statuses,
)
from tests.support import wait_until

receiver, clock, deliverers = base.receiver, base.clock, base.deliverers  # the fixtures, shared


def set_batch(account_id: int, per_request: int) -> None:
    Account.update(event_push_batch=per_request).where(Account.id == account_id).execute()


def events_of(request: Received) -> list[dict]:
    """The event objects a request carried: a batch's `events`, or the one-event body itself."""
    body = request.json
    return body.get("events", [body])


def received_ids(requests: list[Received]) -> list[str]:
    return [event["id"] for request in requests for event in events_of(request)]


def assert_in_order(requests: list[Received]) -> None:
    """Each call's and agent's events were received (requests in arrival order, a batch's events in its order)
    in recording order (their `seq`), each exactly once."""
    seq = dict(OutboxEvent.select(OutboxEvent.id, OutboxEvent.seq).tuples())
    lanes: dict[tuple, list[int]] = {}
    got = received_ids(requests)
    assert len(got) == len(set(got))
    for request in requests:
        for event in events_of(request):
            for key in ("call_id", "user_id"):
                if key in event["data"]:
                    lanes.setdefault((key, event["data"][key]), []).append(seq[event["id"]])
    assert lanes
    for key, seqs in lanes.items():
        assert seqs == sorted(seqs), key


def test_batch_body_headers_signature_and_per_event_status(tenant, receiver, deliverers):
    set_target(tenant.account_id, receiver.url)
    set_batch(tenant.account_id, 10)
    ids = record_events(tenant.account_id, 6, agents=2)  # two agents' events, each agent's three in a row
    d = deliverers()
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 6})
    (request,) = receiver.requests  # all six ready at once: one request
    body = request.json
    assert list(body) == ["account_id", "events"] and body["account_id"] == tenant.account_id
    assert [e["id"] for e in body["events"]] == ids and [e["account_seq"] for e in body["events"]] == list(range(1, 7))
    stored = {e.id: e for e in OutboxEvent.of(tenant.account_id)}
    for event in body["events"]:  # each exactly the body a one-event request carries
        row = stored[event["id"]]
        assert event == {"id": row.id, "event": "agent:status", "ts": row.ts, "account_id": tenant.account_id,
                         "account_seq": row.account_seq, "data": row.data}
        assert row.attempts == 1 and row.delivered_at is not None and row.last_error is None
    headers = request.headers
    assert headers["x-switchdesk-event-count"] == "6"
    assert (headers["x-switchdesk-account-seq-first"], headers["x-switchdesk-account-seq-last"]) == ("1", "6")
    assert "x-switchdesk-event-id" not in headers and "x-switchdesk-account-seq" not in headers
    stamp = headers["x-switchdesk-timestamp"]
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert headers["x-switchdesk-signature"] == f"v1={expected}" and abs(int(stamp) - time.time()) < 5
    assert d.stats["attempts"] == 1 and d.stats["events_sent"] == 6

    # one event ready, the setting still above 1: a batch of one (the body's shape follows the setting)
    (later,) = record_events(tenant.account_id, 1)
    wait_until(lambda: len(receiver.requests) == 2)
    assert receiver.requests[1].json == {"account_id": tenant.account_id,
                                         "events": [events_of(receiver.requests[1])[0]]}
    assert events_of(receiver.requests[1])[0]["id"] == later


def test_take_joins_only_events_whose_keys_wait_for_nothing_else():
    """The batch makeup itself: a key held by a request in flight or by a retry keeps its later events out of
    other requests; a key's later events join the request its earlier ones are in, in order."""
    now = time.time()

    def event(seq: int, **data) -> OutboxEvent:
        return OutboxEvent(seq=seq, data=data, next_attempt=0, attempts=0, ts=int(now))

    lane = _Lane(1)
    for e in (event(1, call_id="A", user_id=7), event(2, call_id="B"), event(3, call_id="A"),
              event(4, user_id=7), event(5, call_id="B", user_id=8), event(6, call_id="C"),
              event(7, call_id="A", user_id=8), event(8, call_id="D")):
        lane.add(e, now)
    assert sorted(lane.ready) == [1, 2, 6, 8]
    first = lane.take(3, True, now)
    assert first == [1, 2, 3]  # the smallest seqs first: 3 (call A) joins behind 1, which holds call A
    # 4 waits on agent 7 (held by 1), 5 on call B (held by 2), 7 on call A: none joins another request
    assert lane.take(10, True, now) == [6, 8]
    assert lane.take(10, True, now) == []
    for seq in (6, 8):  # the second request is answered: nothing waited on calls C and D
        lane.settle(seq, True, now)
        lane.inflight.pop(seq)
    assert lane.ready == []
    for seq in first:  # the first request fails: 1, 2, 3 retry in a minute
        lane.window[seq].next_attempt = now + 60
    for seq in first:
        lane.settle(seq, False, now)
    for seq in first:
        lane.inflight.pop(seq)
    assert lane.retrying == [(now + 60, 1), (now + 60, 2)] and lane.ready == []  # 3 waits for 1, not a timer
    lane.due(now + 61)
    # retried together, taking along 4 (agent 7 after 1), 5 (call B after 2) and 7 (call A after 3, agent 8
    # after 5)
    assert lane.take(10, True, now + 61) == [1, 2, 3, 4, 5, 7]
    lane2 = _Lane(2)
    for e in (event(1, call_id="A"), event(2, call_id="A"), event(3, call_id="B")):
        e.attempts = 1 if e.seq == 1 else 0
        lane2.add(e, now)
    # the receiver looks down: only retries go, no first attempt joins them
    assert lane2.take(10, False, now) == [1] and lane2.held == [3]


def test_each_call_and_agent_in_order_with_several_batches_in_flight(tenant, receiver, deliverers):
    """Random answer times, 60 calls of 6 events over 8 agents recorded while the deliverer runs, batches of
    up to 7: every event once, each call's and agent's in recording order, several batches at a time."""
    set_target(tenant.account_id, receiver.url)
    set_batch(tenant.account_id, 7)
    rng = random.Random(20261203)
    receiver.answer = lambda request: (200, rng.uniform(0, 0.03))
    events = call_storm(60, 8, rng)
    d = deliverers()
    ids = record_while_delivering(tenant.account_id, events, 15, 0.003)
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": len(ids)}, timeout=20)
    assert sorted(received_ids(receiver.requests)) == sorted(ids)
    assert_in_order(receiver.requests)
    sizes = [len(events_of(r)) for r in receiver.requests]
    assert max(sizes) == 7 and len(sizes) < len(ids) / 2
    assert receiver.peak > 1 and 1 < d.stats["peak_in_flight"] <= delivery.CONCURRENCY
    # several events of one call in one batch: a key's later events ride with its earlier ones
    assert any(max(Counter(e["data"].get("call_id") for e in events_of(r) if "call_id" in e["data"]).values(),
                   default=0) > 1 for r in receiver.requests)
    numbers = {e["id"]: e["account_seq"] for r in receiver.requests for e in events_of(r)}
    assert [numbers[i] for i in ids] == list(range(1, len(ids) + 1))
    for request in receiver.requests:
        seqs = [e["account_seq"] for e in events_of(request)]
        assert seqs == sorted(seqs)
        assert request.headers["x-switchdesk-account-seq-first"] == str(seqs[0])
        assert request.headers["x-switchdesk-account-seq-last"] == str(seqs[-1])


def test_a_failed_batch_retries_its_events_together(tenant, receiver, deliverers, clock):
    set_target(tenant.account_id, receiver.url)
    set_batch(tenant.account_id, 50)
    ids = record_events(tenant.account_id, 4, agents=2)
    receiver.answer = lambda request: 503 if len(receiver.requests) == 1 else 200
    d = deliverers(clock=clock)
    wait_until(lambda: OutboxEvent.get(OutboxEvent.id == ids[0]).attempts == 1)
    gevent.sleep(0.1)
    assert received_ids(receiver.requests) == ids  # nothing else went meanwhile
    rows = list(OutboxEvent.of(tenant.account_id).order_by(OutboxEvent.seq))
    assert {(r.status, r.attempts, r.last_error) for r in rows} == {("pending", 1, "HTTP 503")}
    assert len({r.next_attempt for r in rows}) == 1  # one delay for the whole batch
    more = record_events(tenant.account_id, 2, agents=2)  # behind the retrying ones: they wait too
    gevent.sleep(0.1)
    assert len(receiver.requests) == 1
    clock.advance(5)
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 6})
    assert received_ids(receiver.requests[1:]) == ids + more  # the retry took the new ones along, in order
    rows = {r.id: r for r in OutboxEvent.of(tenant.account_id)}
    assert [rows[i].attempts for i in ids + more] == [2, 2, 2, 2, 1, 1]
    assert all(rows[i].delivered_at for i in ids + more) and d.stats["retries"] == 4
    assert len({r.body for r in receiver.requests}) == 2


def test_a_4xx_fails_the_whole_batch_and_one_event_is_redelivered(api, tenant, receiver, deliverers):
    set_target(tenant.account_id, receiver.url)
    set_batch(tenant.account_id, 20)
    refused = record_events(tenant.account_id, 3, agents=3)
    receiver.answer = lambda request: 422 if len(receiver.requests) == 1 else 200
    deliverers()
    wait_until(lambda: statuses(tenant.account_id) == {"failed": 3})
    for row in OutboxEvent.of(tenant.account_id):
        assert (row.attempts, row.last_error, row.delivered_at) == (1, "HTTP 422", None)
    after = record_events(tenant.account_id, 2, agents=3)  # the queue moved on
    wait_until(lambda: statuses(tenant.account_id) == {"failed": 3, "delivered": 2})
    assert received_ids(receiver.requests[1:]) == after
    r = api.post(f"/api/event/{refused[1]}/redeliver")
    assert r.status_code == 200
    wait_until(lambda: statuses(tenant.account_id) == {"failed": 2, "delivered": 3})
    assert received_ids(receiver.requests[2:]) == [refused[1]]
    assert api.get(f"/api/event/{refused[1]}").get_json()["data"]["attempts"] == 1


def test_switching_batches_on_and_off(tenant, receiver, deliverers):
    set_target(tenant.account_id, receiver.url)
    deliverers()
    shapes = []
    for per_request in (1, 5, 1):
        set_batch(tenant.account_id, per_request)
        before = len(receiver.requests)
        ids = record_events(tenant.account_id, 5, agents=5)
        wait_until(lambda ids=ids: set(received_ids(receiver.requests)) >= set(ids))
        shapes.append([("events" in r.json, len(events_of(r))) for r in receiver.requests[before:]])
    assert shapes[0] == shapes[2] == [(False, 1)] * 5  # the vendor's one-event body
    assert shapes[1] == [(True, 5)]
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 15})


def test_event_push_batch_setting(api):
    r = api.get("/api/account")
    assert r.get_json()["data"]["event_push_batch"] == 1
    r = api.put("/api/account", json={"event_push_batch": 100})
    assert r.status_code == 200 and r.get_json()["data"]["event_push_batch"] == 100
    for bad in (0, 501, None, "many", 2.5):
        r = api.put("/api/account", json={"event_push_batch": bad, "name": "changed"})
        assert r.status_code == 400 and r.get_json()["msg"].startswith("event_push_batch"), (bad, r.get_json())
    data = api.get("/api/account").get_json()["data"]
    assert data["event_push_batch"] == 100 and data["name"] != "changed"


def test_a_batch_gives_up_per_event_after_24_hours_never_out_of_order(tenant, receiver, deliverers, clock):
    """An old event gives up at its 24 hours while a newer one of its call in the same request keeps retrying;
    an old event behind that newer one (recorded late with an old `ts`) keeps retrying with it, not failing
    before it."""
    set_target(tenant.account_id, receiver.url)
    set_batch(tenant.account_id, 3)
    now = int(time.time())
    with db.atomic():
        old = emit(tenant.account_id, "call:start", {"call_id": "A"}, ts=now - delivery.MAX_AGE - 10).id
        new = emit(tenant.account_id, "call:ring", {"call_id": "A"}, ts=now).id
        late = emit(tenant.account_id, "call:end", {"call_id": "A"}, ts=now - delivery.MAX_AGE - 5).id
    receiver.answer = lambda request: 503 if len(receiver.requests) == 1 else 200
    deliverers(clock=clock)
    wait_until(lambda: OutboxEvent.get(OutboxEvent.id == old).status == "failed")
    assert received_ids(receiver.requests) == [old, new, late]
    assert "gave up 24 hours after the event" in OutboxEvent.get(OutboxEvent.id == old).last_error
    for event_id in (new, late):
        row = OutboxEvent.get(OutboxEvent.id == event_id)
        assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 503")
    clock.advance(700)
    wait_until(lambda: statuses(tenant.account_id) == {"failed": 1, "delivered": 2})
    assert received_ids(receiver.requests[1:]) == [new, late]


def test_a_receiver_that_is_down_gets_at_most_concurrency_batches(tenant, deliverers, clock):
    """Connection refused: after `concurrency` failed requests in a row only the batches already tried are
    retried (no first attempt joins them); when the receiver is back everything arrives, in order."""
    port = base.free_port()
    set_target(tenant.account_id, f"http://127.0.0.1:{port}/hooks")
    set_batch(tenant.account_id, 10)
    ids = record_events(tenant.account_id, 200, agents=200)
    d = deliverers(clock=clock, concurrency=4)
    wait_until(lambda: d.stats["retries"] >= 40)
    gevent.sleep(0.2)
    tried = OutboxEvent.select().where(OutboxEvent.attempts > 0).count()
    assert 40 <= tried <= (2 * 4 - 1) * 10 and d.stats["attempts"] <= 2 * 4 - 1
    clock.advance(5)  # the retries are due: they probe, fail again, and still nothing else is tried
    wait_until(lambda: d.stats["retries"] >= 2 * tried)
    gevent.sleep(0.2)
    assert OutboxEvent.select().where(OutboxEvent.attempts > 0).count() == tried
    receiver = base.Receiver(port).start()
    try:
        clock.advance(5)
        wait_until(lambda: statuses(tenant.account_id) == {"delivered": 200})
        assert sorted(received_ids(receiver.requests)) == sorted(ids)
        assert_in_order(receiver.requests)
        assert max(len(events_of(r)) for r in receiver.requests) == 10
    finally:
        receiver.stop()
