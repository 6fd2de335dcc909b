"""Changes committed in one process reach the engines of the others (store.changes NOTIFY, store.pgnotify LISTEN).

The other process is a real one where it matters: a subprocess bound to the
same database calls changes.notify, or commits through the API. Runs on
PostgreSQL only (SWITCHDESK_TEST_DB, the PostgreSQL run of the suite); the
payload format and the SQLite no-op run everywhere.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest

from engine import server
from engine.directory import accounts
from engine.engine import Engine
from engine.store import changes, pgnotify
from engine.store.models import Queue, Tier, User
from tests.fakeswitch.callcenter import CallCenter
from tests.fakeswitch.server import FakeSwitch
from tests.support import listed, provider, wait_until
from tests.test_ops_scaleout import writes

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("SWITCHDESK_TEST_DB", "")
needs_pg = pytest.mark.skipif(not PG_URL.startswith("postgres"),
                              reason="needs SWITCHDESK_TEST_DB=postgresql://... (the PostgreSQL run of .ci/run)")

NOTIFIER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from engine.store import changes
from engine.store import db
db.bind(sys.argv[2])
for kind, account_id, ids in json.loads(sys.argv[3]):
    changes.notify(kind, account_id, ids)
"""


def notify_from_another_process(*items: tuple[str, int, list[int]]) -> None:
    """changes.notify in a process of its own: another origin, another connection, as on another box."""
    subprocess.run([sys.executable, "-c", NOTIFIER, str(ROOT), PG_URL, json.dumps(items)],
                   check=True, timeout=60, capture_output=True)


class Heard:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, list[int]]] = []

    def __call__(self, kind: str, account_id: int, ids: list[int]) -> None:
        self.calls.append((kind, account_id, ids))


@pytest.fixture
def heard():
    listener = Heard()
    changes.listen(listener)
    yield listener
    changes.unlisten(listener)


@pytest.fixture
def remote(database):
    resyncs: list[float] = []
    listener = pgnotify.RemoteChanges.for_database(database, on_reconnect=lambda: resyncs.append(time.time()),
                                                   backoff=(0.05, 0.2))
    listener.resyncs = resyncs
    listener.start()
    assert listener.wait_listening(5)
    yield listener
    listener.stop()


# -- the payload (any database) ------------------------------------------------------------------


def test_long_id_lists_are_split_under_the_limit_and_marked():
    ids = list(range(10**6, 10**6 + 5000))
    parts = list(changes.payloads("tier", 7, ids))
    assert len(parts) > 1
    assert all(len(p.encode()) <= changes.MAX_PAYLOAD for p in parts)
    parsed = [changes.parse_payload(p) for p in parts]
    assert [item[4] for item in parsed] == [True] * (len(parts) - 1) + [False]
    assert [i for item in parsed for i in item[3]] == ids
    assert {(item[0], item[1], item[2]) for item in parsed} == {(changes.ORIGIN, "tier", 7)}
    # exactly at the limit: nothing is cut early or late
    for limit in (120, 121, 150):
        parts = list(changes.payloads("queue", 1, list(range(200)), limit=limit))
        assert all(len(p) <= limit for p in parts)
        assert all(len(p) + len(",199") > limit for p in parts[:-1])
        assert [i for p in parts for i in changes.parse_payload(p)[3]] == list(range(200))
    assert [changes.parse_payload(p)[3] for p in changes.payloads("queue", 1, [5])] == [[5]]


@pytest.mark.parametrize("text", ["", "nope", "[]", '{"origin":"x"}', '{"origin":"x","kind":"q","account_id":"1",'
                                  '"ids":[1]}', '{"origin":"x","kind":"q","account_id":1,"ids":[true]}',
                                  '{"origin":"x","kind":"q","account_id":1,"ids":[1],"more":1}'])
def test_foreign_payloads_are_refused(text):
    assert changes.parse_payload(text) is None


def test_sqlite_has_no_listener(database):
    if PG_URL.startswith("postgres"):
        pytest.skip("the SQLite run")
    assert pgnotify.attach(object(), database) is None


# -- across processes (PostgreSQL) ---------------------------------------------------------------


