"""Find (or unpack) a FreeSWITCH, give it a configuration built with freeswitch-conf/install.sh, run it.

The configuration is the install's stock `etc/freeswitch`, then `freeswitch-conf/install.sh` exactly as
users run it, then test-only tweaks: everything on 127.0.0.1 (no STUN), free ports, random passwords,
higher session limits. Nothing here imports switchdesk.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.realswitch.esl import EslError, EslProbe, wait_for_esl

REPO = Path(__file__).resolve().parents[2]
OVERLAY = REPO / "freeswitch-conf"
SHARED_INSTALL = REPO.parent / "shared" / "freeswitch" / "install"
CACHE_ROOT = Path(os.environ.get("SWITCHDESK_FREESWITCH_CACHE", "/var/tmp"))
HOST = "127.0.0.1"
HOW_TO_ENABLE = ("real FreeSWITCH tests need FreeSWITCH: set SWITCHDESK_FREESWITCH=<install folder with "
                 "bin/freeswitch> or put shared/freeswitch beside the repo (../shared/freeswitch/install)")


class Unavailable(Exception):
    """No FreeSWITCH (or no sipp) can be had here: the tests skip, with HOW_TO_ENABLE."""


# --- finding FreeSWITCH ------------------------------------------------------------------------------

def find_install() -> Path:
    """The install folder: SWITCHDESK_FREESWITCH, else the shared tarball unpacked once into a cache."""
    named = os.environ.get("SWITCHDESK_FREESWITCH")
    if named:
        folder = Path(named)
        if not (folder / "bin" / "freeswitch").exists():
            raise Unavailable(f"SWITCHDESK_FREESWITCH={named} has no bin/freeswitch")
        return folder
    if not SHARED_INSTALL.exists():
        raise Unavailable(HOW_TO_ENABLE)
    tarballs = sorted(SHARED_INSTALL.parent.glob("freeswitch-*.tar.xz"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in tarballs)).hexdigest()[:12]
    dest = CACHE_ROOT / f"switchdesk-freeswitch-{digest}"
    if (dest / ".installed").exists():
        return dest
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with open(CACHE_ROOT / f"switchdesk-freeswitch-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be unpacking it right now
        if (dest / ".installed").exists():
            return dest
        shutil.rmtree(dest, ignore_errors=True)
        result = subprocess.run([str(SHARED_INSTALL), str(dest)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not (dest / "bin" / "freeswitch").exists():
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise Unavailable(f"{SHARED_INSTALL} {dest} failed ({last}); {HOW_TO_ENABLE}")
        (dest / ".installed").write_text(result.stdout)
    return dest


# --- ports -------------------------------------------------------------------------------------------

_taken: set[int] = set()


def _free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A port free for both TCP and UDP on loopback, never handed out twice in this session."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in _taken and _free(port):
            _taken.add(port)
            return port
    raise RuntimeError("no free port")


def free_range(size: int) -> int:
    """The first of `size` consecutive free ports (even, for RTP), from a random place in 20000-60000."""
    for _ in range(200):
        start = random.randrange(20000, 60000 - size) & ~1
        ports = range(start, start + size)
        if not _taken.intersection(ports) and all(_free(p) for p in ports):
            _taken.update(ports)
            return start
    raise RuntimeError(f"no {size} free consecutive ports")


# --- configuration -----------------------------------------------------------------------------------

@dataclass
class Ports:
    esl: int = field(default_factory=free_port)
    sip: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)      # switchdesk's API and xml_curl endpoints
    outbound: int = field(default_factory=free_port)  # switchdesk's outbound-socket server (check-in)
    rtp_start: int = field(default_factory=lambda: free_range(200))
    rtp_size: int = 200  # ports from rtp_start (a leg takes two); bench/call_storm.py passes a bigger free_range

    @property
    def rtp_end(self) -> int:
        return self.rtp_start + self.rtp_size - 2  # even, as FreeSWITCH wants (it pairs RTP with RTCP)


def _sub(path: Path, pattern: str, replacement: str, count: int = 1) -> None:
    text = path.read_text()
    new, n = re.subn(pattern, replacement, text, count=count)
    if n == 0:
        raise RuntimeError(f"{path}: {pattern!r} not found; the stock configuration changed?")
    path.write_text(new)


def _param(path: Path, name: str, value: str) -> None:
    _sub(path, rf'(<param name="{re.escape(name)}" value=")[^"]*(")', rf"\g<1>{value}\g<2>")


def _set_var(path: Path, name: str, value: str) -> None:
    _sub(path, rf'<X-PRE-PROCESS cmd="(?:stun-)?set" data="{re.escape(name)}=[^"]*"/>',
         f'<X-PRE-PROCESS cmd="set" data="{name}={value}"/>')


def build_config(install: Path, conf: Path, ports: Ports, esl_password: str, xmlcurl_password: str) -> None:
    """Stock configuration + install.sh (as users run it) + the test-only tweaks."""
    shutil.copytree(install / "etc" / "freeswitch", conf)
    result = subprocess.run(["bash", str(OVERLAY / "install.sh"), str(conf)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"freeswitch-conf/install.sh failed: {result.stderr.strip()}")
    # vars.xml: loopback everywhere; the stock STUN lookups cannot work here (mod_sofia: Invalid ext-rtp-ip)
    vars_xml = conf / "vars.xml"
    _sub(vars_xml, r"<include>", f'<include>\n  <X-PRE-PROCESS cmd="set" data="local_ip_v4={HOST}"/>')
    for name in ("domain", "external_rtp_ip", "external_sip_ip"):
        _set_var(vars_xml, name, HOST)
    _set_var(vars_xml, "console_loglevel", "warning")
    # switchdesk_vars.xml: what a user sets there (passwords, switchdesk's URL)
    sd_vars = conf / "switchdesk_vars.xml"
    _set_var(sd_vars, "switchdesk_esl_password", esl_password)
    _set_var(sd_vars, "switchdesk_xmlcurl_password", xmlcurl_password)
    _set_var(sd_vars, "switchdesk_url", f"http://{HOST}:{ports.http}/freeswitch")
    _param(conf / "autoload_configs" / "event_socket.conf.xml", "listen-port", str(ports.esl))
    profile = conf / "sip_profiles" / "switchdesk.xml"
    _param(profile, "sip-port", str(ports.sip))
    _param(profile, "ext-sip-ip", HOST)
    _param(profile, "ext-rtp-ip", HOST)
    switch = conf / "autoload_configs" / "switch.conf.xml"
    _param(switch, "max-sessions", "5000")
    _param(switch, "sessions-per-second", "1000")
    _param(switch, "loglevel", "info")
    _sub(switch, r"(<settings>)", rf'\1\n    <param name="rtp-start-port" value="{ports.rtp_start}"/>'
                                   rf'\n    <param name="rtp-end-port" value="{ports.rtp_end}"/>')


# --- the process -------------------------------------------------------------------------------------

class FreeSwitch:
    """One FreeSWITCH for the session, under `root` (conf, log, db, run, temp, sounds...)."""

    def __init__(self, install: Path, root: Path, ports: Ports, esl_password: str, xmlcurl_password: str):
        self.install, self.root, self.ports = install, root, ports
        self.esl_password, self.xmlcurl_password = esl_password, xmlcurl_password
        self.dirs = {name: root / name for name in ("conf", "log", "db", "run", "temp", "sounds", "storage",
                                                    "recordings", "cache")}
        self.start_seconds = 0.0
        self._pid: int | None = None

    @property
    def conf(self) -> Path:
        return self.dirs["conf"]

    @property
    def log_file(self) -> Path:
        return self.dirs["log"] / "freeswitch.log"

    def prepare(self) -> None:
        build_config(self.install, self.conf, self.ports, self.esl_password, self.xmlcurl_password)
        for folder in self.dirs.values():
            folder.mkdir(parents=True, exist_ok=True)

    def pid(self) -> int | None:
        """FreeSWITCH's pid (from RUN/freeswitch.pid, remembered: the file goes when it stops)."""
        if self._pid is None:
            try:
                self._pid = int((self.dirs["run"] / "freeswitch.pid").read_text().strip())
            except (OSError, ValueError):
                return None
        return self._pid

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None:
            return True  # not written yet
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def start(self, timeout: float = 60) -> None:
        started = time.monotonic()
        command = [str(self.install / "bin" / "freeswitch"), "-nc", "-nonat", "-nonatmap"]
        for name, folder in self.dirs.items():
            command += [f"-{name}", str(folder)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}"
                               + self.log_tail())
        try:
            wait_for_esl(HOST, self.ports.esl, self.esl_password, timeout, alive=self.alive)
            self.wait_profile(timeout - (time.monotonic() - started))
        except (TimeoutError, EslError) as exc:
            tail = self.log_tail()  # before the shutdown's own lines
            self.stop()
            raise RuntimeError(f"FreeSWITCH did not come up: {exc}" + tail) from None
        self.start_seconds = time.monotonic() - started

    def restart(self, wipe: tuple[str, ...] = (), timeout: float = 60) -> list[str]:
        """Stop, delete the named files of the db folder (e.g. ``callcenter.db``: mod_callcenter's agents and
        tiers), start again. Returns the names that existed and were deleted."""
        self.stop()
        self._pid = None
        (self.dirs["run"] / "freeswitch.pid").unlink(missing_ok=True)  # stale after a SIGKILL
        wiped = []
        for name in wipe:
            for path in (self.dirs["db"] / name, self.dirs["db"] / f"{name}-journal", self.dirs["db"] / f"{name}-wal"):
                if path.exists():
                    path.unlink()
                    wiped.append(path.name)
        self.start(timeout)
        return wiped

    def wait_profile(self, timeout: float) -> None:
        """Until the switchdesk SIP profile is RUNNING (mod_sofia starts it in its own thread)."""
        deadline = time.monotonic() + timeout
        reply = ""
        with self.probe() as probe:
            while time.monotonic() < deadline:
                reply = probe.api("sofia status")
                if re.search(r"^\s*switchdesk\s+profile\s+\S+\s+RUNNING", reply, re.M):
                    return
                time.sleep(0.05)
        raise TimeoutError(f"SIP profile switchdesk not running: {reply.strip()[:300]}")

    def probe(self) -> EslProbe:
        return EslProbe(HOST, self.ports.esl, self.esl_password)

    def api(self, command: str) -> str:
        with self.probe() as probe:
            return probe.api(command)

    def stop(self, grace: float = 2) -> None:
        """`fsctl shutdown`, then SIGTERM, then SIGKILL. A clean shutdown of this build logs its last line
        within ~1 s but the process lingers ~5 s more; the session's folders are thrown away, so after
        `grace` seconds it is killed."""
        pid = self.pid()
        with contextlib.suppress(OSError, EslError), \
                EslProbe(HOST, self.ports.esl, self.esl_password, timeout=3) as probe:
            probe.sock.sendall(b"api fsctl shutdown\n\n")  # no reply comes once it goes down
        if pid is None:
            return
        for sig, wait in ((None, grace), (signal.SIGTERM, 0.5), (signal.SIGKILL, 5)):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"\n--- last {len(tail)} lines of {self.log_file} ---\n" + "\n".join(tail) if tail else ""
