"""mod_callcenter sync at scale into a REAL FreeSWITCH: switchdesk's full sync against the switch's floor.

Starts FreeSWITCH 1.10 with the test harness (tests/realswitch: the stock configuration plus
freeswitch-conf/install.sh, on loopback with free ports) and, in this process, switchdesk's xml_curl
endpoints (FreeSWITCH fetches callcenter.conf from them for `queue load`) and its Engine on a temp SQLite
database holding ``--agents`` agents with 4 joined tiers each over 50 queues (bench/cc_sync.py's data).

* ``full_sync_s``: the Engine's first full sync into an empty mod_callcenter (read the three lists, build
  the desired state, diff, send pipelined on its command connection; queue loads as bgapi) — as timed by
  the Engine (``last_sync.seconds``); ``connect_to_synced_s`` adds the connection and handshake.
* ``floor_s``: the same commands (every one switchdesk sent except the lists), sent raw and pipelined on
  one fresh event-socket connection into an empty mod_callcenter (FreeSWITCH restarted with its
  callcenter database removed), queue loads first as plain ``api``: what the switch itself needs.
  ``floor_agents_tiers_s`` is the agent and tier part alone. ``ratio`` = full_sync_s / floor_s; target <= 1.2.
* ``reconnect_*``: a new Engine (a reconnect, as after a restart of switchdesk) against the switch that
  already matches: every command it sent, counted by kind; target: only the three lists of callcenter_config.
* ``noop_sync_*``: a full sync on that Engine when nothing differs.

Prints one JSON line (``{"skipped": "..."}`` when no FreeSWITCH or sipp-less harness can be had).
Run: ``.venv/bin/python bench/cc_sync_real.py [--agents 5000]``; DESIGN.md measured ~37 s for the
5,000 / 20,000 floor on a 2-core machine.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import secrets
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUEUES = 50
TIERS_PER_AGENT = 4


def fill(path: str, agents: int) -> None:
    """bench/cc_sync.py's data, so the two runs compare: `agents` agents, 4 joined tiers each, 50 queues."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cc_sync import setup_database

    setup_database(path, agents)


class Recorder:
    """Every command line the engine's ESL connections write (wraps ESLConnection._send_frames)."""

    def __init__(self):
        from engine.esl.connection import ESLConnection

        self.lines: list[str] = []
        original = ESLConnection._send_frames
        recorder = self

        def send_frames(conn, payloads):
            recorder.lines.extend(payload.split(b"\n", 1)[0].decode() for _, payload in payloads)
            return original(conn, payloads)

        ESLConnection._send_frames = send_frames

    def take(self) -> list[str]:
        lines, self.lines = self.lines, []
        return lines


def kind(line: str) -> str:
    """`api callcenter_config agent set contact x y` -> `callcenter_config agent set`; lists keep `list`."""
    words = line.split()
    if words and words[0] in ("api", "bgapi"):
        words = words[1:]
    if words[:1] == ["callcenter_config"]:
        return " ".join(words[:3])
    return " ".join(words[:2])


def pipelined(host: str, port: int, password: str, commands: list[str]) -> tuple[float, list[str]]:
    """Raw ESL: auth, then every `api` command written back to back (a writer greenlet) while the replies
    are read in order. Returns (seconds from the first write to the last reply, replies)."""
    import gevent

    sock = socket.create_connection((host, port))
    buffer = b""

    def frame() -> tuple[dict[str, str], bytes]:
        nonlocal buffer
        while b"\n\n" not in buffer:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("event socket closed")
            buffer += chunk
        head, _, buffer = buffer.partition(b"\n\n")
        headers = dict(line.split(": ", 1) for line in head.decode().splitlines() if ": " in line)
        size = int(headers.get("Content-Length", 0))
        while len(buffer) < size:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("event socket closed")
            buffer += chunk
        body, buffer = buffer[:size], buffer[size:]
        return headers, body

    assert frame()[0].get("Content-Type") == "auth/request"
    sock.sendall(f"auth {password}\n\n".encode())
    assert frame()[0].get("Reply-Text", "").startswith("+OK"), "ESL auth refused"
    payload = b"".join(f"api {c}\n\n".encode() for c in commands)
    started = time.perf_counter()
    writer = gevent.spawn(sock.sendall, payload)
    replies = []
    while len(replies) < len(commands):
        headers, body = frame()
        if headers.get("Content-Type") == "api/response":
            replies.append(body.decode(errors="replace"))
    seconds = time.perf_counter() - started
    writer.get()
    sock.close()
    return seconds, replies


