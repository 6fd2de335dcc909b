"""Downloads through the box that does not hold the file (engine.boxes), against the holder's own.

One gevent process, monkey-patched like `switchdesk serve`, one SQLite file: two WSGI servers (box a and
box b, each with its own name and recordings folder) and a keep-alive-free HTTP client. A recording of
BENCH_MB (default 32) MiB lies on box b. Measured in the same run:

* ``local_mib_s``: whole downloads asked of box b (streamed from its disk);
* ``proxied_mib_s``: the same asked of box a, which fetches them from box b (signed) and streams them on;
* ``ratio``: proxied / local (the client, both boxes and the copy share one CPU here);
* ``local_range_ms`` / ``proxied_range_ms``: median time of a 1,000-byte Range request (request to last
  byte): the fixed cost of the hop (registry read, signature, one connection to the holder);
* ``peak_rss_growth_mib``: how much the process's peak RSS grew during the proxied downloads: far below
  BENCH_MB when the bytes are streamed, not read whole.

Prints one JSON line. Run: ``.venv/bin/python bench/box_proxy.py``.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("SWITCHDESK_SECRET_KEY", "bench-" + os.urandom(8).hex())

from api import create_app  # noqa: E402
from engine import boxes  # noqa: E402
from engine.directory import accounts  # noqa: E402
from engine.server import make_server  # noqa: E402
from engine.store import db, schema  # noqa: E402
from engine.store.models import Recording  # noqa: E402

MIB = int(os.environ.get("BENCH_MB", "32"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    size = 0
    while chunk := response.read(256 * 1024):
        size += len(chunk)
    conn.close()
    return response.status, size


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="box-proxy-"))
    database = db.bind(f"sqlite:///{tmp / 'sd.db'}")
    with database.connection_context():
        schema.init_schema(database)
        new = accounts.create_account("Bench", "bench.test", "admin")
    servers = {}
    for name in ("box-a", "box-b"):
        (tmp / name / "rec").mkdir(parents=True)
        app = create_app({"BOX_NAME": name, "RECORDINGS_DIR": str(tmp / name / "rec"),
                          "MEDIA_DIR": str(tmp / name / "media")})
        server = make_server(app, "127.0.0.1", 0)
        server.start()
        servers[name] = server
        boxes.register(name, f"http://127.0.0.1:{server.server_port}")
    rel = f"{new.account.id}/2026-01-01/bench.wav"
    (tmp / "box-b" / "rec" / rel).parent.mkdir(parents=True)
    block = os.urandom(1024 * 1024)
    with open(tmp / "box-b" / "rec" / rel, "wb") as out:  # a MiB at a time: the peak RSS stays low before
        for _ in range(MIB):
            out.write(block)
    with database.connection_context():
        rec = Recording.create(account=new.account.id, call_id="bench", leg_uuid="bench", path=rel, state="complete",
                               fs_host="box-b", started_at=int(time.time()), size=MIB * 2**20)
    url = f"/api/recording/{rec.id}/download"
    auth = {"Authorization": f"Bearer {new.api_key}"}
    ports = {name: server.server_port for name, server in servers.items()}

    def throughput(port: int) -> float:
        started = time.perf_counter()
        for _ in range(RUNS):
            status, size = _get(port, url, auth)
            assert status == 200 and size == MIB * 2**20, (status, size)
        return MIB * RUNS / (time.perf_counter() - started)

    def range_ms(port: int) -> float:
        times = []
        for _ in range(30):
            started = time.perf_counter()
            status, size = _get(port, url, {**auth, "Range": "bytes=5000-5999"})
            assert status == 206 and size == 1000
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    _get(ports["box-a"], url, {**auth, "Range": "bytes=0-0"})  # warm-up
    local = throughput(ports["box-b"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    proxied = throughput(ports["box-a"])
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    result = {"bench": "box_proxy", "mib": MIB, "runs": RUNS, "local_mib_s": round(local, 1),
              "proxied_mib_s": round(proxied, 1), "ratio": round(proxied / local, 2),
              "local_range_ms": round(range_ms(ports["box-b"]), 2),
              "proxied_range_ms": round(range_ms(ports["box-a"]), 2),
              "peak_rss_growth_mib": round(growth, 1)}
    for server in servers.values():
        server.stop(timeout=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
