"""mod_callcenter sync at scale: 5,000 agents and 20,000 tiers into the emulator.

Measures, in one run, against tests/fakeswitch (real ESL wire protocol, the
port of mod_callcenter behind it):

* ``full_sync_s``: a full sync into an empty mod_callcenter (read the three
  lists, build the desired state from the database, diff, send) by the
  Engine over its command connection — target under 10 s;
* ``baseline_send_s``: the same commands sent with a bare pipelined
  ``api_many`` on a fresh connection into another empty mod_callcenter: the
  cost of the wire and of the emulator alone, so ``full_sync_s -
  baseline_send_s`` is what switchdesk adds;
* ``noop_sync_s``: a full sync when nothing differs (three lists read and diffed);
* ``agent_sync_ms_p50/p99``: an agent-only sync after one agent's tier
  changed (re-read that agent, push the difference) — target under 50 ms;
* ``baseline_roundtrip_ms_p50``: one ``agent list <name>`` round trip.

A real FreeSWITCH is far slower to write than the emulator (DESIGN.md: 29-37 s
for the same 25,000 changes), so ``full_sync_s`` is our share, not the
switch's. Prints one JSON line. Run: ``.venv/bin/python bench/cc_sync.py``.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AGENTS = int(os.environ.get("BENCH_AGENTS", 5000))
TIERS_PER_AGENT = 4
QUEUES = 50


def setup_database(path: str, agents: int = AGENTS) -> None:
    """`agents` agents with 4 joined tiers each over 50 queues, one account (bench/cc_sync_real.py too)."""
    from engine.store import schema
    from engine.store.db import bind

    database = bind(f"sqlite:///{path}")
    with database.connection_context():
        schema.init_schema(database)
    with database.connection_context():
        _fill(agents)


def _fill(agents: int) -> None:
    from engine.store.db import db
    from engine.store.models import Account, Queue, Tier, User

    with db.atomic():
        account = Account.create(name="Bench", domain="bench.test")
        queue_ids = [Queue.create(account=account, name=f"Q{i}").id for i in range(QUEUES)]
        for start in range(0, agents, 2000):
            User.insert_many([
                {"account": account.id, "name": f"agent {i}", "username": f"a{i}", "username_key": f"a{i}",
                 "email": f"a{i}@bench.test", "email_key": f"a{i}@bench.test", "password_hash": "x",
                 "is_agent": True}
                for i in range(start, min(agents, start + 2000))
            ]).execute()
        user_ids = [u.id for u in User.select(User.id).order_by(User.id)]
        rows = [{"account": account.id, "queue": queue_ids[(n + k * 7) % QUEUES], "user": uid,
                 "level": 1 + k, "position": 1 + n % 100, "joined": True}
                for n, uid in enumerate(user_ids) for k in range(TIERS_PER_AGENT)]
        for i in range(0, len(rows), 2000):
            Tier.insert_many(rows[i:i + 2000]).execute()


def main() -> None:
    from gevent import monkey

    monkey.patch_all()
    from engine.callcenter import fsconfig
    from engine.engine import Engine
    from engine.esl.client import ESLClient
    from engine.store.db import db
    from engine.store.models import Queue, Tier, User
    from tests.fakeswitch import FakeSwitch
    from tests.fakeswitch.callcenter import CallCenter

    def provider(name: str):
        parsed = fsconfig.parse_name(name)
        if parsed is None:
            return None
        with db.connection_context():
            queue = Queue.get_or_none(Queue.id == parsed[0])
        return dict(fsconfig.queue_params(queue)) if queue else None

    tmp = tempfile.mkdtemp()
    setup_database(os.path.join(tmp, "bench.db"))
    fs = FakeSwitch().start()
    fs.callcenter = CallCenter(provider)
    import engine.engine as engine_module
    if os.environ.get("BENCH_NO_PLUGINS"):
        engine_module.PLUGIN_MODULES = ()
    engine = Engine(fs.host, fs.port, "ClueCon", resync_every=3600)
    engine.start()
    t0 = time.perf_counter()
    assert engine.wait_synced(600), "no full sync"
    full = engine.last_sync
    commands = [c.line[len("api "):] if c.line.startswith("api ") else c.line[len("bgapi "):]
                for c in fs.received if c.line.startswith(("api callcenter_config", "bgapi callcenter_config"))
                and " list" not in c.line]
    wall = time.perf_counter() - t0

    noop = engine.sync_now()

    with db.connection_context():
        users = [u.id for u in User.select(User.id).order_by(User.id).limit(200)]
    samples = []
    for n, uid in enumerate(users):
        with db.connection_context():
            Tier.update(level=10 + n % 5).where(Tier.user == uid).execute()
        t = time.perf_counter()
        result = engine.sync_agents_now({uid})
        samples.append((time.perf_counter() - t) * 1000)
        assert result.errors == [] and result.commands >= 1, result
    engine.stop()

    # baseline: the same commands, bare, into another empty mod_callcenter
    fs.callcenter = CallCenter(provider)
    client = ESLClient(fs.host, fs.port, "ClueCon", events=[])
    client.connect(5)
    t = time.perf_counter()
    replies = client.api_many(commands, timeout=600)
    baseline = time.perf_counter() - t
    assert all(isinstance(r, str) and r.startswith("+OK") for r in replies)
    rt = []
    name = fsconfig.agent_name(users[0], "bench.test")
    for _ in range(200):
        t = time.perf_counter()
        client.api(f"callcenter_config agent list {name}")
        rt.append((time.perf_counter() - t) * 1000)
    client.close()
    fs.stop()
    samples.sort()
    print(json.dumps({
        "bench": "cc_sync", "python": platform.python_version(), "agents": AGENTS,
        "tiers": AGENTS * TIERS_PER_AGENT, "queues": QUEUES,
        "full_sync_s": round(full.seconds, 3), "full_sync_commands": full.commands,
        "full_sync_errors": len(full.errors), "connect_to_synced_s": round(wall, 3),
        "baseline_send_s": round(baseline, 3), "noop_sync_s": round(noop.seconds, 3),
        "agent_sync_ms_p50": round(statistics.median(samples), 2),
        "agent_sync_ms_p99": round(samples[int(len(samples) * 0.99) - 1], 2),
        "baseline_roundtrip_ms_p50": round(statistics.median(rt), 3),
    }))


if __name__ == "__main__":
    main()