@needs_pg
def test_another_process_notify_reaches_local_listeners(remote, heard):
    long_ids = list(range(1, 6001))
    notify_from_another_process(("queue", 5, [3, 1, 2]), ("tier", 5, long_ids), ("agent", 6, [9]))
    wait_until(lambda: len(heard.calls) >= 3, timeout=5)
    gevent.sleep(0.1)
    # the long list came in several notifications and is handed over whole, once
    assert heard.calls == [("queue", 5, [3, 1, 2]), ("tier", 5, long_ids), ("agent", 6, [9])]
    assert remote.heard > 3


@needs_pg
def test_own_notifications_are_not_heard_twice(remote, heard, database):
    changes.notify("queue", 1, [11])
    assert heard.calls == [("queue", 1, [11])]  # the local listeners, at once
    # a marker from "another process" sent after it on the same connection: once it is here, ours was skipped
    payload = next(changes.payloads("queue", 2, [22])).replace(changes.ORIGIN, "another-box")
    database.execute_sql("SELECT pg_notify(%s, %s)", (changes.CHANNEL, payload))
    wait_until(lambda: ("queue", 2, [22]) in heard.calls, timeout=5)
    assert heard.calls == [("queue", 1, [11]), ("queue", 2, [22])]


@needs_pg
def test_a_dropped_connection_reconnects_and_asks_for_a_resync(remote, heard, database):
    assert len(remote.resyncs) == 1  # the first LISTEN: what came before it was not heard
    first = remote.backend_pid
    database.execute_sql("SELECT pg_terminate_backend(%s)", (first,))
    wait_until(lambda: len(remote.resyncs) == 2 and remote.wait_listening(0), timeout=5)
    assert remote.backend_pid not in (None, first)
    assert remote.connects == 2 and remote.failures == 1
    notify_from_another_process(("queue", 3, [4]))
    wait_until(lambda: heard.calls == [("queue", 3, [4])], timeout=5)
    assert remote.status() == {"listening": True, "connects": 2, "failures": 1, "heard": remote.heard}


@needs_pg
def test_an_unreachable_server_is_retried_without_raising():
    resyncs: list[int] = []
    # a closed port on loopback: refused at once
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = pgnotify.RemoteChanges(f"postgresql://nobody@127.0.0.1:{port}/none", backoff=(0.02, 0.05),
                                      on_reconnect=lambda: resyncs.append(1)).start()
    try:
        wait_until(lambda: listener.failures >= 3, timeout=5)
        assert not listener.wait_listening(0) and resyncs == []
        assert not listener._greenlet.dead
    finally:
        listener.stop()


@needs_pg
def test_waiting_does_not_block_the_hub(database, heard):
    """No monkey-patching here: a blocking wait in libpq would stop every other greenlet."""
    ticks: list[float] = []

    def ticker():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    ticking = gevent.spawn(ticker)
    listener = pgnotify.RemoteChanges.for_database(database, heartbeat=0.1).start()  # heartbeats too
    try:
        assert listener.wait_listening(5)
        start = time.monotonic()
        gevent.sleep(0.5)
        during = [t for t in ticks if t >= start]
        assert len(during) >= 25, len(during)
        assert max(b - a for a, b in itertools.pairwise(during)) < 0.1
        assert listener.connects == 1 and listener.failures == 0  # five heartbeats answered
    finally:
        listener.stop()
        ticking.kill()


@needs_pg
def test_a_failing_notify_never_fails_the_caller(database, heard, monkeypatch, caplog):
    def broken(sql, params=None):
        raise RuntimeError("connection lost")

    monkeypatch.setattr(database, "execute_sql", broken)
    with caplog.at_level(logging.ERROR, logger="switchdesk.changes"):
        changes.notify("agent", 1, [2])
    assert heard.calls == [("agent", 1, [2])]
    assert "next full sync" in caplog.text


# -- two boxes: a change made through A's API reaches B's switch ---------------------------------

