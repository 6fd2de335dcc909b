"""Webhook delivery throughput: emit() -> outbox -> Deliverer -> a local HTTP receiver.

Measures, in one run (one gevent process, monkey-patched like `switchdesk serve`,
SQLite by default; BENCH_DB=postgresql://... for PostgreSQL), against a
receiver in a subprocess (a gevent WSGI server that answers 200 and counts):

* ``baseline_eps``: the same number of POSTs of the same bodies sent by a bare
  loop of the same HTTP client (geventhttpclient, keep-alive) with one request
  in flight per "account", no database: the ceiling for the outbox path;
* ``outbox_1_account_eps`` / ``outbox_N_accounts_eps``: events/s from the first
  emit() to the last request received, while events are being emitted (one
  transaction per 10 events) and delivered concurrently; one account keeps one
  request in flight (strict order), N accounts run in parallel;
* ``..._tail_ms`` / ``..._cpu_us``: from the last commit to the last request
  received (near zero when the source is the limit, not delivery), and this
  process's CPU time per event (emitting and delivering);
* ``emit_only_eps``: emit() alone, same transactions, nothing delivered: the
  source's own ceiling (on PostgreSQL it is the commit rate);
* ``emit_wake_p50_ms``: an idle deliverer, one event emitted: time until the
  receiver has it (the in-process wake-up after commit, not the 1 s poll;
  events WAKE_GAP apart or more, as closer ones are gathered into rounds);
* ``drain_eps``: BENCH_BACKLOG events (default 20,000) recorded while the
  receiver is down (connection refused, the heads retrying), then the
  receiver comes back: events/s until the backlog is empty.

All of the above use one call id for every event (one call's events go one at
a time, in order), so they measure the outbox path with one request in flight
per account, as before requests went several at a time.

* ``slow_<C>_in_flight_eps``: a receiver that answers every request after
  BENCH_SLOW_MS (default 100 ms), ONE account, a call storm of BENCH_SLOW_EVENTS
  events (default 6,000: 1,000 calls of 6 events, up to 200 calls at once over
  100 agents, interleaved as recorded) emitted while a deliverer with C requests
  in flight per account (BENCH_SLOW_CONCURRENCY, default ``8,64``) sends them:
  events/s from the first emit() to the last request received. Each call's and
  agent's events still go in order. Target: at least 500 events/s.
* ``slow_8_in_flight_batch_<N>_eps``: the same storm, same receiver, in the same
  run, with the default 8 requests in flight and the account's
  ``event_push_batch`` set to N (BENCH_SLOW_BATCH, default ``50,100``): each
  request carries up to N events (``..._events_per_request``: their mean).
  ``slow_..._tail_ms``: from the last commit to the last event received.
  ``slow_..._drain_eps``: the first BENCH_SLOW_DRAIN events of the storm
  (default 2,000) recorded while no deliverer runs, then one starts: events/s
  of delivery alone, whatever the pace of the source.

* ``post_cpu_us``: this process's CPU time per POST of one signed event through
  `Sender.post` (engine.events.transport), one request in flight; against
  ``post_cpu_us_geventhttpclient``, the same POST through geventhttpclient's
  ``HTTPClient.request`` (the transport before issue 19), and
  ``post_cpu_us_raw``, the same bytes written to a socket by hand and the
  answer read by ``recv`` (the floor: the system calls alone).

BENCH_CASES=slow runs only the slow-receiver case, BENCH_CASES=fast all but it.

Prints one JSON line. Target: at least 2,000 events/s through the outbox.
Run: ``.venv/bin/python bench/webhooks.py``.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gevent  # noqa: E402
from _http import free_port, wait_http  # noqa: E402
from geventhttpclient import HTTPClient  # noqa: E402

EVENTS = int(os.environ.get("BENCH_EVENTS", "20000"))
SLOW_EVENTS = int(os.environ.get("BENCH_SLOW_EVENTS", "6000"))
SLOW_MS = float(os.environ.get("BENCH_SLOW_MS", "100"))
SLOW_CONCURRENCY = [int(c) for c in os.environ.get("BENCH_SLOW_CONCURRENCY", "8,64").split(",")]
SLOW_DRAIN = int(os.environ.get("BENCH_SLOW_DRAIN", "2000"))
SLOW_BATCH = [int(n) for n in os.environ.get("BENCH_SLOW_BATCH", "50,100").split(",") if n]
CASES = os.environ.get("BENCH_CASES", "all")
ACCOUNTS = int(os.environ.get("BENCH_ACCOUNTS", "10"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "20000"))

# The receiver: answers 200 to POSTs and reports how many events it got on GET (a batch counts its events).
RECEIVER = r"""
import sys
from gevent import monkey; monkey.patch_all()
sys.path.insert(0, sys.argv[2])
import gevent
from gevent.pywsgi import WSGIServer
from engine.server import NoDelayHandler
count = [0]
delay = float(sys.argv[3])
def app(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        environ["wsgi.input"].read()
        if delay:
            gevent.sleep(delay)
        count[0] += int(environ.get("HTTP_X_SWITCHDESK_EVENT_COUNT", 1))
        body = b"ok"
    else:
        body = str(count[0]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None, handler_class=NoDelayHandler).serve_forever()
"""

DATA = {"id": "0b3c3f8e-2f7a-4a51-9d0e-1e4f1e0e7a10", "call_id": "0b3c3f8e-2f7a-4a51-9d0e-1e4f1e0e7a10",
        "ts": 1764400000, "type": "queue", "dst_num": "1000", "src_user_id": None, "dst_user_id": 12,
        "cid_num": "+14155550123", "cid_name": "Caller", "a2": "US", "queue_id": 3, "waitms": 5230,
        "durationms": 61000, "billms": 55000, "hangup_cause": "NORMAL_CLEARING"}


class Receiver:
    def __init__(self, port: int, delay: float = 0.0):
        self.port = port
        self.delay = delay
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(self.port), root, str(self.delay)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.port)

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def count(self) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/")
        n = int(conn.getresponse().read())
        conn.close()
        return n

    def wait_count(self, n: int, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while (got := self.count()) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"receiver got {got} of {n}")
            gevent.sleep(0.01)
        return time.perf_counter()


def baseline(port: int, n: int, streams: int) -> float:
    """Bare keep-alive POSTs: `streams` greenlets, one request in flight each, no outbox."""
    body = json.dumps({"id": DATA["id"], "event": "call:end", "ts": 1764400000, "account_id": 1, "data": DATA},
                      separators=(",", ":")).encode()
    client = HTTPClient("127.0.0.1", port=port, concurrency=streams)
    per = n // streams

    def stream() -> None:
        for _ in range(per):
            response = client.request("POST", "/hooks", body=body, headers={"Content-Type": "application/json"})
            response.read()
            response.release()

    start = time.perf_counter()
    gevent.joinall([gevent.spawn(stream) for _ in range(streams)], raise_error=True)
    elapsed = time.perf_counter() - start
    client.close()
    return per * streams / elapsed


def post_costs(port: int, n: int) -> dict[str, float]:
    """CPU µs per POST of one signed event: Sender.post, geventhttpclient's HTTPClient, a bare socket."""
    import socket

    from engine.events.sender import Sender, signed_headers

    body = json.dumps({"id": DATA["id"], "event": "call:end", "ts": 1764400000, "account_id": 1,
                       "account_seq": 1, "data": DATA}, separators=(",", ":")).encode()
    url = f"http://127.0.0.1:{port}/hooks"
    sender = Sender(allow_private=True)
    client = HTTPClient("127.0.0.1", port=port, concurrency=1, headers={"User-Agent": "switchdesk-webhooks/1"})
    raw = socket.create_connection(("127.0.0.1", port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def with_sender() -> None:
        assert sender.post(url, body, signed_headers(DATA["id"], body, "bench-secret", 1)) == 200

    def with_geventhttpclient() -> None:
        response = client.request("POST", "/hooks", body=body, headers=signed_headers(DATA["id"], body,
                                                                                     "bench-secret", 1))
        response.read()
        response.release()
        assert response.status_code == 200

    def with_socket() -> None:
        headers = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(DATA["id"], body, "bench-secret", 1).items())
        raw.sendall(f"POST /hooks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n"
                    f"{headers}\r\n".encode() + body)
        answer = b""
        while not answer.endswith(b"ok"):  # the receiver answers a 2-byte body
            answer += raw.recv(65536)

    costs: dict[str, list[float]] = {"post_cpu_us": [], "post_cpu_us_geventhttpclient": [], "post_cpu_us_raw": []}
    ways = (("post_cpu_us", with_sender), ("post_cpu_us_geventhttpclient", with_geventhttpclient),
            ("post_cpu_us_raw", with_socket))
    for _ in range(3):  # interleaved rounds: the machine's noise falls on all three alike
        for name, way in ways:
            for _ in range(200):
                way()
            cpu = time.process_time()
            for _ in range(n):
                way()
            costs[name].append((time.process_time() - cpu) / n * 1e6)
    sender.close()
    client.close()
    raw.close()
    return {name: round(sorted(values)[1], 1) for name, values in costs.items()}  # the median round


def emit_events(account_ids: list[int], n: int, per_tx: int = 10) -> float:
    from engine.events.outbox import emit
    from engine.store.db import db

    done = 0
    while done < n:
        with db.connection_context(), db.atomic():
            for i in range(per_tx):
                emit(account_ids[(done + i) % len(account_ids)], "call:end", DATA)
        done += per_tx
        gevent.sleep(0)
    return time.perf_counter()


def call_storm(n: int, calls_at_once: int = 200, agents: int = 100, seed: int = 7) -> list[tuple[str, dict]]:
    """About `n` events of queue calls as a busy account records them: 6 per call (start, ring, answer, the
    agent's status, end, the agent's status), up to `calls_at_once` calls interleaved, `agents` agents."""
    import random

    rng = random.Random(seed)
    calls = [[] for _ in range(max(1, n // 6))]
    for number, events in enumerate(calls):
        call_id, agent = f"0b3c3f8e-2f7a-4a51-9d0e-{number:012d}", rng.randrange(agents)
        data = dict(DATA, id=call_id, call_id=call_id, dst_user_id=agent)
        events += [("call:start", data), ("call:ring", data), ("call:answer", data),
                   ("agent:status", {"user_id": agent, "activity_id": 2, "pause_id": 0, "in_calls": 1}),
                   ("call:end", data),
                   ("agent:status", {"user_id": agent, "activity_id": 3, "pause_id": 0, "in_calls": 1})]
    recorded, active, waiting = [], [], list(reversed(calls))
    while active or waiting:
        while waiting and len(active) < calls_at_once:
            active.append(waiting.pop())
        pick = rng.randrange(len(active))
        recorded.append(active[pick].pop(0))
        if not active[pick]:
            active.pop(pick)
    return recorded


def slow_receiver(out: dict, database) -> None:
    """ONE account, a receiver that answers after SLOW_MS: events/s for each number of requests in flight."""
    from engine.directory import accounts, security
    from engine.events.delivery import Deliverer
    from engine.events.outbox import emit
    from engine.store.db import db
    from engine.store.models import Account

    port = free_port()
    receiver = Receiver(port, delay=SLOW_MS / 1000)
    receiver.start()
    storm = call_storm(SLOW_EVENTS)
    out["slow_receiver_ms"] = SLOW_MS
    out["slow_events"] = len(storm)
    try:
        cases = [(concurrency, 1) for concurrency in SLOW_CONCURRENCY] + [(8, n) for n in SLOW_BATCH]
        for concurrency, per_request in cases:
            name = f"{concurrency}_in_flight" + (f"_batch_{per_request}" if per_request > 1 else "")
            with database.connection_context():
                account_id = accounts.create_account(f"Slow {name}", f"slow{name.replace('_', '-')}.bench.test",
                                                     f"slowadmin{name}").account.id
                Account.update(event_push_url=f"http://127.0.0.1:{port}/hooks/pbx",
                               webhook_secret_enc=security.encrypt_secret("bench-webhook-secret-0123456789"),
                               event_push_batch=per_request).where(Account.id == account_id).execute()
            deliverer = Deliverer(allow_private=True, account_ids=[account_id], concurrency=concurrency).start()

            def emitter(account_id: int = account_id, events: list = storm) -> float:
                for start in range(0, len(events), 10):
                    with db.connection_context(), db.atomic():
                        for event, data in events[start:start + 10]:
                            emit(account_id, event, data)
                    gevent.sleep(0)
                return time.perf_counter()

            try:
                before = receiver.count()
                start = time.perf_counter()
                job = gevent.spawn(emitter)
                end = receiver.wait_count(before + len(storm))
                job.join()
                out[f"slow_{name}_eps"] = round(len(storm) / (end - start))
                out[f"slow_{name}_peak"] = deliverer.stats["peak_in_flight"]
                # the last event's arrival after the last commit: small when the source, not delivery, is the limit
                out[f"slow_{name}_tail_ms"] = round((end - job.value) * 1000)
                if per_request > 1:
                    out[f"slow_{name}_events_per_request"] = round(
                        deliverer.stats["events_sent"] / max(1, deliverer.stats["attempts"]), 1)
            finally:
                deliverer.stop()
            # the same account's backlog: the storm's first SLOW_DRAIN events recorded while no deliverer runs,
            # then one starts: what delivery alone gets through, whatever the source's pace
            backlog = storm[:SLOW_DRAIN]
            emitter(events=backlog)
            before = receiver.count()
            start = time.perf_counter()
            deliverer = Deliverer(allow_private=True, account_ids=[account_id], concurrency=concurrency).start()
            try:
                end = receiver.wait_count(before + len(backlog))
                out[f"slow_{name}_drain_eps"] = round(len(backlog) / (end - start))
            finally:
                deliverer.stop()
    finally:
        receiver.stop()
    out["slow_drain_events"] = min(SLOW_DRAIN, len(storm))
    out["slow_target_eps"] = 500


def main() -> None:
    from engine.directory import accounts, security
    from engine.events.delivery import WAKE_GAP, Deliverer
    from engine.store import db, schema
    from engine.store.models import Account, OutboxEvent

    os.environ.setdefault(security.SECRET_KEY_ENV, "bench-secret-key")
    tmp = tempfile.mkdtemp(prefix="bench-webhooks-")
    url = os.environ.get("BENCH_DB") or f"sqlite:///{tmp}/bench.db"
    database = db.bind(url)
    with database.connection_context():
        if url.startswith("postgres"):
            from engine.store.models import ALL_MODELS

            database.drop_tables(ALL_MODELS, cascade=True)
            database.execute_sql("DROP TABLE IF EXISTS schema_migration")
        schema.init_schema(database)
        ids = [accounts.create_account(f"Bench {i}", f"b{i}.bench.test", f"admin{i}").account.id
               for i in range(ACCOUNTS)]
    port = free_port()
    hook = f"http://127.0.0.1:{port}/hooks/pbx"
    secret = security.encrypt_secret("bench-webhook-secret-0123456789")
    with database.connection_context():
        Account.update(event_push_url=hook, webhook_secret_enc=secret).execute()

    out: dict = {"bench": "webhooks", "python": platform.python_version(),
                 "db": url.split(":", 1)[0], "events": EVENTS, "accounts": ACCOUNTS}
    if CASES == "slow":
        slow_receiver(out, database)
        print(json.dumps(out))
        return
    receiver = Receiver(port)
    receiver.start()
    out["baseline_1_stream_eps"] = round(baseline(port, EVENTS // 2, 1))
    out[f"baseline_{ACCOUNTS}_streams_eps"] = round(baseline(port, EVENTS, ACCOUNTS))
    out.update(post_costs(port, 3000))

    # emit() alone (an account without a URL; the deliverer is not running yet): the ceiling of the source
    with database.connection_context():
        silent = accounts.create_account("Silent", "silent.bench.test", "silentadmin").account.id
    start = time.perf_counter()
    emit_events([silent], EVENTS // 4)
    out["emit_only_eps"] = round(EVENTS // 4 / (time.perf_counter() - start))

    clock_offset = [0.0]
    deliverer = Deliverer(allow_private=True, clock=lambda: time.time() + clock_offset[0]).start()
    try:
        # one event at a time into an idle deliverer: the wake-up latency
        lat = []
        for _ in range(50):
            before = receiver.count()
            start = time.perf_counter()
            emit_events(ids[:1], 1, per_tx=1)
            lat.append(receiver.wait_count(before + 1) - start)
            gevent.sleep(WAKE_GAP + 0.05)  # idle: a quiet spell (events closer together are gathered)
        lat.sort()
        out["emit_wake_p50_ms"] = round(lat[len(lat) // 2] * 1000, 2)

        for label, accts, n in (("outbox_1_account_eps", ids[:1], EVENTS // 2),
                                (f"outbox_{ACCOUNTS}_accounts_eps", ids, EVENTS)):
            before = receiver.count()
            start = time.perf_counter()
            cpu = time.process_time()
            emitter = gevent.spawn(emit_events, accts, n)
            end = receiver.wait_count(before + n)
            emitter.join()
            out[label] = round(n / (end - start))
            # the last event's delivery after the last commit: small when the source, not delivery, is the limit
            out[label.replace("_eps", "_tail_ms")] = round((end - emitter.value) * 1000, 1)
            out[label.replace("_eps", "_cpu_us")] = round((time.process_time() - cpu) / n * 1e6)  # per event

        # the backlog: recorded while the receiver is down, drained when it is back
        receiver.stop()
        emit_events(ids, BACKLOG, per_tx=100)
        gevent.sleep(1.5)  # the heads fail (connection refused) and wait for their retry
        with database.connection_context():
            out["backlog_pending"] = OutboxEvent.select().where(OutboxEvent.status == "pending").count()
        receiver.start()
        clock_offset[0] += 700  # past every retry delay, as if the outage had lasted that long
        start = time.perf_counter()
        end = receiver.wait_count(BACKLOG)
        out["drain_eps"] = round(BACKLOG / (end - start))
        out["deliverer_stats"] = dict(deliverer.stats)
    finally:
        deliverer.stop()
        receiver.stop()
    out["target_eps"] = 2000
    if CASES != "fast":
        slow_receiver(out, database)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