def restart_empty(fs) -> None:
    """FreeSWITCH again with no mod_callcenter state (agents and tiers live in db/callcenter.db)."""
    fs.stop()
    fs._pid = None
    (fs.dirs["run"] / "freeswitch.pid").unlink(missing_ok=True)
    for path in fs.dirs["db"].glob("callcenter.db*"):
        path.unlink()
    fs.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=int(os.environ.get("BENCH_AGENTS", 5000)),
                        help="agents (4 tiers each; default 5000, i.e. 20,000 tiers)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (FreeSWITCH's logs)")
    args = parser.parse_args()

    from gevent import monkey

    monkey.patch_all()
    from tests.realswitch.esl import parse_table
    from tests.realswitch.freeswitch import HOST, FreeSwitch, Ports, Unavailable, find_install

    try:
        install = find_install()
    except Unavailable as exc:
        print(json.dumps({"bench": "cc_sync_real", "skipped": str(exc)}))
        return

    from api import create_app
    from engine.engine import Engine
    from engine.server import make_server

    tmp = Path(tempfile.mkdtemp(prefix="cc_sync_real-"))
    fill(str(tmp / "bench.db"), args.agents)
    ports = Ports()
    esl_password, xmlcurl_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    fs = FreeSwitch(install, tmp / "fs", ports, esl_password, xmlcurl_password)
    fs.prepare()
    server = make_server(create_app({"XMLCURL_PASSWORD": xmlcurl_password}), HOST, ports.http)
    server.start()  # before FreeSWITCH: it fetches callcenter.conf while loading mod_callcenter
    recorder = Recorder()
    result: dict = {"bench": "cc_sync_real", "python": platform.python_version(), "cpus": os.cpu_count(),
                    "agents": args.agents, "tiers": args.agents * TIERS_PER_AGENT, "queues": QUEUES}
    engine = None
    try:
        fs.start()
        result["freeswitch"] = fs.api("version").strip().split(" (")[0]

        # 1. switchdesk: the Engine's full sync into an empty mod_callcenter
        t0 = time.perf_counter()
        engine = Engine(HOST, ports.esl, esl_password, resync_every=3600).start()
        assert engine.wait_synced(1800), "no full sync"
        wall = time.perf_counter() - t0
        full = engine.last_sync
        sent = [line for line in recorder.take() if line.startswith(("api ", "bgapi "))]
        changes = [line.split(" ", 1)[1] for line in sent
                   if line.split()[1:2] == ["callcenter_config"] and " list" not in line]
        result.update(full_sync_s=round(full.seconds, 3), connect_to_synced_s=round(wall, 3),
                      full_sync_commands=full.commands, full_sync_errors=len(full.errors),
                      full_sync_kinds=dict(collections.Counter(kind(c) for c in changes)))
        result.update(agents_in_switch=len(parse_table(fs.api("callcenter_config agent list"))),
                      tiers_in_switch=len(parse_table(fs.api("callcenter_config tier list"))))

        # 2. a reconnect against a switch that already matches, then a no-op sync on it
        engine.stop()
        engine = None
        recorder.take()
        t0 = time.perf_counter()
        engine = Engine(HOST, ports.esl, esl_password, resync_every=3600).start()
        assert engine.wait_synced(600), "no sync after the reconnect"
        reconnect = engine.last_sync
        result.update(reconnect_sync_s=round(reconnect.seconds, 3),
                      reconnect_to_synced_s=round(time.perf_counter() - t0, 3),
                      reconnect_sync_commands=reconnect.commands,
                      reconnect_sent=dict(collections.Counter(kind(line) for line in recorder.take())))
        noop = engine.sync_now()
        result.update(noop_sync_s=round(noop.seconds, 3), noop_sync_commands=noop.commands,
                      noop_sent=dict(collections.Counter(kind(line) for line in recorder.take())))
        engine.stop()
        engine = None

        # 3. the floor: the same changes, raw and pipelined on one connection, into an empty mod_callcenter
        restart_empty(fs)
        left = parse_table(fs.api("callcenter_config agent list"))
        assert not left, f"mod_callcenter not empty after the restart: {len(left)} agents"
        loads = [c for c in changes if " queue " in c]
        rest = [c for c in changes if " queue " not in c]
        load_s, load_replies = pipelined(HOST, ports.esl, esl_password, loads)
        floor_s, replies = pipelined(HOST, ports.esl, esl_password, rest)
        errors = [r for r in load_replies + replies if not r.startswith("+OK")]
        result.update(floor_s=round(load_s + floor_s, 3), floor_agents_tiers_s=round(floor_s, 3),
                      floor_queue_loads_s=round(load_s, 3), floor_commands=len(changes), floor_errors=len(errors),
                      floor_error_sample=errors[:3])
        result["ratio"] = round(full.seconds / (load_s + floor_s), 3)
    finally:
        if engine is not None:
            engine.stop()
        fs.stop()
        server.stop(timeout=1)
        if args.keep:
            result["folder"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
