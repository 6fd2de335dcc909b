"""Fairness of the one gevent process: does one large request, or one busy connection, hold up the rest?

* `import`: p50/p99 of `GET /api/health` on its own keep-alive connection while a 100,000-lead
  JSON POST is being parsed, checked and stored, against the same probe with the server idle (the
  baseline, in the same run). Target: p99 < 50 ms during the import.
* `connections`: 50 keep-alive connections each sending `GET /api/health` back to back for a few
  seconds; p50/p99 over all requests and the spread of the per-connection p99s. Target: p99 < 5x p50.

Prints one JSON line.
"""
from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, spawn, wait_http  # noqa: E402

LEADS = int(os.environ.get("BENCH_LEADS", "100000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
CONNECTIONS = 50


def seed(url: str) -> tuple[str, int]:
    from engine.directory import accounts
    from engine.store import db, schema
    from engine.store.models import PhoneList

    database = db.bind(url)
    with database.connection_context():
        schema.init_schema(database)
        new = accounts.create_account("Bench", "bench.test", "admin")
        phone_list = PhoneList.create(account=new.account.id, name="bench", name_key="bench", type="leads")
    return new.api_key, phone_list.id


def percentiles(latencies: list[float]) -> dict:
    latencies = sorted(latencies)
    if not latencies:
        return {"n": 0}
    return {"n": len(latencies), "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
            # nearest rank: with few samples p99 is the largest (int(n * 0.99) - 1 gave the smallest of 2)
            "p99_ms": round(latencies[max(0, math.ceil(len(latencies) * 0.99) - 1)] * 1000, 2),
            "max_ms": round(latencies[-1] * 1000, 2)}


def probe(port: int, until: gevent.event.Event, interval: float = 0.005) -> list[float]:
    """`GET /api/health` every `interval` on one keep-alive connection until `until` is set."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies = []
    while not until.is_set():
        start = time.perf_counter()
        conn.request("GET", "/api/health")
        conn.getresponse().read()
        latencies.append(time.perf_counter() - start)
        gevent.sleep(interval)
    conn.close()
    return latencies


def during_import(port: int, key: str, list_id: int) -> dict:
    body = json.dumps([{"phone": f"+1212{n:07d}", "name": f"Lead {n}", "priority": n % 10}
                       for n in range(LEADS)]).encode()
    idle_done = gevent.event.Event()
    idle = gevent.spawn(probe, port, idle_done)
    gevent.sleep(1.0)
    idle_done.set()
    busy_done = gevent.event.Event()
    busy = gevent.spawn(probe, port, busy_done)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("POST", f"/api/phone_list/{list_id}/lead", body=body,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = conn.getresponse()
    reply = response.read()
    import_s = time.perf_counter() - start
    busy_done.set()
    assert response.status == 200, reply[:300]
    return {"leads": LEADS, "body_mb": round(len(body) / 1e6, 1), "import_s": round(import_s, 2),
            "health_idle": percentiles(idle.get()), "health_during_import": percentiles(busy.get())}


def connections(port: int) -> dict:
    per_connection: list[list[float]] = []
    deadline = time.perf_counter() + SECONDS

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies: list[float] = []
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            conn.request("GET", "/api/health")
            conn.getresponse().read()
            latencies.append(time.perf_counter() - start)
        conn.close()
        per_connection.append(latencies)

    gevent.joinall([gevent.spawn(worker) for _ in range(CONNECTIONS)], raise_error=True)
    everything = [x for latencies in per_connection for x in latencies]
    worst = sorted(percentiles(latencies).get("p99_ms", 0) for latencies in per_connection)
    counts = sorted(len(latencies) for latencies in per_connection)
    overall = percentiles(everything)
    return {"connections": CONNECTIONS, "seconds": SECONDS, "rps": round(len(everything) / SECONDS, 1),
            **overall, "p99_over_p50": round(overall["p99_ms"] / overall["p50_ms"], 2),
            "per_connection_p99_ms_min_max": [worst[0], worst[-1]],
            "per_connection_requests_min_max": [counts[0], counts[-1]]}


def main() -> None:
    tmp = tempfile.mkdtemp()
    url = f"sqlite:///{tmp}/bench.db"
    key, list_id = seed(url)
    port = free_port()
    server = spawn(["-m", "engine.cli", "serve", "--db", url, "--listen", f"127.0.0.1:{port}", "--no-esl"])
    try:
        wait_http(port, "/api/health")
        result = {"bench": "fairness", "import": during_import(port, key, list_id),
                  "connections": connections(port)}
        result["met"] = {
            "import_p99_under_50ms": result["import"]["health_during_import"]["p99_ms"] < 50,
            "connections_p99_under_5x_p50": result["connections"]["p99_over_p50"] < 5,
        }
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
