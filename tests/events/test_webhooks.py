"""Webhook delivery against a real HTTP receiver on loopback: wire format, order, retries, outages, restarts."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import socket
import time
from collections import Counter
from dataclasses import dataclass

import gevent
import pytest
from gevent.pywsgi import WSGIServer

from engine.directory import security
from engine.events import delivery, sender
from engine.events.delivery import Deliverer
from engine.events.outbox import emit
from engine.server import NoDelayHandler
from engine.store.db import db
from engine.store.models import Account, OutboxEvent
from tests.querycount import count_queries
from tests.support import wait_until

SECRET = "a-long-webhook-secret-123"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.json["id"]


class Receiver:
    """A real HTTP server on 127.0.0.1 that records every request and answers as `answer(request)` says."""

    def __init__(self, port: int = 0):
        self.requests: list[Received] = []
        self.answer = lambda request: 200
        self.active = self.peak = 0  # requests being answered now, and the most at once
        self.server = WSGIServer(("127.0.0.1", port), self.app, log=None, handler_class=NoDelayHandler,
                                 error_log=logging.getLogger("test.receiver"))

    def app(self, environ, start_response):
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        path = environ["PATH_INFO"] + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        request = Received(path, headers, environ["wsgi.input"].read())
        self.requests.append(request)
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            status = self.answer(request)
            if isinstance(status, tuple):
                status, delay = status
                gevent.sleep(delay)
        finally:
            self.active -= 1
        start_response(f"{status} X", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    def start(self) -> Receiver:
        self.server.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/pbx?token=abc"

    def ids(self) -> list[str]:
        return [r.id for r in self.requests]

    def stop(self) -> None:
        self.server.stop(timeout=1)


class Clock:
    """Wall time plus an offset the test moves forward, to pass retry delays and 24 hours instantly."""

    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def statuses(account_id: int) -> Counter:
    return Counter(e.status for e in OutboxEvent.of(account_id))


def set_target(account_id: int, url: str | None, secret: str | None = SECRET) -> None:
    Account.update(event_push_url=url, webhook_secret_enc=security.encrypt_secret(secret) if secret else None).where(
        Account.id == account_id).execute()


def record_events(account_id: int, n: int, event: str = "agent:status", agents: int = 1) -> list[str]:
    """`n` events of `agents` agents (user_id 0, 1, ... in turn): of one agent, by default, so they go in order."""
    ids = []
    with db.atomic():
        for i in range(n):
            data = {"user_id": i % agents, "activity_id": 1, "pause_id": 0, "in_calls": 1}
            ids.append(emit(account_id, event, data).id)
    return ids


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def deliverers():
    started: list[Deliverer] = []

    def make(**kw) -> Deliverer:
        kw.setdefault("allow_private", True)
        kw.setdefault("poll_interval", 0.02)
        d = Deliverer(**kw).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop(timeout=2)


def test_wire_format_headers_and_signature(tenant, other_tenant, receiver, deliverers):
    set_target(tenant.account_id, receiver.url)
    set_target(other_tenant.account_id, receiver.url, secret=None)
    ids = record_events(tenant.account_id, 3)
    with db.atomic():
        unsigned = emit(other_tenant.account_id, "agent:checkout", {"user_id": 7}, ts=1700000000).id
    deliverers()
    wait_until(lambda: len(receiver.requests) == 4)
    mine = [r for r in receiver.requests if r.id in ids]
    assert [r.id for r in mine] == ids
    assert [r.json["account_seq"] for r in mine] == [1, 2, 3]
    for request in mine:
        body = request.json
        assert list(body) == ["id", "event", "ts", "account_id", "account_seq", "data"]
        assert body["account_id"] == tenant.account_id and body["event"] == "agent:status"
        assert request.headers["x-switchdesk-account-seq"] == str(body["account_seq"])
        assert body["data"]["activity_id"] == 1
        assert request.path == "/hooks/pbx?token=abc"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-switchdesk-event-id"] == body["id"]
        stamp = request.headers["x-switchdesk-timestamp"]
        assert abs(int(stamp) - time.time()) < 5
        expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-switchdesk-signature"] == f"v1={expected}"
    other = next(r for r in receiver.requests if r.id == unsigned)
    assert "x-switchdesk-signature" not in other.headers
    assert other.json == {"id": unsigned, "event": "agent:checkout", "ts": 1700000000,
                          "account_id": other_tenant.account_id, "account_seq": 1, "data": {"user_id": 7}}
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 3})
    stored = OutboxEvent.get(OutboxEvent.id == ids[0])
    assert stored.attempts == 1 and stored.delivered_at is not None and stored.last_error is None


def test_new_event_wakes_the_deliverer_without_waiting_for_the_poll(tenant, receiver, deliverers):
    set_target(tenant.account_id, receiver.url)
    deliverers(poll_interval=30)
    gevent.sleep(0.05)  # the first poll has passed
    started = time.monotonic()
    record_events(tenant.account_id, 1)
    wait_until(lambda: len(receiver.requests) == 1, timeout=2)
    assert time.monotonic() - started < 1


def test_a_steady_stream_of_commits_is_gathered_into_rounds(tenant, receiver, deliverers, monkeypatch):
    """Commits a few ms apart (a busy switch) start a round at most every `wake_gap`: one outbox read for many
    commits; the first commit after a quiet spell is sent at once."""
    set_target(tenant.account_id, receiver.url)
    d = deliverers(poll_interval=30, wake_gap=0.3)
    gevent.sleep(0.05)  # the first poll has passed
    reads = []
    real = d._read_heads
    monkeypatch.setattr(d, "_read_heads", lambda *a, **kw: reads.append(1) or real(*a, **kw))
    started = time.monotonic()
    record_events(tenant.account_id, 1)
    wait_until(lambda: len(receiver.requests) == 1, timeout=2)
    assert time.monotonic() - started < 0.25  # not held for the gap
    for _ in range(20):  # 20 commits over ~0.2 s
        record_events(tenant.account_id, 1)
        gevent.sleep(0.01)
    wait_until(lambda: len(receiver.requests) == 21, timeout=3)
    assert len(reads) <= 4, reads  # the first, then at most one round per 0.3 s
    assert [r.json["account_seq"] for r in receiver.requests] == list(range(1, 22))


def test_first_batches_of_many_accounts_are_read_in_one_query(tenant, other_tenant):
    set_target(tenant.account_id, "http://a.example/hooks")
    set_target(other_tenant.account_id, "http://b.example/hooks", secret=None)
    mine = record_events(tenant.account_id, 3)
    theirs = record_events(other_tenant.account_id, 1)
    deliverer = Deliverer(batch=2)
    # sent but not yet recorded: still pending in the database, never read again
    deliverer._unacked[tenant.account_id] = {OutboxEvent.get(OutboxEvent.id == mine[0]).seq}
    with count_queries(db.obj) as queries:
        # three accounts (one without events) pad to four subqueries, the fourth reading nothing
        heads = deliverer._read_heads([10 ** 9, other_tenant.account_id, tenant.account_id])
    assert queries.count == 1
    assert set(heads) == {tenant.account_id, other_tenant.account_id}
    batch, target, full = heads[tenant.account_id]
    assert [e.id for e in batch] == mine[1:] and full
    assert (target.url, target.secret) == ("http://a.example/hooks", SECRET)
    batch, target, full = heads[other_tenant.account_id]
    assert [e.id for e in batch] == theirs and not full
    assert (target.url, target.secret) == ("http://b.example/hooks", None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_target_refused_at_send_time(tenant, receiver, deliverers, host):
    set_target(tenant.account_id, receiver.url.replace("127.0.0.1", host))
    ids = record_events(tenant.account_id, 2)
    deliverers(allow_private=False)
    wait_until(lambda: statuses(tenant.account_id) == {"failed": 2})
    assert receiver.requests == []
    event = OutboxEvent.get(OutboxEvent.id == ids[0])
    assert "loopback, link-local or private" in event.last_error and "127.0.0.1" in event.last_error


def test_retries_keep_the_id_and_the_account_order(tenant, receiver, deliverers, clock):
    set_target(tenant.account_id, receiver.url)
    first, second, third = record_events(tenant.account_id, 3)
    failures = Counter()

    def answer(request):
        if request.id == first and failures[first] < 2:
            failures[first] += 1
            return 503
        return 200

    receiver.answer = answer
    d = deliverers(clock=clock)
    wait_until(lambda: len(receiver.requests) == 1)
    gevent.sleep(0.1)
    assert receiver.ids() == [first]  # the later events wait behind the head's retry
    head = OutboxEvent.get(OutboxEvent.id == first)
    assert head.status == "pending" and head.attempts == 1 and head.last_error == "HTTP 503"
    assert head.next_attempt > clock() - 1
    while len(receiver.requests) < 5:
        clock.advance(700)
        gevent.sleep(0.05)
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 3})
    assert receiver.ids() == [first, first, first, second, third]
    assert OutboxEvent.get(OutboxEvent.id == first).attempts == 3
    assert d.stats["retries"] == 2


def test_retry_delay_doubles_with_jitter_and_is_capped():
    for attempts in range(1, 30):
        window = min(delivery.RETRY_CAP, delivery.RETRY_BASE * 2 ** (attempts - 1))
        delays = [delivery.retry_delay(attempts) for _ in range(50)]
        assert all(window / 2 <= d <= window for d in delays)
    assert delivery.retry_delay(40) <= 600
    assert len({round(delivery.retry_delay(8), 6) for _ in range(20)}) > 1


@pytest.mark.parametrize(("status", "fails_at_once"), [(400, True), (404, True), (410, True), (408, False),
                                                       (429, False), (500, False), (502, False)])
def test_4xx_fails_at_once_other_errors_retry(tenant, receiver, deliverers, clock, status, fails_at_once):
    set_target(tenant.account_id, receiver.url)
    first, second = record_events(tenant.account_id, 2)
    receiver.answer = lambda request: status if request.id == first and receiver.ids().count(first) == 1 else 200
    deliverers(clock=clock)
    if fails_at_once:
        wait_until(lambda: statuses(tenant.account_id) == {"failed": 1, "delivered": 1})
        event = OutboxEvent.get(OutboxEvent.id == first)
        assert event.last_error == f"HTTP {status}" and event.attempts == 1
        assert receiver.ids() == [first, second]  # the queue moved on
    else:
        wait_until(lambda: OutboxEvent.get(OutboxEvent.id == first).attempts == 1)
        assert OutboxEvent.get(OutboxEvent.id == first).status == "pending"
        clock.advance(5)
        wait_until(lambda: statuses(tenant.account_id) == {"delivered": 2})
        assert receiver.ids() == [first, first, second]


def test_a_stalled_receiver_times_out_and_is_retried(tenant, receiver, deliverers, clock):
    set_target(tenant.account_id, receiver.url)
    (event_id,) = record_events(tenant.account_id, 1)
    receiver.answer = lambda request: (200, 2.0) if len(receiver.requests) == 1 else 200
    deliverers(clock=clock, timeout=0.2)
    wait_until(lambda: OutboxEvent.get(OutboxEvent.id == event_id).attempts == 1)
    event = OutboxEvent.get(OutboxEvent.id == event_id)
    assert event.status == "pending" and "no answer within 0.2 s" in event.last_error
    clock.advance(5)
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 1})
    assert receiver.ids() == [event_id, event_id]


def test_the_default_timeout_is_five_seconds():
    assert sender.SEND_TIMEOUT == 5.0 and Deliverer().sender.timeout == 5.0


def test_retries_stop_24_hours_after_the_event_and_it_is_kept(tenant, receiver, deliverers, clock):
    set_target(tenant.account_id, receiver.url)
    first, second = record_events(tenant.account_id, 2)
    receiver.answer = lambda request: 500 if request.id == first else 200
    deliverers(clock=clock)
    wait_until(lambda: OutboxEvent.get(OutboxEvent.id == first).attempts == 1)
    ts = OutboxEvent.get(OutboxEvent.id == first).ts
    clock.advance(delivery.MAX_AGE - 300)
    wait_until(lambda: OutboxEvent.get(OutboxEvent.id == first).attempts == 2)
    assert OutboxEvent.get(OutboxEvent.id == first).next_attempt <= ts + delivery.MAX_AGE  # the last try at 24 h
    clock.advance(400)
    wait_until(lambda: statuses(tenant.account_id) == {"failed": 1, "delivered": 1})
    event = OutboxEvent.get(OutboxEvent.id == first)
    assert event.attempts == 3 and event.last_error == "HTTP 500; gave up 24 hours after the event"
    assert receiver.ids() == [first, first, first, second]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_receipts(ids: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for i in ids:
        seen.setdefault(i, None)
    return list(seen)


def assert_in_order_per_call_and_agent(requests: list[Received]) -> None:
    """Each call's and each agent's events were first received in recording order (their `seq`)."""
    seq = dict(OutboxEvent.select(OutboxEvent.id, OutboxEvent.seq).tuples())
    bodies = {r.id: r.json for r in requests}
    lanes: dict[tuple, list[int]] = {}
    for event_id in first_receipts([r.id for r in requests]):
        body = bodies[event_id]
        for key in ("call_id", "user_id"):
            if key in body["data"]:
                lanes.setdefault((body["account_id"], key, body["data"][key]), []).append(seq[event_id])
    assert lanes
    for key, seqs in lanes.items():
        assert seqs == sorted(seqs), key


def record_while_delivering(account_id: int, events: list[tuple[str, dict]], chunk: int, pause: float) -> list[str]:
    """Record `events` a few per transaction, letting the deliverer run between them; their ids in order."""
    ids: list[str] = []
    for start in range(0, len(events), chunk):
        with db.atomic():
            ids += [emit(account_id, name, data).id for name, data in events[start:start + chunk]]
        gevent.sleep(pause)
    return ids


def call_storm(calls: int, agents: int, rng: random.Random) -> list[tuple[str, dict]]:
    """The events of `calls` queue calls answered by `agents` agents, interleaved as they would be recorded:
    six per call, the two agent:status events keyed by the agent (one also by the call)."""
    per_call = []
    for n in range(calls):
        call_id, agent = f"call-{n:03d}", n % agents
        per_call.append([
            ("call:start", {"call_id": call_id, "dst_num": "1000"}),
            ("call:ring", {"call_id": call_id, "dst_user_id": agent}),
            ("call:answer", {"call_id": call_id, "dst_user_id": agent}),
            ("agent:status", {"user_id": agent, "activity_id": 2, "call_id": call_id}),
            ("call:end", {"call_id": call_id, "dst_user_id": agent, "hangup_cause": "NORMAL_CLEARING"}),
            ("agent:status", {"user_id": agent, "activity_id": 3}),
        ])
    events = []
    while per_call:
        pick = rng.randrange(len(per_call))
        events.append(per_call[pick].pop(0))
        if not per_call[pick]:
            per_call.pop(pick)
    return events


def test_each_call_and_agent_in_order_with_several_requests_in_flight(tenant, receiver, deliverers):
    """Random answer times (0-50 ms), 40 calls of 6 events over 8 agents recorded while the deliverer runs:
    every event arrives exactly once, each call's and agent's in recording order, several at a time."""
    set_target(tenant.account_id, receiver.url)
    rng = random.Random(20240607)
    receiver.answer = lambda request: (200, rng.uniform(0, 0.05))
    events = call_storm(40, 8, rng)
    d = deliverers()
    ids = record_while_delivering(tenant.account_id, events, 12, 0.005)
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": len(ids)}, timeout=20)
    got = receiver.ids()
    assert sorted(got) == sorted(ids) and len(set(got)) == len(got)  # each exactly once
    assert_in_order_per_call_and_agent(receiver.requests)
    assert receiver.peak > 1 and d.stats["peak_in_flight"] > 1
    assert d.stats["peak_in_flight"] <= delivery.CONCURRENCY
    # account_seq: 1..n in recording order, whatever order the requests came in
    numbers = {r.id: r.json["account_seq"] for r in receiver.requests}
    assert [numbers[i] for i in ids] == list(range(1, len(ids) + 1))


def test_a_failing_call_holds_up_only_its_own_later_events(tenant, receiver, deliverers, clock):
    set_target(tenant.account_id, receiver.url)
    names = ("call:start", "call:ring", "call:answer")
    with db.atomic():
        recorded = [(call, emit(tenant.account_id, name, {"call_id": call}).id)
                    for name in names for call in ("A", "B", "C")]  # A1 B1 C1 A2 B2 C2 A3 B3 C3
        keyless = emit(tenant.account_id, "queue:join", {"queues": [1]}).id
    of = {call: [i for c, i in recorded if c == call] for call in "ABC"}
    failures = Counter()

    def answer(request):
        if request.id == of["A"][0] and failures["A"] < 2:
            failures["A"] += 1
            return 503
        return 200

    receiver.answer = answer
    d = deliverers(clock=clock)
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 7, "pending": 3})
    gevent.sleep(0.1)
    got = receiver.ids()
    assert [i for i in got if i in of["B"]] == of["B"] and [i for i in got if i in of["C"]] == of["C"]
    assert keyless in got
    assert [i for i in got if i in of["A"]] == of["A"][:1]  # A2 and A3 wait behind A1's retry
    head = OutboxEvent.get(OutboxEvent.id == of["A"][0])
    assert head.status == "pending" and head.attempts == 1 and head.last_error == "HTTP 503"
    while statuses(tenant.account_id) != {"delivered": 10}:
        clock.advance(700)
        gevent.sleep(0.05)
    assert [i for i in receiver.ids() if i in of["A"]] == [of["A"][0]] * 3 + of["A"][1:]
    assert d.stats["retries"] == 2


def test_account_seq_numbers_each_accounts_events_without_gaps(tenant, other_tenant, receiver, deliverers, clock):
    """Two accounts' events recorded interleaved: each account's are numbered 1, 2, 3 ... in recording order;
    a retry and a redelivery send the same number again (the same body)."""
    from engine.events import webhooks

    for account in (tenant, other_tenant):
        set_target(account.account_id, receiver.url)
    ids: dict[int, list[str]] = {tenant.account_id: [], other_tenant.account_id: []}
    for n in range(30):
        for account_id in ids:
            with db.atomic():
                ids[account_id].append(emit(account_id, "agent:status", {"user_id": n % 4, "activity_id": 1}).id)
    retried = ids[tenant.account_id][5]
    receiver.answer = lambda request: 500 if request.id == retried and receiver.ids().count(retried) == 1 else 200
    deliverers(clock=clock)
    wait_until(lambda: OutboxEvent.get(OutboxEvent.id == retried).attempts == 1)
    clock.advance(5)
    wait_until(lambda: OutboxEvent.select().where(OutboxEvent.status == "delivered").count() == 60)
    bodies = {r.id: r.json for r in receiver.requests}
    for account_id, recorded in ids.items():
        assert [bodies[i]["account_seq"] for i in recorded] == list(range(1, 31))
        assert [e.account_seq for e in OutboxEvent.of(account_id).order_by(OutboxEvent.seq)] == list(range(1, 31))
    for request in receiver.requests:
        assert request.headers["x-switchdesk-account-seq"] == str(request.json["account_seq"])
    tries = [r.body for r in receiver.requests if r.id == retried]
    assert len(tries) == 2 and tries[0] == tries[1]
    webhooks.redeliver(tenant.account_id, ids[tenant.account_id][0])
    wait_until(lambda: receiver.ids().count(ids[tenant.account_id][0]) == 2)
    again = [r for r in receiver.requests if r.id == ids[tenant.account_id][0]]
    assert again[1].json["account_seq"] == 1 and again[0].body == again[1].body


def test_a_receiver_that_is_down_gets_at_most_concurrency_probes(tenant, deliverers, clock):
    """Connection refused for every call: after `concurrency` failures in a row the account sends only the
    retries of what it tried (slots freed before that took a few more), not every call once; nothing is lost."""
    port = free_port()
    set_target(tenant.account_id, f"http://127.0.0.1:{port}/hooks")
    ids = record_events(tenant.account_id, 40, agents=40)
    d = deliverers(clock=clock, concurrency=4)
    wait_until(lambda: d.stats["retries"] >= 4)
    gevent.sleep(0.2)
    tried = OutboxEvent.select().where(OutboxEvent.attempts > 0).count()
    assert 4 <= tried <= 2 * 4 - 1
    clock.advance(5)  # their retries are due: they probe, fail again, and still nothing else is tried
    wait_until(lambda: d.stats["retries"] >= 2 * tried)
    gevent.sleep(0.2)
    assert OutboxEvent.select().where(OutboxEvent.attempts > 0).count() == tried
    receiver = Receiver(port).start()
    try:
        clock.advance(5)
        wait_until(lambda: statuses(tenant.account_id) == {"delivered": 40})
        assert sorted(receiver.ids()) == sorted(ids)
    finally:
        receiver.stop()


def test_serve_takes_the_webhook_concurrency(monkeypatch):
    from engine.cli import build_parser

    assert build_parser().parse_args(["serve"]).webhook_concurrency == 8
    assert build_parser().parse_args(["serve", "--webhook-concurrency", "32"]).webhook_concurrency == 32
    monkeypatch.setenv("SWITCHDESK_WEBHOOK_CONCURRENCY", "16")
    assert build_parser().parse_args(["serve"]).webhook_concurrency == 16
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--webhook-concurrency", "0"])
    with pytest.raises(ValueError):
        Deliverer(concurrency=0)
    assert Deliverer(concurrency=64).sender.connections == 64


def test_receiver_down_then_up_loses_nothing(tenant, other_tenant, deliverers, clock):
    port = free_port()
    receiver = Receiver(port)
    for account in (tenant, other_tenant):
        set_target(account.account_id, receiver.url.replace(":0/", f":{port}/"))
    ids = {a.account_id: record_events(a.account_id, 40) for a in (tenant, other_tenant)}
    deliverers(clock=clock)
    wait_until(lambda: OutboxEvent.select().where(OutboxEvent.attempts > 0).count() == 2)
    head = OutboxEvent.get(OutboxEvent.id == ids[tenant.account_id][0])
    assert "ConnectionRefusedError" in head.last_error and head.status == "pending"
    receiver = Receiver(port).start()
    try:
        clock.advance(5)
        wait_until(lambda: OutboxEvent.select().where(OutboxEvent.status == "delivered").count() == 80)
        got = receiver.ids()
        assert sorted(got) == sorted(ids[tenant.account_id] + ids[other_tenant.account_id])  # each once
        for account_ids in ids.values():
            assert [i for i in got if i in set(account_ids)] == account_ids
    finally:
        receiver.stop()


def test_graceful_restart_mid_way_sends_each_event_once(tenant, receiver, deliverers):
    set_target(tenant.account_id, receiver.url)
    ids = record_events(tenant.account_id, 120, agents=6)
    receiver.answer = lambda request: (200, 0.002)
    first = deliverers()
    wait_until(lambda: len(receiver.requests) >= 30)
    first.stop()
    sent_before = len(receiver.requests)
    assert sent_before < 120
    assert statuses(tenant.account_id)["delivered"] == sent_before  # everything sent was acknowledged
    deliverers()
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 120})
    assert sorted(receiver.ids()) == sorted(ids) and len(set(receiver.ids())) == 120
    assert_in_order_per_call_and_agent(receiver.requests)


def test_crash_before_acknowledging_resends_with_the_same_ids(tenant, receiver, deliverers, clock):
    set_target(tenant.account_id, receiver.url)
    ids = record_events(tenant.account_id, 120, agents=6)
    receiver.answer = lambda request: (200, 0.002)
    crashed = deliverers(clock=clock)
    crashed._flush_acks = lambda: None  # the process dies before it records what was sent
    wait_until(lambda: len(receiver.requests) >= 30)
    gevent.killall([crashed._scheduler, crashed._acker, *crashed.pool,
                    *(g for lane in crashed._lanes.values() for g in lane.sends)])
    crashed._acker = None
    gevent.sleep(0.05)  # a request written just before the kill still reaches the receiver
    sent_by_crashed = set(receiver.ids())
    assert statuses(tenant.account_id) == {"pending": 120}
    survivor = deliverers(clock=clock)
    gevent.sleep(0.2)
    assert len(receiver.requests) == len(sent_by_crashed)  # the crashed process's lease still holds
    assert survivor.stats["lease_busy"] > 0
    clock.advance(delivery.LEASE_SECONDS + 1)
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 120})
    got = receiver.ids()
    assert sorted(first_receipts(got)) == sorted(ids)
    assert_in_order_per_call_and_agent(receiver.requests)
    counts = Counter(got)
    assert {i for i, n in counts.items() if n > 1} <= sent_by_crashed and max(counts.values()) == 2


def test_two_deliverers_on_one_database_do_not_double_deliver(tenant, other_tenant, receiver, deliverers):
    accounts = [tenant, other_tenant]
    for account in accounts:
        set_target(account.account_id, receiver.url)
    receiver.answer = lambda request: (200, 0.001)
    deliverers(batch=10)
    deliverers(batch=10)
    ids = {}
    for _ in range(4):  # recorded while both run
        for account in accounts:
            ids.setdefault(account.account_id, []).extend(record_events(account.account_id, 25, agents=5))
        gevent.sleep(0.02)
    wait_until(lambda: OutboxEvent.select().where(OutboxEvent.status == "delivered").count() == 200)
    got = receiver.ids()
    assert len(got) == 200 and len(set(got)) == 200
    assert_in_order_per_call_and_agent(receiver.requests)
    for account_id in ids:
        numbers = sorted(r.json["account_seq"] for r in receiver.requests if r.json["account_id"] == account_id)
        assert numbers == list(range(1, 101))  # one counter per account across the two deliverers


DELIVERER_PROCESS = r"""
import signal, sys
from gevent import monkey; monkey.patch_all()
sys.path.insert(0, sys.argv[1])
import gevent, gevent.event
from engine.store import db
from engine.events.delivery import Deliverer
from tests.querycount import count_queries
db.bind(sys.argv[2])
deliverer = Deliverer(allow_private=True, poll_interval=0.01, batch=5).start()
stop = gevent.event.Event()
gevent.signal_handler(signal.SIGTERM, stop.set)
print("ready", flush=True)
stop.wait()
deliverer.stop()
"""


def test_two_processes_on_one_database_do_not_double_deliver(database, tenant, other_tenant, receiver):
    import subprocess
    import sys
    from pathlib import Path

    accounts = [tenant, other_tenant]
    for account in accounts:
        set_target(account.account_id, receiver.url)
    ids = {a.account_id: record_events(a.account_id, 60, agents=5) for a in accounts}
    url = os.environ.get("SWITCHDESK_TEST_DB") or f"sqlite:///{database.database}"
    root = str(Path(__file__).resolve().parents[2])
    procs = [subprocess.Popen([sys.executable, "-c", DELIVERER_PROCESS, root, url], stdout=subprocess.PIPE)
             for _ in range(2)]
    try:
        wait_until(lambda: len(receiver.requests) >= 120, timeout=30)
        wait_until(lambda: OutboxEvent.select().where(OutboxEvent.status == "delivered").count() == 120, timeout=10)
        gevent.sleep(0.2)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    got = receiver.ids()
    assert len(got) == 120 and len(set(got)) == 120
    assert sorted(got) == sorted(ids[tenant.account_id] + ids[other_tenant.account_id])
    assert_in_order_per_call_and_agent(receiver.requests)


def test_account_filter_delivers_only_owned_accounts(tenant, other_tenant, receiver, deliverers):
    for account in (tenant, other_tenant):
        set_target(account.account_id, receiver.url)
    mine = record_events(tenant.account_id, 3)
    record_events(other_tenant.account_id, 3)
    deliverers(account_ids=[tenant.account_id])
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 3})
    record_events(other_tenant.account_id, 1)  # the in-process wake-up respects the filter too
    gevent.sleep(0.2)
    assert receiver.ids() == mine
    assert statuses(other_tenant.account_id) == {"pending": 4}


def test_events_without_a_push_url_are_skipped_not_sent_later(tenant, receiver, deliverers):
    set_target(tenant.account_id, None)
    old = record_events(tenant.account_id, 2)
    deliverers()
    wait_until(lambda: statuses(tenant.account_id) == {"skipped": 2})
    assert OutboxEvent.get(OutboxEvent.id == old[0]).last_error == "no Event Push URL"
    set_target(tenant.account_id, receiver.url)
    new = record_events(tenant.account_id, 1)
    wait_until(lambda: statuses(tenant.account_id) == {"skipped": 2, "delivered": 1})
    assert receiver.ids() == new


def test_an_undecryptable_secret_is_never_sent_unsigned(tenant, receiver, deliverers, monkeypatch):
    set_target(tenant.account_id, receiver.url)
    (event_id,) = record_events(tenant.account_id, 1)
    monkeypatch.setenv(security.SECRET_KEY_ENV, "another-key")
    deliverers()
    wait_until(lambda: OutboxEvent.get(OutboxEvent.id == event_id).attempts == 1)
    assert receiver.requests == []
    assert "cannot decrypt the webhook secret" in OutboxEvent.get(OutboxEvent.id == event_id).last_error


def test_prune_keeps_pending_and_recent_events(tenant, other_tenant):
    day = 86400
    now = int(time.time())
    rows = {}
    with db.atomic():
        for status in ("pending", "delivered", "skipped", "failed"):
            for age in (1, 8, 31):
                event = emit(tenant.account_id, "agent:checkout", {"user_id": 1}, ts=now - age * day)
                OutboxEvent.update(status=status).where(OutboxEvent.seq == event.seq).execute()
                rows[(status, age)] = event.id
        foreign = emit(other_tenant.account_id, "agent:checkout", {"user_id": 1}, ts=now - 40 * day)
    OutboxEvent.update(status="delivered").where(OutboxEvent.id == foreign.id).execute()
    deliverer = Deliverer(account_ids=[tenant.account_id])
    assert deliverer.prune(chunk=2) == 5
    left = {key for key, event_id in rows.items() if OutboxEvent.get_or_none(OutboxEvent.id == event_id)}
    assert left == {("pending", 1), ("pending", 8), ("pending", 31), ("delivered", 1), ("skipped", 1),
                    ("failed", 1), ("failed", 8)}
    assert OutboxEvent.get_or_none(OutboxEvent.id == foreign.id) is not None  # another box's account


# --- the API ----------------------------------------------------------------------------------


def test_list_events_with_filters_and_paging(api, other_api, tenant, other_tenant):
    with db.atomic():
        a = emit(tenant.account_id, "agent:checkin", {"user_id": 1, "device_id": 2, "device_name": "d"}, ts=1000)
        b = emit(tenant.account_id, "agent:checkout", {"user_id": 1}, ts=2000)
        c = emit(tenant.account_id, "agent:checkout", {"user_id": 2}, ts=3000)
        emit(other_tenant.account_id, "agent:checkout", {"user_id": 9}, ts=2500)
    OutboxEvent.update(status="failed", attempts=3, last_error="HTTP 500").where(OutboxEvent.id == b.id).execute()

    def ids(**query):
        r = api.get("/api/event", query_string=query)
        assert r.status_code == 200, r.get_json()
        return [e["id"] for e in r.get_json()["data"]]

    assert ids() == [c.id, b.id, a.id]  # newest first
    assert ids(order="asc") == [a.id, b.id, c.id]
    assert ids(event="agent:checkout") == [c.id, b.id]
    assert ids(status="failed") == [b.id]
    assert ids(status="pending") == [c.id, a.id]
    assert ids(since=1500, until=2999) == [b.id]
    now = int(time.time())  # epoch seconds today are far beyond the ten-year cap of a duration
    with db.atomic():
        late = emit(tenant.account_id, "agent:checkout", {"user_id": 3}, ts=now)
    assert ids(since=now - 60) == [late.id] and ids(until=now - 60, since=2500) == [c.id]
    assert api.get("/api/event", query_string={"since": 10**12 * 300}).status_code == 400
    OutboxEvent.delete().where(OutboxEvent.id == late.id).execute()
    page = api.get("/api/event", query_string={"limit": 2}).get_json()["data"]
    assert [e["id"] for e in page] == [c.id, b.id]
    assert ids(limit=2, before_seq=page[-1]["seq"]) == [a.id]
    assert ids(order="asc", after_seq=a.seq) == [b.id, c.id]
    failed = api.get(f"/api/event/{b.id}").get_json()["data"]
    assert failed == {"id": b.id, "seq": b.seq, "account_seq": None, "event": "agent:checkout", "ts": 2000,
                      "account_id": tenant.account_id, "data": {"user_id": 1}, "status": "failed", "attempts": 3,
                      "next_attempt": None, "last_error": "HTTP 500", "delivered_at": None}
    assert [e["data"]["user_id"] for e in other_api.get("/api/event").get_json()["data"]] == [9]
    for bad in ({"status": "lost"}, {"event": "call:dance"}, {"limit": 0}, {"order": "sideways"}):
        r = api.get("/api/event", query_string=bad)
        assert r.status_code == 400 and r.get_json()["msg"].startswith(next(iter(bad)))


def test_get_and_redeliver_are_confined_to_the_account(api, other_api, tenant):
    with db.atomic():
        event = emit(tenant.account_id, "agent:checkout", {"user_id": 1})
    assert other_api.get(f"/api/event/{event.id}").status_code == 404
    assert other_api.post(f"/api/event/{event.id}/redeliver").status_code == 404
    assert api.get("/api/event/not-an-id").status_code == 404
    assert api.get(f"/api/event/{event.id}").get_json()["data"]["status"] == "pending"


def test_redeliver_sends_the_same_event_again(api, tenant, receiver, deliverers):
    set_target(tenant.account_id, receiver.url)
    (event_id,) = record_events(tenant.account_id, 1)
    deliverers(poll_interval=30)
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 1})
    r = api.post(f"/api/event/{event_id}/redeliver")
    assert r.status_code == 200
    data = r.get_json()["data"]
    assert data["status"] == "pending" and data["attempts"] == 0 and data["delivered_at"] is None
    wait_until(lambda: len(receiver.requests) == 2, timeout=2)  # woken at once, not at the next poll
    assert receiver.ids() == [event_id, event_id]
    assert receiver.requests[0].body == receiver.requests[1].body
    wait_until(lambda: statuses(tenant.account_id) == {"delivered": 1})


def test_events_permission_required(client, tenant):
    from engine.store.models import User

    User.update(permissions={"events": False}, is_admin=False).where(User.id == tenant.admin_id).execute()
    r = client.get("/api/event", headers=tenant.auth())
    assert r.status_code == 403
