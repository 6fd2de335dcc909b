"""Click-to-call overhead: what switchdesk adds to an originate beyond the phone's own answer time.

One process (gevent, monkey-patched like ``switchdesk serve``): the emulator
(its phone answers after ``ANSWER_MS``), the engine's command connection, and
the API on a real WSGI server over loopback HTTP. Measured:

* ``api_*``: ``GET /api/cc_agent/originate`` (authentication, device lookup,
  the command built and escaped, ``bgapi originate`` with our Job-UUID, the
  wait for the BACKGROUND_JOB, the reply), one request at a time;
* ``baseline_*``: a bare ``bgapi originate`` over ESLClient against the same
  emulator and phone, one at a time: the floor the API can reach;
* ``*_overhead_ms``: the median minus ``ANSWER_MS``; ``api_added_ms`` is the
  difference of the two medians, i.e. switchdesk's own cost;
* ``api_concurrent_cps``: originates per second with ``CONCURRENCY`` clients
  at once (the phone still takes ``ANSWER_MS`` to answer each).

Prints one JSON line. Run: ``.venv/bin/python bench/click_to_call.py``.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SWITCHDESK_SECRET_KEY", "bench-secret-key")

import gevent  # noqa: E402
import gevent.pool  # noqa: E402

ANSWER_MS = 20.0
REQUESTS = 300
CONCURRENCY = 20
CONCURRENT_REQUESTS = 400


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    from api import create_app
    from engine.directory import accounts
    from engine.engine import Engine
    from engine.esl.client import ESLClient
    from engine.server import make_server
    from engine.store import db, schema
    from engine.store.models import Device
    from tests.fakeswitch import FakeSwitch

    tmp = tempfile.mkdtemp(prefix="sd-bench-")
    database = db.bind(f"sqlite:///{tmp}/bench.db")
    with database.connection_context():
        schema.init_schema(database)
        new = accounts.create_account("Bench", "bench.test", "admin")
        device = Device.create(account=new.account.id, name="Desk", sip_username="2001", sip_a1_hash="0" * 32,
                               user=new.admin.id)
    fs = FakeSwitch().start()
    fs.calls.register("2001", "bench.test", answer_after=ANSWER_MS / 1000)
    engine = Engine("127.0.0.1", fs.port, "ClueCon", resync_every=3600)
    engine.commands.start()
    assert engine.commands.wait_connected(10)
    app = create_app({"ENGINE": engine})
    server = make_server(app, "127.0.0.1", 0)
    server.start()
    port = server.server_port
    path = f"/api/cc_agent/originate?device_id={device.id}&destination=5551234&lead_id=L1&api_key={new.api_key}"

    def api_call(conn: http.client.HTTPConnection) -> float:
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = json.loads(response.read())
        elapsed = (time.perf_counter() - start) * 1000
        assert response.status == 200 and body["success"], body
        return elapsed

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(20):
        api_call(conn)  # warm-up: compiled queries, pools, caches
    api_ms = [api_call(conn) for _ in range(REQUESTS)]

    client = ESLClient("127.0.0.1", fs.port, "ClueCon")
    client.connect(5)
    raw = "originate {originate_timeout=30}user/2001@bench.test &park()"

    def baseline_call() -> float:
        start = time.perf_counter()
        result = client.bgapi(raw, timeout=30)
        elapsed = (time.perf_counter() - start) * 1000
        assert result.startswith("+OK"), result
        return elapsed

    for _ in range(20):
        baseline_call()
    base_ms = [baseline_call() for _ in range(REQUESTS)]

    def worker(count: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(count):
            api_call(c)

    start = time.perf_counter()
    pool = gevent.pool.Pool(CONCURRENCY)
    for _ in range(CONCURRENCY):
        pool.spawn(worker, CONCURRENT_REQUESTS // CONCURRENCY)
    pool.join(raise_error=True)
    concurrent_s = time.perf_counter() - start

    client.close()
    server.stop(timeout=2)
    engine.commands.stop()
    fs.stop()
    api_median, base_median = statistics.median(api_ms), statistics.median(base_ms)
    print(json.dumps({
        "bench": "click_to_call",
        "python": platform.python_version(),
        "answer_ms": ANSWER_MS,
        "requests": REQUESTS,
        "api_median_ms": round(api_median, 2),
        "api_p95_ms": round(percentile(api_ms, 95), 2),
        "api_overhead_ms": round(api_median - ANSWER_MS, 2),
        "baseline_median_ms": round(base_median, 2),
        "baseline_p95_ms": round(percentile(base_ms, 95), 2),
        "baseline_overhead_ms": round(base_median - ANSWER_MS, 2),
        "api_added_ms": round(api_median - base_median, 2),
        "concurrency": CONCURRENCY,
        "api_concurrent_cps": round(CONCURRENT_REQUESTS / concurrent_s, 1),
    }))


if __name__ == "__main__":
    main()
