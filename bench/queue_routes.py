"""Dialplan answers for the routes issue 18 made richer, against the plain ones, cached and uncached.

One account on a temp SQLite file: a plain queue and a queue with everything (hold music, join,
periodic and pre-bridge announcements, auto-answer, ring_timeout, exits), a plain user with one
device and a user with three devices (follow_me, call_timeout, voicemail box with a greeting,
intercept group), each on its own extension; plus the exit route of the rich queue. Times N dialplan
requests per route against the Flask app in-process (test client; ~100 filler channel variables per
request like FreeSWITCH's), best of 3, with the views (the default) and without
(SWITCHDESK_DIRECTORY_CACHE=0). The plain routes are the baseline, measured in the same run.

Prints one JSON line. Run: ``.venv/bin/python bench/queue_routes.py [N]``.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api import create_app  # noqa: E402
from engine.store import db, schema  # noqa: E402
from engine.store.models import Account, Device, Extension, Media, Queue, User, VoicemailBox  # noqa: E402

AUTH = {"Authorization": "Basic " + "ZnJlZXN3aXRjaDpiZW5jaA==", "Content-Type": "application/x-www-form-urlencoded"}


def world() -> dict[str, str]:
    account = Account.create(name="Bench", domain="bench.test")
    media = [Media.create(account=account, name=f"m{i}", file=f"m{i}.wav", host="h", rate=16000, duration_ms=1000,
                          size=32044).id for i in range(5)]
    plain_q = Queue.create(account=account, name="Plain")
    rich_q = Queue.create(account=account, name="Rich", moh_id=media[0], join_announce=media[1],
                          announce_id=media[2], announce_frequency=30, pre_bridge_announce=media[3],
                          auto_answer=True, ring_timeout=15,
                          exits={"max_wait": {"type": "extension", "target": "2000"},
                                 "keys": {"1": {"type": "queue", "target": plain_q.id}}})
    box = VoicemailBox.create(account=account, name="Box", greeting_id=media[4])

    def user(name: str, devices: int, **fields) -> User:
        row = User.create(account=account, name=name, username=name, username_key=name, email=f"{name}@b.test",
                          email_key=f"{name}@b.test", password_hash="x", **fields)
        for i in range(devices):
            Device.create(account=account, name=f"{name}{i}", sip_username=f"{name}{i}", sip_a1_hash="0" * 32,
                          user=row)
        return row

    plain_u = user("plain", 1)
    rich_u = user("rich", 3, follow_me=5, call_timeout=20, vm_id=box.id, intercept_groups=[7])
    for number, kind, target in (("7000", "queue", plain_q.id), ("7001", "queue", rich_q.id),
                                 ("8000", "user", plain_u.id), ("8001", "user", rich_u.id)):
        Extension.create(account=account, number=number, target_type=kind, target_id=target)
    return {"plain_queue": "7000", "rich_queue": "7001", "plain_user": "8000", "rich_user": "8001",
            "queue_exit": f"switchdesk_exit_{rich_q.id}_TIMEOUT_"}


def body(number: str) -> bytes:
    fields = {"section": "dialplan", "Event-Name": "REQUEST_PARAMS", "Hunt-Context": "bench.test",
              "Hunt-Destination-Number": number, "Caller-Context": "bench.test", "Caller-Destination-Number": number}
    fields.update({f"variable_filler_{n}": f"value-{n}" for n in range(100)})
    return urlencode(fields).encode()


def run(client, data: bytes, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        response = client.post("/freeswitch/dialplan", data=data, headers=AUTH,
                               environ_base={"REMOTE_ADDR": "127.0.0.1"})
        if response.status_code != 200 or b"not found" in response.data:
            raise SystemExit(f"no route: {response.data[:200]!r}")
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        database = db.bind(f"sqlite:///{tmp}/bench.db")
        database.connect()
        schema.init_schema(database)
        routes = world()
        database.close()
        client = create_app({"XMLCURL_PASSWORD": "bench", "MEDIA_DIR": tmp}).test_client()
        for mode, flag in (("uncached", "0"), ("cached", "1")):
            os.environ["SWITCHDESK_DIRECTORY_CACHE"] = flag
            out[mode] = {}
            for name, number in routes.items():
                data = body(number)
                run(client, data, 50)
                out[mode][f"{name}_us"] = round(min(run(client, data, n) for _ in range(3)), 1)
        os.environ.pop("SWITCHDESK_DIRECTORY_CACHE", None)
    print(json.dumps({"bench": "queue_routes", "requests": n, "python": platform.python_version(), **out,
                      "rich_minus_plain_queue_cached_us": round(out["cached"]["rich_queue_us"]
                                                                - out["cached"]["plain_queue_us"], 1),
                      "rich_minus_plain_user_cached_us": round(out["cached"]["rich_user_us"]
                                                               - out["cached"]["plain_user_us"], 1)}))


if __name__ == "__main__":
    main()
