"""Agent operations: latency from an API call to the matching command arriving at FreeSWITCH.

One process, like `switchdesk serve`: the Flask app (driven in-process, no
HTTP socket), the engine with its ESL connections and the emulator
(FakeSwitch + the mod_callcenter port) over loopback. 50 agents are checked in;
then 50 greenlets, one per agent, each repeat:

* ``setPause`` with a reason -> ``callcenter_config agent set ready_time <agent> 2147483647``;
* ``setPause`` 0 -> ``agent set ready_time <agent> <now>``;
* ``setQueues`` joining / leaving a mode-1 queue -> ``tier add`` / ``tier del``.

Two runs: paced (each agent acts about every PACE seconds, ~100 operations/s
in all: latency under load) and saturated (each agent acts again as soon as
its command arrived: throughput, where latency is mostly queueing behind the
other 49). Latency is from just before the API call to the arrival of that command at
the emulator (its receive hook), so it covers the request, the commit, the
engine's agent sync (read the agent, diff, send) and the wire. The baseline,
measured in the same process with the same 50-way concurrency, is the bare
ESL part: an ``api callcenter_config agent set ready_time`` sent by a client
to its arrival.

Prints one JSON line. Run: ``.venv/bin/python bench/agent_ops.py [rounds]``.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()  # as `switchdesk serve` does: peewee's connection state per greenlet

import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SWITCHDESK_SECRET_KEY", "bench-secret-key")

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402

from api import create_app  # noqa: E402
from engine.directory import accounts  # noqa: E402  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.esl.client import ESLClient  # noqa: E402
from engine.store import db, schema  # noqa: E402
from engine.store.models import Device, PauseReason, Queue, Tier, User  # noqa: E402
from tests.fakeswitch.callcenter import CallCenter  # noqa: E402
from tests.fakeswitch.server import FakeSwitch  # noqa: E402

AGENTS = 50
PACE = 0.5  # seconds between one agent's operations in the paced run (50 agents: ~100 operations/s)
DOMAIN = "bench.test"
_LINE = re.compile(r"^api callcenter_config (agent set ready_time (\S+)|tier (add|del) (\S+) (\S+))")


class Arrivals:
    """Waiters keyed by what they expect; the emulator's receive hook wakes them with the arrival time."""

    def __init__(self, fs: FakeSwitch):
        self.waiters: dict[tuple[str, ...], gevent.event.AsyncResult] = {}
        record = fs._record

        def hook(cmd) -> None:
            at = time.perf_counter()
            match = _LINE.match(cmd.line)
            if match:
                key = ("ready", match.group(2)) if match.group(2) else (match.group(3), match.group(4),
                                                                          match.group(5))
                waiter = self.waiters.pop(key, None)
                if waiter is not None:
                    waiter.set(at)
            record(cmd)

        fs._record = hook

    def expect(self, *key: str) -> gevent.event.AsyncResult:
        waiter = gevent.event.AsyncResult()
        self.waiters[key] = waiter
        return waiter


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": pct(values, 0.5), "p99_ms": pct(values, 0.99),
            "mean_ms": round(statistics.mean(values) * 1000, 3), "n": len(values)}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    tmp = tempfile.mkdtemp(prefix="sd-bench-")
    database = db.bind(f"sqlite:///{tmp}/bench.db")
    database.connect(reuse_if_open=True)
    schema.init_schema(database)
    new = accounts.create_account("Bench", DOMAIN, "admin")
    account_id = new.account.id
    lunch = PauseReason.create(account=account_id, name="Lunch", max_duration=0).id
    auto = Queue.create(account=account_id, name="Auto")
    manual = Queue.create(account=account_id, name="Manual")
    users = []
    for i in range(AGENTS):
        user = User.create(account=account_id, name=f"A{i}", username=f"a{i}", username_key=f"a{i}",
                           email=f"a{i}@x.test", email_key=f"a{i}@x.test", password_hash="x", is_agent=True)
        Tier.create(account=account_id, queue=auto, user=user, mode=3)
        Tier.create(account=account_id, queue=manual, user=user, mode=1)
        device = Device.create(account=account_id, name=f"D{i}", sip_username=f"{3000 + i}", sip_a1_hash="0" * 32)
        users.append((user.id, device.id))

    def provider(name: str):
        from engine.callcenter import fsconfig

        parsed = fsconfig.parse_name(name)
        queue = Queue.get_or_none(Queue.id == parsed[0]) if parsed else None
        return dict(fsconfig.queue_params(queue)) if queue else None

    fs = FakeSwitch(password="ClueCon").start()
    fs.callcenter = CallCenter(provider)
    arrivals = Arrivals(fs)
    engine = Engine("127.0.0.1", fs.port, "ClueCon", resync_every=3600).start()
    assert engine.commands.wait_connected(10) and engine.wait_synced(30)
    client = create_app({"TESTING": True}).test_client()
    auth = {"Authorization": f"Bearer {new.api_key}"}

    def call(path: str, **params) -> None:
        r = client.get(f"/api/cc_agent/{path}", query_string=params, headers=auth)
        assert r.status_code == 200, r.get_json()

    for user_id, device_id in users:
        call("checkInDevice", user_id=user_id, device_id=device_id)
    assert engine.wait_synced(30)

    queue_name = f"{manual.id}@{DOMAIN}"

    def agent_loop(user_id: int, latencies: dict[str, list[float]], pace: float | None) -> None:
        name = f"{user_id}@{DOMAIN}"
        rng = random.Random(user_id)
        if pace:
            gevent.sleep(rng.random() * pace)
        for _ in range(rounds):
            for kind, path, params, key in (
                ("setPause", "setPause", {"id": lunch}, ("ready", name)),
                ("setQueues", "setQueues", {"queue_ids": f"{auto.id},{manual.id}"}, ("add", queue_name, name)),
                ("unpause", "setPause", {"id": 0}, ("ready", name)),
                ("setQueues", "setQueues", {"queue_ids": str(auto.id)}, ("del", queue_name, name)),
            ):
                waiter = arrivals.expect(*key)
                t0 = time.perf_counter()
                call(path, user_id=user_id, **params)
                latencies[kind].append(waiter.get(timeout=30) - t0)
                # paced: each agent acts about every `pace` seconds; saturated: at once again
                gevent.sleep(rng.uniform(0.5, 1.5) * pace if pace else 0)

    def run(pace: float | None) -> tuple[dict[str, list[float]], float]:
        latencies: dict[str, list[float]] = {"setPause": [], "unpause": [], "setQueues": []}
        started = time.perf_counter()
        pool = gevent.pool.Pool(AGENTS)
        for user_id, _ in users:
            pool.spawn(agent_loop, user_id, latencies, pace)
        pool.join(raise_error=True)
        return latencies, time.perf_counter() - started

    paced, paced_elapsed = run(PACE)
    saturated, saturated_elapsed = run(None)
    engine.stop()

    # baseline: the bare ESL part, same concurrency, same process
    base: list[float] = []
    clients = [ESLClient("127.0.0.1", fs.port, "ClueCon") for _ in range(1)]
    for c in clients:
        c.connect()

    def base_loop(user_id: int) -> None:
        name = f"{user_id}@{DOMAIN}"
        for _ in range(rounds * 4):
            waiter = arrivals.expect("ready", name)
            t0 = time.perf_counter()
            clients[0].api(f"callcenter_config agent set ready_time {name} 0", check=False)
            base.append(waiter.get(timeout=30) - t0)

    pool = gevent.pool.Pool(AGENTS)
    for user_id, _ in users:
        pool.spawn(base_loop, user_id)
    pool.join(raise_error=True)
    for c in clients:
        c.close()
    fs.stop()

    def report(latencies: dict[str, list[float]], elapsed: float) -> dict[str, object]:
        everything = [v for values in latencies.values() for v in values]
        return {"all": summary(everything), **{kind: summary(v) for kind, v in latencies.items()},
                "ops_per_s": round(len(everything) / elapsed, 1)}

    print(json.dumps({
        "bench": "agent_ops", "agents": AGENTS, "rounds": rounds, "python": platform.python_version(),
        f"paced_every_{PACE}s": report(paced, paced_elapsed),
        "saturated": report(saturated, saturated_elapsed),
        "baseline_esl_only": summary(base),
        "target_p99_ms": 20,
    }))


if __name__ == "__main__":
    main()
