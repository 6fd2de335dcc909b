"""Statistics at scale: 500 checked-in agents, 50 queues, 20 queue calls a second into the emulator.

In one process (gevent), against tests/fakeswitch (the real ESL wire protocol, the port of mod_callcenter
behind it) and a real `switchdesk` WSGI server on loopback:

* ``latency_ms``: event-to-stream latency. For every call, from the moment the emulator sends its
  member-queue-start to the moment GET /api/stats/stream (an SSE client in this process) delivers a
  `queue` event whose `today.offered` includes that call: p50 / p99 / max (target p99 < 500 ms);
* ``cpu_s_on`` / ``cpu_s_off`` and ``stats_cpu_share``: CPU of the whole process (engine, emulator,
  driver, and with statistics also the API's stream) over the same run with the statistics on (the
  plugin, the agent:status listener, one stream open) and off (neither): share = (on - off) / on;
* ``report``: the cost of a 1-year report over 50 queues on SQLite — a history with every 15-minute
  row of the year filled (50 x 35,040 = 1.75 M rows) and its day rows (rebuilt from them, as a change
  of the account's time zone does: ``rebuild_days_s``) — grouped by day, week and month (target < 1 s),
  and by interval over 31 days (148,800 rows).

Each call: the caller joins a queue, one dispatch pass offers it to an agent, the agent answers 0.3 s
later, the call ends ``--hold`` seconds after; every fifth caller hangs up before any offer (an abandon).
Prints one JSON line. Run: ``.venv/bin/python bench/stats.py [--seconds 60] [--rate 20]``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AGENTS, QUEUES, TIERS_PER_AGENT = 500, 50, 2
DOMAIN = "bench.test"


def percentiles(values: list[float]) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(ordered[len(ordered) // 2], 1),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1), "max": round(ordered[-1], 1)}


def setup(path: str) -> tuple[int, str, list[int]]:
    """One account, 50 queues, 500 agents with devices, checked in, in 2 queues each; returns
    (account id, an API key of its admin, queue ids)."""
    from engine.directory import accounts
    from engine.store import schema
    from engine.store.db import bind, db
    from engine.store.models import AgentState, Device, Queue, Tier, User, now

    database = bind(f"sqlite:///{path}")
    with database.connection_context():
        schema.init_schema(database)
        new = accounts.create_account("Bench", DOMAIN, "admin")
        account_id = new.account.id
        with db.atomic():
            queue_ids = [Queue.create(account=account_id, name=f"Q{i}", sla_answer_time=20).id for i in range(QUEUES)]
            User.insert_many([{"account": account_id, "name": f"agent {i}", "username": f"a{i}",
                               "username_key": f"a{i}", "email": f"a{i}@{DOMAIN}", "email_key": f"a{i}@{DOMAIN}",
                               "password_hash": "x", "is_agent": True, "wrap_up_time": 0}
                              for i in range(AGENTS)]).execute()
            users = [u.id for u in User.select(User.id).where((User.account == account_id) & User.is_agent)
                     .order_by(User.id)]
            Device.insert_many([{"account": account_id, "name": f"d{n}", "sip_username": str(10000 + n),
                                 "sip_a1_hash": "0" * 32, "user": uid} for n, uid in enumerate(users)]).execute()
            devices = {d.user_id: d.id for d in Device.select(Device.id, Device.user)}
            AgentState.insert_many([{"user": uid, "account": account_id, "device": devices[uid],
                                     "checked_in_at": now()} for uid in users]).execute()
            Tier.insert_many([{"account": account_id, "queue": queue_ids[(n + k * 7) % QUEUES], "user": uid,
                               "mode": 3, "joined": True} for n, uid in enumerate(users)
                              for k in range(TIERS_PER_AGENT)]).execute()
    return account_id, new.api_key, queue_ids


class StreamReader:
    """An SSE client of GET /api/stats/stream?agents=0: per queue, when each offered count was first seen."""

    def __init__(self, port: int, key: str):
        self.port, self.key = port, key
        self.seen: dict[int, list[tuple[int, float]]] = {}
        self.ready = gevent.event.Event()
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("GET", "/api/stats/stream?agents=0", headers={"Authorization": f"Bearer {self.key}"})
        response = conn.getresponse()
        assert response.status == 200, response.status
        event = None
        while True:
            line = response.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                at = time.perf_counter()
                data = json.loads(line[6:])
                if event == "snapshot":
                    self.ready.set()
                elif event == "queue":
                    self.seen.setdefault(data["id"], []).append((data["today"]["offered"], at))

    def first_seen(self, queue_id: int, offered: int) -> float | None:
        for count, at in self.seen.get(queue_id, []):
            if count >= offered:
                return at
        return None

    def close(self) -> None:
        self.greenlet.kill()


def run_calls(stats_on: bool, seconds: float, rate: float, hold: float) -> dict:
    """One run on a fresh database, emulator and engine; returns its CPU and (with statistics) latencies."""
    import engine.engine as engine_module
    from api import create_app
    from engine.callcenter import fsconfig
    from engine.events import outbox
    from engine.server import make_server
    from engine.stats import agents as stats_agents
    from engine.store.db import db
    from engine.store.models import Queue
    from tests.fakeswitch import FakeSwitch
    from tests.fakeswitch.callcenter import CallCenter

    tmp = tempfile.mkdtemp()
    account_id, key, queue_ids = setup(os.path.join(tmp, "bench.db"))

    def provider(name: str):
        parsed = fsconfig.parse_name(name)
        if parsed is None:
            return None
        with db.connection_context():
            queue = Queue.get_or_none(Queue.id == parsed[0])
        return dict(fsconfig.queue_params(queue)) if queue else None

    plugins = engine_module.PLUGIN_MODULES
    if not stats_on:
        engine_module.PLUGIN_MODULES = tuple(p for p in plugins if p != "engine.stats.plugin")
        outbox._emit_listeners.remove(stats_agents.on_emit)
    fs = FakeSwitch().start()
    fs.callcenter = cc = CallCenter(provider)
    engine = engine_module.Engine(fs.host, fs.port, "ClueCon", resync_every=3600).start()
    server = make_server(create_app({"ENGINE": engine}), "127.0.0.1", 0)
    server.start()
    try:
        assert engine.wait_synced(120), "no sync"
        fs.wait_for_subscribers(1)
        reader = StreamReader(server.server_port, key) if stats_on else None
        if reader is not None:
            assert reader.ready.wait(30)
        names = {q: fsconfig.queue_name(q, DOMAIN) for q in queue_ids}
        joined: list[tuple[int, int, float]] = []  # (queue id, its offered count after this call, sent at)
        offered: dict[int, int] = dict.fromkeys(queue_ids, 0)
        calls = int(seconds * rate)

        def push() -> None:
            for ev in list(cc.last_events):
                fs._push_model_event(ev)

        def call(n: int) -> None:
            queue_id = queue_ids[n % QUEUES]
            member = cc.member_join(names[queue_id], f"caller-{n}")
            offered[queue_id] += 1
            joined.append((queue_id, offered[queue_id], time.perf_counter()))
            push()
            gevent.sleep(0.1)
            if n % 5 == 4:
                cc.member_abandon(member)
                push()
                return
            offers = cc.dispatch(names[queue_id], first_only=True)
            push()
            if not offers:
                gevent.sleep(hold)
                cc.member_abandon(member)
                push()
                return
            gevent.sleep(0.3)
            cc.agent_answered(member, offers[0].agent_name)
            push()
            gevent.sleep(hold)
            cc.bridge_end(member)
            push()

        cpu0, wall0 = time.process_time(), time.perf_counter()
        group = gevent.pool.Group()
        for n in range(calls):
            group.spawn(call, n)
            gevent.sleep(max(0.0, wall0 + (n + 1) / rate - time.perf_counter()))
        group.join()
        gevent.sleep(1.0)  # the last events reach the engine and the stream
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        out = {"calls": calls, "cpu_s": round(cpu, 2), "wall_s": round(wall, 1)}
        if reader is not None:
            latencies, missing = [], 0
            for queue_id, count, sent in joined:
                seen = reader.first_seen(queue_id, count)
                if seen is None:
                    missing += 1
                else:
                    latencies.append(max(0.0, seen - sent) * 1000)
            out.update(latency_ms=percentiles(latencies), not_streamed=missing)
            reader.close()
            with db.connection_context():
                from engine.stats import snapshot
                from engine.store.models import Account

                figures = snapshot.queues(Account.get_by_id(account_id))
            out["offered"] = sum(q["today"]["offered"] for q in figures)
            out["answered"] = sum(q["today"]["answered"] for q in figures)
            out["abandoned"] = sum(q["today"]["abandoned"] for q in figures)
        return out
    finally:
        server.stop(timeout=1)
        engine.stop()
        fs.stop()
        engine_module.PLUGIN_MODULES = plugins
        if stats_agents.on_emit not in outbox._emit_listeners:
            outbox.on_emit(stats_agents.on_emit)


def report_cost() -> dict:
    """A year of 15-minute rows for 50 queues on SQLite, and the reports over it."""
    from engine.stats import days, reports
    from engine.store import schema
    from engine.store.db import bind, db
    from engine.store.models import Account, Queue, QueueInterval

    tmp = tempfile.mkdtemp()
    database = bind(f"sqlite:///{os.path.join(tmp, 'history.db')}")
    out: dict = {}
    with database.connection_context():
        schema.init_schema(database)
        account = Account.create(name="History", domain="history.test", timezone="Europe/Paris")
        queue_ids = [Queue.create(account=account.id, name=f"Q{i}").id for i in range(QUEUES)]
        last = dt.date(2026, 11, 30)
        first = last - dt.timedelta(days=364)
        start = int(dt.datetime.combine(first, dt.time(), dt.UTC).timestamp()) - 86400
        end = int(dt.datetime.combine(last, dt.time(), dt.UTC).timestamp()) + 2 * 86400
        t = time.perf_counter()
        columns = ("account_id", "queue_id", "start", "offered", "answered", "answered_sla", "abandoned",
                   "short_abandoned", "timed_out", "lost", "wait_sum", "wait_max", "abandon_wait_sum", "talk_sum",
                   "talk_count", "wrapup_sum", "wrapup_count")
        sql = (f'INSERT INTO "{QueueInterval._meta.table_name}" ({", ".join(columns)}) '
               f'VALUES ({", ".join("?" * len(columns))})')
        rows = 0
        with db.atomic():
            batch = []
            for s in range(start, end, 900):
                for n, q in enumerate(queue_ids):
                    k = (s // 900 + n) % 7
                    batch.append((account.id, q, s, 5 + k, 4 + k % 3, 3, 1, k % 2, 0, 0, 60 + k, 30 + k, 20, 900,
                                  4, 120, 4))
                if len(batch) >= 20000:
                    db.obj.cursor().executemany(sql, batch)
                    rows += len(batch)
                    batch = []
            if batch:
                db.obj.cursor().executemany(sql, batch)
                rows += len(batch)
        out["history_rows"] = rows
        out["fill_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        out["day_rows"] = days.rebuild(account.id)  # what a change of the account's time zone costs
        out["rebuild_days_s"] = round(time.perf_counter() - t, 1)
        db.obj.execute_sql("ANALYZE")
        for group in ("day", "week", "month"):
            t = time.perf_counter()
            result = reports.queues(account, first, last, group)
            out[f"year_by_{group}_ms"] = round((time.perf_counter() - t) * 1000, 1)
            out[f"year_by_{group}_rows"] = len(result)
        t = time.perf_counter()
        result = reports.queues(account, last - dt.timedelta(days=30), last, "interval")
        out["month_by_interval_ms"] = round((time.perf_counter() - t) * 1000, 1)
        out["month_by_interval_rows"] = len(result)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--skip-report", action="store_true")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    on = run_calls(True, args.seconds, args.rate, args.hold)
    off = run_calls(False, args.seconds, args.rate, args.hold)
    result = {
        "bench": "stats", "agents": AGENTS, "queues": QUEUES, "rate": args.rate, "seconds": args.seconds,
        "latency_ms": on.pop("latency_ms"), "not_streamed": on.pop("not_streamed"),
        "cpu_s_on": on["cpu_s"], "cpu_s_off": off["cpu_s"],
        "stats_cpu_share": round((on["cpu_s"] - off["cpu_s"]) / on["cpu_s"], 3) if on["cpu_s"] else None,
        "run_on": on, "run_off": off,
        "python": platform.python_version(), "cpus": os.cpu_count(), "load": os.getloadavg()[0],
    }
    if not args.skip_report:
        result["report"] = report_cost()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
