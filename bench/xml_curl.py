"""mod_xml_curl answers per request: directory + dialplan, with the directory cache and without.

Builds one account (domain bench.test) with DEVICES devices, each with its own
extension, a queue on extension 7000, a DID to the queue and an outbound
gateway, on a temp SQLite file; then times N requests against the Flask app
in-process (the test client, so the WSGI server and access log are not
included): directory `sip_auth` for a device, dialplan for an extension, the
queue extension, the DID (public context) and an outbound number, each
request a different device / number in turn. Run once with the cache
(engine.directory.views, the default) and once with it disabled
(SWITCHDESK_DIRECTORY_CACHE=0, read at each lookup), in the same process on
the same database.

Prints one JSON line: per-request µs for directory and dialplan, cached and
uncached, the speed-up, and `floor_us`: a request of the same client and app
that looks nothing up (test client, Flask, basic auth: what no cache removes).
Run: ``.venv/bin/python bench/xml_curl.py [N]``.
"""
from __future__ import annotations

import base64
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api import create_app  # noqa: E402
from engine.store import db, schema  # noqa: E402
from engine.store.models import Account, Device, Did, Extension, Queue  # noqa: E402

DEVICES = 200
AUTH = {"Authorization": "Basic " + base64.b64encode(b"freeswitch:bench").decode(),
        "Content-Type": "application/x-www-form-urlencoded"}


def world() -> None:
    account = Account.create(name="Bench", domain="bench.test", country="US", outbound_gateway="carrier")
    queue = Queue.create(account=account, name="Support")
    for i in range(DEVICES):
        device = Device.create(account=account, name=f"Desk {i}", sip_username=f"{1000 + i}", sip_a1_hash="0" * 32,
                               cid_name=f"Desk {i}", cid_num=f"{1000 + i}")
        Extension.create(account=account, number=f"{2000 + i}", target_type="device", target_id=device.id)
    Extension.create(account=account, number="7000", target_type="queue", target_id=queue.id)
    Did.create(account=account, number="+15550100000", target_type="queue", target_id=queue.id)


def directory_body(i: int) -> bytes:
    return urlencode({"hostname": "fs1", "section": "directory", "tag_name": "domain", "key_name": "name",
                      "key_value": "bench.test", "Event-Name": "REQUEST_PARAMS", "action": "sip_auth",
                      "sip_profile": "internal", "sip_user_agent": "bench", "sip_auth_username": f"{1000 + i}",
                      "sip_auth_realm": "bench.test", "sip_auth_method": "REGISTER", "user": f"{1000 + i}",
                      "domain": "bench.test", "ip": "127.0.0.1"}).encode()


def dialplan_body(i: int) -> bytes:
    kind = i % 4
    if kind == 0:
        context, number = "bench.test", f"{2000 + (i // 4) % DEVICES}"
    elif kind == 1:
        context, number = "bench.test", "7000"
    elif kind == 2:
        context, number = "public", "15550100000"
    else:
        context, number = "bench.test", f"+1555{(i // 4) % 1000:07d}"
    fields = {"hostname": "fs1", "section": "dialplan", "tag_name": "", "key_name": "", "key_value": "",
              "Event-Name": "REQUEST_PARAMS", "Core-UUID": "c0ffee", "Hunt-Context": context,
              "Hunt-Destination-Number": number, "Caller-Context": context,
              "Caller-Destination-Number": number, "Caller-Caller-ID-Number": "1000",
              "variable_sip_from_user": "1000", "variable_user_context": context}
    # a real request carries ~100 channel variables
    fields.update({f"variable_filler_{n}": f"value-{n}" for n in range(100)})
    return urlencode(fields).encode()


def run(client, path: str, bodies: list[bytes]) -> float:
    start = time.perf_counter()
    for body in bodies:
        response = client.post(path, data=body, headers=AUTH, environ_base={"REMOTE_ADDR": "127.0.0.1"})
        if response.status_code != 200:
            raise SystemExit(f"{path}: HTTP {response.status_code}")
    return (time.perf_counter() - start) / len(bodies) * 1e6


def measure(client, n: int, cached: bool) -> dict[str, float]:
    os.environ["SWITCHDESK_DIRECTORY_CACHE"] = "1" if cached else "0"
    dir_bodies = [directory_body(i % DEVICES) for i in range(n)]
    dp_bodies = [dialplan_body(i) for i in range(n)]
    run(client, "/freeswitch/directory", dir_bodies[:DEVICES])  # warm: compiled SQL, and the cache when on
    run(client, "/freeswitch/dialplan", dp_bodies[:4 * DEVICES])
    best_dir = min(run(client, "/freeswitch/directory", dir_bodies) for _ in range(3))
    best_dp = min(run(client, "/freeswitch/dialplan", dp_bodies) for _ in range(3))
    return {"directory_us": round(best_dir, 1), "dialplan_us": round(best_dp, 1)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as tmp:
        database = db.bind(f"sqlite:///{tmp}/bench.db")
        database.connect()
        schema.init_schema(database)
        world()
        database.close()
        app = create_app({"XMLCURL_PASSWORD": "bench"})
        client = app.test_client()
        # answers are the same either way
        for body in (directory_body(3), dialplan_body(0), dialplan_body(1), dialplan_body(2), dialplan_body(3)):
            path = "/freeswitch/directory" if b"section=directory" in body else "/freeswitch/dialplan"
            answers = []
            for flag in ("0", "1", "1"):
                os.environ["SWITCHDESK_DIRECTORY_CACHE"] = flag
                answer = client.post(path, data=body, headers=AUTH, environ_base={"REMOTE_ADDR": "127.0.0.1"}).data
                # FreeSWITCH may keep a directory answer only while the views are on (engine.directory.fscache)
                answers.append(re.sub(rb' cacheable="[0-9]+"', b"", answer))
            if len(set(answers)) != 1:
                raise SystemExit(f"cached and uncached answers differ for {path}")
        uncached = measure(client, n, cached=False)
        cached = measure(client, n, cached=True)
        # the floor: the same client, app, auth and form, a section nothing is looked up for
        floor = min(run(client, "/freeswitch/none", [b"section=none"] * n) for _ in range(3))
        os.environ.pop("SWITCHDESK_DIRECTORY_CACHE", None)
    print(json.dumps({
        "bench": "xml_curl", "requests": n, "devices": DEVICES, "python": platform.python_version(),
        "uncached": uncached, "cached": cached, "floor_us": round(floor, 1),
        "speedup_directory": round(uncached["directory_us"] / cached["directory_us"], 1),
        "speedup_dialplan": round(uncached["dialplan_us"] / cached["dialplan_us"], 1),
    }))


if __name__ == "__main__":
    main()