API_CALL = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from api import create_app
from engine.store import db
db.bind(sys.argv[2])
client = create_app({}).test_client()
reply = client.put(sys.argv[3], json=json.loads(sys.argv[4]), headers={"Authorization": "Bearer " + sys.argv[5]})
print(json.dumps({"status": reply.status_code, "at": time.time()}), flush=True)
"""


def make_box_account(domain: str):
    new = accounts.create_account(domain, domain, f"admin-{domain}")
    queue = Queue.create(account=new.account, name="Support")
    agent = User.create(account=new.account, name="Agent", username=f"agent@{domain}",
                        username_key=f"agent@{domain}", email=f"agent@{domain}", email_key=f"agent@{domain}",
                        password_hash="x", is_agent=True)
    Tier.create(account=new.account, queue=queue, user=agent, joined=True)
    return new, queue


@needs_pg
def test_a_change_through_box_a_reaches_box_b_switch_at_once(database):
    a, _queue_a = make_box_account("a.example")
    b, queue_b = make_box_account("b.example")
    switches, engines = [], []
    for account in (a.account, b.account):
        fs = FakeSwitch(password="ClueCon").start()
        fs.callcenter = CallCenter(provider)
        switches.append(fs)
        engines.append(Engine("127.0.0.1", fs.port, "ClueCon", resync_every=3600,
                              account_ids=server.resolve_domains([account.domain])))
    fs_a, fs_b = switches
    remote = pgnotify.attach(engines[1], database)  # as `serve` does for box B
    try:
        for engine in engines:
            engine.start()
        assert remote.wait_listening(5)
        for engine in engines:
            assert engine.commands.wait_connected(10) and engine.wait_synced(10)
        name = f"{queue_b.id}@b.example"
        assert listed(fs_b, "queue")[name]["max_wait_time"] == "0"
        before_a = len(fs_a.received)

        # box A's API, in a process of its own, edits a queue of B's account
        proc = subprocess.Popen([sys.executable, "-c", API_CALL, str(ROOT), PG_URL, f"/api/cc_queue/{queue_b.id}",
                                 json.dumps({"max_wait_time": 123}), b.api_key],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen_at = exited_at = None
        deadline = time.time() + 60
        while seen_at is None and time.time() < deadline and (exited_at is None or time.time() < exited_at + 2):
            if listed(fs_b, "queue")[name]["max_wait_time"] == "123":
                seen_at = time.time()
            elif exited_at is None and proc.poll() is not None:
                exited_at = time.time()
            gevent.sleep(0.005)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        reply = json.loads(out)
        assert reply["status"] == 200
        assert seen_at is not None, "the change never reached box B's switch"
        assert seen_at - reply["at"] < 1.0, seen_at - reply["at"]  # the periodic sync is an hour away
        assert not any("b.example" in line for line in writes(fs_a, before_a))
    finally:
        for engine in engines:
            engine.stop()
        for fs in switches:
            fs.stop()
    assert remote._greenlet is None  # stopped with its engine


@needs_pg
def test_serve_listens_and_its_engine_follows_another_process(database, tmp_path):
    """The real `switchdesk serve` (monkey-patched, its own process) as box B; this process is box A."""
    b, queue_b = make_box_account("b.example")
    fs = FakeSwitch(password="ClueCon").start()
    fs.callcenter = CallCenter(provider)
    name = f"{queue_b.id}@b.example"
    env = {key: value for key, value in os.environ.items() if key not in ("SWITCHDESK_DB", "SWITCHDESK_DOMAINS")}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--db", PG_URL,
                                 "--listen", "127.0.0.1:0", "--esl", f"127.0.0.1:{fs.port}",
                                 "--esl-password", "ClueCon", "--outbound-listen", "127.0.0.1:0",
                                 "--domains", "b.example"], env=env, cwd=ROOT, stdout=log_file,
                                stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            assert proc.poll() is None, log_path.read_text()
            return database.execute_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s"
                " AND state = 'idle' AND query = %s",
                (pgnotify.APPLICATION_NAME, f"LISTEN {changes.CHANNEL}")).fetchone()[0] == 1

        wait_until(listening, timeout=30)
        wait_until(lambda: name in listed(fs, "queue"), timeout=30)  # its first full sync
        gevent.sleep(0.3)  # and the one its LISTEN asked for
        assert listed(fs, "queue")[name]["max_wait_time"] == "0"

        Queue.update(max_wait_time=77).where(Queue.id == queue_b.id).execute()
        changes.notify("queue", b.account.id, [queue_b.id])
        sent = time.time()
        wait_until(lambda: listed(fs, "queue")[name]["max_wait_time"] == "77", timeout=1.0)
        assert time.time() - sent < 1.0
    finally:
        proc.kill()  # a graceful stop waits seconds on the ESL connections, and is not what this is about
        proc.wait(timeout=20)
        fs.stop()
    assert "listening for other boxes' changes" in log_path.read_text()
