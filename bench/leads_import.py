"""POST of 100,000 leads in one request to the real server (`switchdesk serve`, SQLite), next to a
raw `sqlite3.executemany` of the same rows into the same table (same schema and indexes) in the
same run.

Prints one JSON line. Targets: under 5 s, and at least a third of the raw speed. For the breakdown,
`json_decode_s` and `validate_s` time the server's first two steps (engine.leads.validation.decode_leads, msgspec,
and engine.leads.validation.check_leads) on the same body in this process; `json_loads_s` is the standard
decoder on the same body, for comparison.
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

LEADS = int(os.environ.get("BENCH_LEADS", "100000"))


def seed(url: str) -> str:
    from engine.directory import accounts
    from engine.store import db, schema

    database = db.bind(url)
    with database.connection_context():
        schema.init_schema(database)
        key = accounts.create_account("Bench", "bench.test", "admin").api_key
    database.close_all()
    return key


def request(port: int, method: str, path: str, key: str, body: bytes | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request(method, path, body=body, headers={"Authorization": f"Bearer {key}",
                                                   "Content-Type": "application/json"})
    reply = json.loads(conn.getresponse().read())
    conn.close()
    return reply


def leads() -> list[dict]:
    return [{"phone": f"+97250{i:07d}", "name": f"Lead {i}", "lead_id": str(i), "priority": i % 3,
             "tags": "bench", "ext_api_vars": {"crm_id": i, "campaign": "spring"}} for i in range(LEADS)]


def raw_sqlite(tmp: str, rows: list[dict]) -> float:
    """The floor: the driver alone inserting prepared tuples into the same schema, one transaction."""
    from engine.store import db, schema
    from engine.store.models import Account, PhoneList

    url = f"sqlite:///{tmp}/raw.db"
    database = db.bind(url)
    with database.connection_context():
        schema.init_schema(database)
        list_id = PhoneList.create(account=Account.create(name="raw", domain="raw.test"), name="raw",
                                   name_key="raw").id
    database.close_all()
    tuples = [(list_id, r["phone"], r["name"], r["lead_id"], r["priority"], r["tags"],
               json.dumps(r["ext_api_vars"], separators=(",", ":"))) for r in rows]
    conn = sqlite3.connect(f"{tmp}/raw.db")
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=normal")
    start = time.perf_counter()
    with conn:
        conn.executemany('INSERT INTO "lead" ("phone_list_id", "phone", "name", "lead_id", "priority", "tags", '
                         '"ext_api_vars") VALUES (?, ?, ?, ?, ?, ?, ?)', tuples)
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def main() -> None:
    tmp = tempfile.mkdtemp()
    url = f"sqlite:///{tmp}/bench.db"
    key = seed(url)
    rows = leads()
    body = json.dumps(rows).encode()
    raw = raw_sqlite(tmp, rows)
    from engine.leads.validation import check_leads, decode_leads

    start = time.perf_counter()
    parsed = decode_leads(body)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    check_leads(parsed)
    check_s = time.perf_counter() - start
    start = time.perf_counter()
    json.loads(body)
    loads_s = time.perf_counter() - start
    port = free_port()
    server = spawn(["-m", "engine.cli", "serve", "--db", url, "--listen", f"127.0.0.1:{port}"])
    try:
        wait_http(port, "/api/health")
        list_id = request(port, "POST", "/api/phone_list", key, json.dumps({"name": "bench"}).encode())["data"]["id"]
        start = time.perf_counter()
        first = request(port, "POST", f"/api/phone_list/{list_id}/lead", key, body)
        insert_s = time.perf_counter() - start
        start = time.perf_counter()
        again = request(port, "POST", f"/api/phone_list/{list_id}/lead", key, body)
        update_s = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(10)
    assert first["data"]["added"] == LEADS, first
    assert again["data"]["updated"] == LEADS, again
    print(json.dumps({
        "bench": "leads_import",
        "leads": LEADS,
        "body_mb": round(len(body) / 1e6, 1),
        "post_new_s": round(insert_s, 3),
        "post_new_rows_per_s": round(LEADS / insert_s),
        "post_update_s": round(update_s, 3),
        "post_update_rows_per_s": round(LEADS / update_s),
        "json_decode_s": round(decode_s, 3),
        "validate_s": round(check_s, 3),
        "json_loads_s": round(loads_s, 3),
        "raw_executemany_s": round(raw, 3),
        "raw_rows_per_s": round(LEADS / raw),
        "ratio_new_to_raw": round(raw / insert_s, 3),
        "ratio_update_to_raw": round(raw / update_s, 3),
    }))


if __name__ == "__main__":
    main()
