"""`serve --workers N` (engine.workers): the API and xml_curl in worker processes, the engine in its own.

One scenario drives a real `serve --workers 2` subprocess against the FreeSWITCH emulator: what one worker
commits is served by every worker at once and reaches the engine; engine-bound routes (metrics, calls)
are answered by the engine process through either worker, with the client's own address; `/api/status`
comes from the engine's snapshot; a killed worker is started again; SIGTERM stops them all. The real
switch's suite runs its `serve` with workers too (tests/realswitch/switchdesk.py).
"""
from __future__ import annotations

import base64
import hashlib
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import gevent
import pytest
from geventhttpclient import HTTPClient

from engine import priority
from tests.fakeswitch.callcenter import CallCenter
from tests.fakeswitch.server import FakeSwitch
from tests.support import realtime_granted, wait_until

ROOT = Path(__file__).resolve().parents[1]
XML_PASSWORD = "xml-w0rkers"
XML_AUTH = {"Authorization": "Basic " + base64.b64encode(f"freeswitch:{XML_PASSWORD}".encode()).decode(),
            "Content-Type": "application/x-www-form-urlencoded"}

# Views that reach the engine but are served by every worker all the same: status from the engine's
# snapshot, the statistics stream from touches relayed by engine.workers.hub.
SERVED_BY_WORKERS = {"system.status", "stats.stats_stream"}


