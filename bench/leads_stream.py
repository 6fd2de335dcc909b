"""GET of a phone list of 1,000,000 leads from the real server (`switchdesk serve`, SQLite): time to the
last byte and the growth of the server's peak RSS (VmHWM) over its RSS before the request; plus the
time of a do-not-call lookup against that list.

Prints one JSON line. Target: RSS growth under 100 MB.
"""
from __future__ import annotations

import http.client
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, spawn, wait_http

LEADS = int(os.environ.get("BENCH_LEADS", "1000000"))


def seed(url: str, path: str) -> tuple[str, int]:
    """An account and a list filled straight through sqlite3 (the import path has its own benchmark)."""
    from engine.directory import accounts
    from engine.store import db, schema
    from engine.store.models import PhoneList

    database = db.bind(url)
    with database.connection_context():
        schema.init_schema(database)
        new = accounts.create_account("Bench", "bench.test", "admin")
        list_id = PhoneList.create(account=new.account.id, name="big", name_key="big", list_rows=LEADS).id
    database.close_all()
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            'INSERT INTO "lead" ("phone_list_id", "phone", "name", "lead_id", "priority", "tags", "ext_api_vars") '
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            ((list_id, f"+9725{i:08d}", f"Lead {i}", str(i), 1 if i % 100 == 0 else 0, None,
              f'{{"crm_id":{i},"campaign":"spring"}}') for i in range(LEADS)))
    conn.close()
    return new.api_key, list_id


def memory(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * 1024
    return fields


def get(port: int, path: str, key: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def main() -> None:
    tmp = tempfile.mkdtemp()
    path = f"{tmp}/bench.db"
    key, list_id = seed(f"sqlite:///{path}", path)
    port = free_port()
    server = spawn(["-m", "engine.cli", "serve", "--db", f"sqlite:///{path}", "--listen", f"127.0.0.1:{port}"])
    try:
        wait_http(port, "/api/health")
        get(port, f"/api/phone_list/{list_id}/lead?limit=10", key)  # warm-up: imports, first queries
        before = memory(server.pid)
        start = time.perf_counter()
        status, body = get(port, f"/api/phone_list/{list_id}/lead", key)
        elapsed = time.perf_counter() - start
        after = memory(server.pid)
        start = time.perf_counter()
        for i in range(100):
            get(port, f"/api/phone_list/lookup?phone=%2B9725{i * 9973:08d}", key)
        lookup_ms = (time.perf_counter() - start) * 10
    finally:
        server.terminate()
        server.wait(10)
    data = json.loads(body)["data"]
    assert status == 200 and len(data) == LEADS, (status, len(data))
    assert data[0]["priority"] == 1 and data[-1]["priority"] == 0
    print(json.dumps({
        "bench": "leads_stream",
        "leads": LEADS,
        "body_mb": round(len(body) / 1e6, 1),
        "get_s": round(elapsed, 2),
        "leads_per_s": round(LEADS / elapsed),
        "rss_before_mb": round(before["VmRSS"] / 1e6, 1),
        "peak_rss_growth_mb": round((after["VmHWM"] - before["VmRSS"]) / 1e6, 1),
        "lookup_ms": round(lookup_ms, 2),
    }))


if __name__ == "__main__":
    main()
