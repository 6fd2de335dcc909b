"""switchdesk as users run it: `switchdesk init`, `account create`, `apikey` and `serve` as subprocesses,
and a small HTTP client for its API. Nothing here imports switchdesk."""
from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def switchdesk_command() -> list[str]:
    """SWITCHDESK_TEST_COMMAND (e.g. an installed build: "/opt/switchdesk/bin/switchdesk"), else the console
    script of the environment running the tests (.venv/bin/switchdesk), else PATH's."""
    named = os.environ.get("SWITCHDESK_TEST_COMMAND")
    if named:
        return shlex.split(named)
    beside = Path(sys.executable).parent / "switchdesk"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("switchdesk")
    if not found:
        raise RuntimeError("the switchdesk console script is not installed (pip install -e .)")
    return [found]


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHDESK_")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["SWITCHDESK_SECRET_KEY"] = "real-switch-test-" + secrets.token_hex(16)
    env.update(extra)
    return env


class Http:
    """JSON requests to the served API, authenticated with an API key. Returns (status, reply)."""

    def __init__(self, base: str, key: str | None = None):
        self.base, self.key = base.rstrip("/"), key

    def __call__(self, method: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"{}")
            except ValueError:
                return exc.code, {"raw": raw.decode(errors="replace")}

    def ok(self, method: str, path: str, body: dict | None = None) -> dict:
        """The reply's `data`; fails the test on anything but 200 with success true."""
        status, reply = self(method, path, body)
        assert status == 200 and reply.get("success") is True, (method, path, status, reply)
        return reply.get("data")

    def get(self, path: str) -> dict:
        return self.ok("GET", path)

    def post(self, path: str, body: dict | None = None) -> dict:
        return self.ok("POST", path, body or {})


@dataclass
class Account:
    name: str
    domain: str
    admin: str
    key: str
    http: Http


class Switchdesk:
    """A `switchdesk serve` process on a fresh database, wired to the session's FreeSWITCH."""

    def __init__(self, root: Path, http_port: int, outbound_port: int, esl_port: int, esl_password: str,
                 xmlcurl_password: str, webhook_allow_private: bool = False):
        self.root = root
        self.webhook_allow_private = webhook_allow_private  # serve --webhook-allow-private: loopback receivers
        self.db = f"sqlite:///{root / 'switchdesk.db'}"
        self.http_port, self.outbound_port, self.esl_port = http_port, outbound_port, esl_port
        self.env = _clean_env({"SWITCHDESK_ESL_PASSWORD": esl_password,
                               "SWITCHDESK_XMLCURL_PASSWORD": xmlcurl_password})
        self.command = switchdesk_command()
        self.log_file = root / "switchdesk.log"
        self.recordings = root / "recordings"  # FreeSWITCH (same machine, same user) writes here too
        self.process: subprocess.Popen | None = None
        self.base = f"http://{HOST}:{http_port}"
        self.box_name = "sd-box-a"  # serve --hostname: the `host` of the recordings it makes
        # serve --workers: the API and xml_curl in worker processes (engine.workers); 0 runs it all in one
        self.workers = int(os.environ.get("SWITCHDESK_TEST_WORKERS", "2"))
        # serve --realtime, as the shipped systemd unit runs it (engine.priority); 0 leaves it off
        self.realtime = os.environ.get("SWITCHDESK_TEST_REALTIME", "1") != "0"
        self.start_seconds = 0.0

    def second_box(self, http_port: int, domains: str) -> subprocess.Popen:
        """Another `switchdesk serve` on the same database (API only, its own name and folders, the same
        secret key), limited to `domains` so that it delivers no webhook of the others; answering once
        this returns."""
        command = [*self.command, "serve", "--db", self.db, "--listen", f"{HOST}:{http_port}", "--no-esl",
                   "--hostname", "sd-box-b", "--domains", domains, "--recordings-dir", str(self.root / "box-b-rec"),
                   "--media-dir", str(self.root / "box-b-media")]
        with open(self.root / "box-b.log", "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root,
                                       start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if Http(f"http://{HOST}:{http_port}")("GET", "/api/health", timeout=2)[0] == 200:
                    return process
            except OSError:
                pass
            time.sleep(0.05)
        process.kill()
        raise RuntimeError("the second box did not answer /api/health: "
                           + (self.root / "box-b.log").read_text(errors="replace")[-2000:])

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """A switchdesk subcommand on this database; fails the test with its stderr when it fails."""
        result = subprocess.run([*self.command, *args, "--db", self.db], capture_output=True, text=True,
                                env=self.env, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"switchdesk {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def init(self, domain: str) -> str:
        """`switchdesk init --domain`: account 1; returns its admin's API key (printed once)."""
        out = self.cli("init", "--domain", domain).stdout
        for line in out.splitlines():
            if line.strip().startswith("api key:"):
                return line.split(":", 1)[1].strip()
        raise RuntimeError(f"switchdesk init printed no API key: {out!r}")

    def create_account(self, name: str, domain: str, admin: str) -> Account:
        """`switchdesk account create NAME --domain D --admin-username U`: prints the admin's API key."""
        key = self.cli("account", "create", name, "--domain", domain, "--admin-username", admin).stdout.strip()
        return Account(name, domain, admin, key, Http(self.base, key))

    def new_api_key(self, username: str) -> str:
        return self.cli("apikey", username).stdout.strip()

    def start(self, timeout: float = 30) -> None:
        started = time.monotonic()
        command = [*self.command, "serve", "--db", self.db, "--listen", f"{HOST}:{self.http_port}",
                   "--esl", f"{HOST}:{self.esl_port}", "--outbound-listen", f"{HOST}:{self.outbound_port}",
                   "--log-level", "INFO", "--recordings-dir", str(self.recordings),
                   "--hostname", self.box_name, "--advertise-url", self.base,  # another box may fetch its files
                   "--workers", str(self.workers)]
        if self.webhook_allow_private:
            command.append("--webhook-allow-private")
        if self.realtime:
            command.append("--realtime")
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"switchdesk serve exited {self.process.returncode}" + self.log_tail())
            try:
                status, _ = Http(self.base)("GET", "/api/health", timeout=2)
                if status == 200:
                    self.start_seconds = time.monotonic() - started
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"switchdesk serve did not answer /api/health in {timeout:.0f} s" + self.log_tail())

    def wait_connected(self, http: Http, timeout: float = 30) -> dict:
        """Until /api/status says the engine is connected to FreeSWITCH; returns that status."""
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = http.get("/api/status")
            if status.get("freeswitch", {}).get("connected"):
                return status
            time.sleep(0.1)
        raise RuntimeError(f"switchdesk's engine not connected to FreeSWITCH: {status}" + self.log_tail())

    def stop(self, timeout: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"\n--- last {len(tail)} lines of {self.log_file} ---\n" + "\n".join(tail) if tail else ""