def test_every_view_that_reaches_the_engine_is_relayed_to_it():
    """A view added later that uses the engine without `engine=True` would fail in a worker (no engine there)."""
    from api import create_app

    app = create_app({"TESTING": True})
    uses = re.compile(r'"ENGINE"')
    tainted: dict[str, set[str]] = {}

    def reaching(module) -> set[str]:
        if module.__name__ not in tainted:
            functions = {name: fn for name, fn in vars(module).items()
                         if inspect.isfunction(fn) and fn.__module__ == module.__name__}
            sources = {name: inspect.getsource(getattr(fn, "__wrapped__", fn)) for name, fn in functions.items()}
            found = {name for name, text in sources.items() if uses.search(text)}
            grew = True
            while grew:  # and the functions that call those, in the same module
                grew = False
                for name, text in sources.items():
                    if name not in found and any(re.search(rf"\b{f}\(", text) for f in found):
                        found.add(name)
                        grew = True
            tainted[module.__name__] = found
        return tainted[module.__name__]

    missing, relayed = [], []
    for name, view in app.view_functions.items():
        fn = getattr(view, "__wrapped__", view)
        if getattr(view, "engine_bound", False):
            relayed.append(name)
        elif fn.__name__ in reaching(sys.modules[fn.__module__]) and name not in SERVED_BY_WORKERS:
            missing.append(name)
    assert not missing, f"views that use the engine but are not declared engine=True: {missing}"
    assert {"originate.originate", "calls.hangup", "metrics.metrics", "voicemail.list_messages"} <= set(relayed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port: int, key: str = "") -> None:
        self.port = port
        self.key = key

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        client = HTTPClient("127.0.0.1", self.port, connection_timeout=5, network_timeout=30)
        try:
            response = client.request(method, path, body=body, headers={
                **({"Authorization": f"Bearer {self.key}"} if self.key else {}), **(headers or {})})
            return response.status_code, response.read()
        finally:
            client.close()

    def json(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
        body = json.dumps(payload).encode() if payload is not None else None
        status, data = self.call(method, path, body, {"Content-Type": "application/json"} if body else None)
        return status, json.loads(data)

    def directory(self, domain: str, user: str) -> bytes:
        fields = {"section": "directory", "action": "sip_auth", "user": user, "domain": domain}
        status, data = self.call("POST", "/freeswitch/directory", urllib.parse.urlencode(fields).encode(), XML_AUTH)
        assert status == 200
        return data


def a1(user: str, domain: str, password: str) -> bytes:
    return hashlib.md5(f"{user}:{domain}:{password}".encode()).hexdigest().encode()


def _pids_of_workers(parent: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


PG_URL = os.environ.get("SWITCHDESK_TEST_DB", "")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    """A database of the scenario's own: a SQLite file, or (in the PostgreSQL run) a PostgreSQL database
    created for it and dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sd.db'}"
        return
    if not PG_URL.startswith("postgres"):
        pytest.skip("needs SWITCHDESK_TEST_DB=postgresql://... (the PostgreSQL run of .ci/run)")
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(PG_URL)
    name = f"{parts.path.lstrip('/')}_workers_{os.getpid()}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield urlunsplit(parts._replace(path="/" + name))
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fs():
    switch = FakeSwitch(password="ClueCon").start()
    switch.callcenter = CallCenter(lambda name: {"strategy": "longest-idle-agent"})
    yield switch
    switch.stop()


def test_serve_with_workers(tmp_path, fs, database_url):
    url = database_url
    domain = "workers.test"
    init = subprocess.run([sys.executable, "-m", "engine.cli", "init", "--db", url, "--domain", domain],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    key = next(line.split()[-1] for line in init.stdout.splitlines() if "api key:" in line)
    port = _free_port()
    env = {**os.environ, "SWITCHDESK_XMLCURL_PASSWORD": XML_PASSWORD, "SWITCHDESK_ESL_PASSWORD": "ClueCon"}
    log_file = tmp_path / "serve.log"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--db", url, "--listen", f"127.0.0.1:{port}",
             "--esl", f"127.0.0.1:{fs.port}", "--outbound-listen", f"127.0.0.1:{_free_port()}", "--workers", "2",
             "--realtime"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    api = Client(port, key)

    def log_text() -> str:
        return log_file.read_text(errors="replace")

    try:
        wait_until(lambda: _pids_of_workers(proc.pid) and _answers(api), timeout=30)
        wait_until(lambda: len(_pids_of_workers(proc.pid)) == 3, timeout=30)  # and the webhook sender's
        workers = [int(pid) for pid in re.findall(r"worker \d started \(pid (\d+)\)", log_text())]
        assert len(workers) == 2 and "webhook sender started" in log_text(), log_text()
        # --realtime: every process raises its own loop (each started at normal priority: reset on fork)
        raised = log_text().count("runs at real-time priority")
        if realtime_granted():
            wait_until(lambda: log_text().count("runs at real-time priority") == 4, timeout=10)
            assert all(priority.is_realtime(pid) for pid in [proc.pid, *_pids_of_workers(proc.pid)])
        else:
            assert raised == 0 and "stays at normal priority" in log_text()
        # /api/status from the engine process's snapshot, through a worker
        seen: list[dict] = []

        def synced() -> bool:  # connected, and the first sync done (each worker's snapshot is up to 0.5 s old)
            seen.append(api.json("GET", "/api/status")[1]["data"])
            return bool(seen[-1]["freeswitch"]["connected"] and seen[-1]["sync"]["at"])

        wait_until(synced, timeout=15)
        assert seen[-1]["engine"] is True and seen[-1]["outbox"]["backlog"] == 0

        # a device created and changed through one worker is served by both at once (answers kept in memory)
        code, created = api.json("POST", "/api/device", {"name": "Desk", "sip_username": "desk.1",
                                                          "sip_password": "first1secret22"})
        assert code == 200, created
        for _ in range(20):  # each lookup lands on either worker; both keep the answer
            assert a1("desk.1", domain, "first1secret22") in api.directory(domain, "desk.1")
        code, _ = api.json("PUT", f"/api/device/{created['data']['id']}", {"sip_password": "second2secret33"})
        assert code == 200
        for _ in range(20):
            answer = api.directory(domain, "desk.1")
            assert a1("desk.1", domain, "second2secret33") in answer and a1("desk.1", domain, "first1secret22") \
                not in answer

        # a queue created in a worker reaches mod_callcenter through the engine process
        code, queue = api.json("POST", "/api/cc_queue", {"name": "Sales", "strategy": "longest-idle-agent",
                                                         "time_base_score": "system"})
        assert code == 200, queue
        fs.wait_for_command(lambda c: f"queue load {queue['data']['id']}" in c.line, timeout=10)

        # engine-bound routes are served by the engine process: the ESL gauges, the workers' summed requests
        code, text = Client(port).call("GET", "/metrics")
        metrics = text.decode()
        assert code == 200 and 'switchdesk_esl_connected{connection="events"} 1.0' in metrics
        lookups = re.search(r'switchdesk_http_requests_total\{method="POST",route="/freeswitch/directory",'
                            r'status="200"\} (\d+)', metrics)
        assert lookups and int(lookups.group(1)) == 40
        # with the engine's checks: an unknown device is refused there, in the envelope
        code, refused = api.json("POST", "/api/originate", {"destination": "100", "device_id": 99999})
        assert code in (400, 404) and refused["success"] is False and refused["msg"]
        # the relay's socket takes no request without the run's token
        folder = re.search(r"workers: their sockets are in (\S+)", log_text()).group(1)
        assert "not a worker" in _engine_socket_without_token(Path(folder))

        # a worker that dies is started again; the API answers meanwhile through the other
        os.kill(workers[0], signal.SIGKILL)
        wait_until(lambda: len(set(_pids_of_workers(proc.pid)) - {workers[0]}) == 3, timeout=15)
        assert _answers(api)
        assert "exited with signal 9; starting it again" in log_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log_text()
    assert not _pids_of_workers(proc.pid)
    assert key not in log_text() and XML_PASSWORD not in log_text()


def _answers(api: Client) -> bool:
    try:
        return api.call("GET", "/api/user")[0] == 200
    except OSError:
        return False


def _engine_socket_without_token(folder: Path) -> str:
    """A request straight to the engine process's private socket, as another local process might send it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(folder / "engine.sock"))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    finally:
        sock.close()
    return data.decode(errors="replace")
