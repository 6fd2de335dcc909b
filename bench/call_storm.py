"""Call storm on the real switch: the call path at scale, at rising call rates.

Starts FreeSWITCH 1.10 with the test harness (tests/realswitch: the stock configuration plus
freeswitch-conf/install.sh, on loopback, free ports; the RTP range widened to ``--rtp-ports``) and a real
``switchdesk serve`` subprocess (``--webhook-allow-private``), makes one account with two devices (the
callee with its own extension) and points the account's Event Push URL at a receiver in this process
(tests/realswitch/webhook.py). Both phones register (sipp, digest auth). Then, per rate step, one sipp
UAS (the callee: rings, answers at once, stays until FreeSWITCH's BYE) and one sipp UAC (the caller:
INVITE, 407 challenge, INVITE with digest, 200, ACK, BYE after ``--hold`` seconds) run
``rate x --seconds`` calls at ``-r rate -rp 1000``. After the UAC exits, the step waits until FreeSWITCH
has no channel left and the account's outbox is empty (``drain_s``). Per step:

* ``completed`` / ``failed``: the UAC's SuccessfulCall / FailedCall (sipp -trace_stat), with sipp's
  failure kinds, the SIP statuses of the unexpected messages in its error log and the callee's failures;
  ``hangup_causes``: FreeSWITCH's Hangup-Cause of every leg (CHANNEL_HANGUP_COMPLETE);
* ``setup_ms``: sipp's response time of every call (-trace_rtt -rtt_freq 1): from the first INVITE
  (before the 407 challenge) to the 200 OK, p50 / p99 / max;
* ``*_cpu_ms_per_call``: utime+stime (/proc/<pid>/stat) of FreeSWITCH, of ``switchdesk serve`` and of the
  sipp children over the step (calls, then the drain) divided by the completed calls; ``*_core_pct``: the
  same CPU over the step's wall time, in % of one core (switchdesk serves from one thread: ~100 is its
  ceiling); ``machine_busy_pct``: all cores busy (/proc/stat), other work on the box included, and
  ``others_core_pct`` the part of it that is neither FreeSWITCH, switchdesk nor sipp (this process, whose
  own share is ``bench_core_pct``, and whatever else runs on the box); ``sd_runqueue_wait_pct``: time
  switchdesk's main thread was runnable but waited for a CPU (/proc/<pid>/schedstat), and
  ``sd_main_thread_pct`` what that thread was found doing every 50 ms (``running``: on a CPU or runnable;
  else the system call it sleeps in, /proc/<pid>/syscall: ``epoll_wait`` is an idle event loop);
* ``esl_lag_ms``: this process's own event-socket listener, receive time minus Event-Date-Timestamp
  (what FreeSWITCH's event delivery costs); ``sd_event_lag_ms``: switchdesk's
  ``freeswitch.event_lag`` from /api/status (``switchdesk_esl_event_lag_seconds`` in /metrics), sampled every
  second while calls run (now minus the timestamp of the last event its reader took off the socket), median
  and max;
* ``outbox_backlog_max``: GET /api/status ``outbox.backlog`` sampled every second, highest seen;
* ``latency_ms``: p50 / p99 of ``/api/status``, ``/api/user`` and a dialplan lookup, every
  ``--probe-every`` seconds in turn, from a probe process of its own (at real-time priority where the
  machine allows: ``probe_realtime``), against ``idle_latency_ms``, the same probe before the first call;
* ``xml_curl_per_call``: FreeSWITCH's xml_curl requests per call by section (switchdesk's /metrics);
* ``webhook_ms``: webhook delay, arrival at the receiver minus the FreeSWITCH event the call event
  reports (Event-Date-Timestamp in microseconds, from this process's listener: CHANNEL_CREATE or the first
  progress of a leg for ``call:ring``, CHANNEL_ANSWER, CHANNEL_HANGUP_COMPLETE), p50 / p99 / max;
  ``webhook_ts_ms``: arrival minus the event's own ``ts`` (whole seconds, so ~500 ms too high on average);
* ``fs_log`` / ``sd_log``: lines of the two logs written during the step that name a failure
  ("Can't find user", "SIP auth failure", xml_curl errors, ERR/CRIT; switchdesk's WARNING/ERROR), with
  samples.

The baseline is the run itself: both processes' CPU per call measured at every rate in the same run, so
which of switchdesk or FreeSWITCH grows towards a core first is the limit. Loopback only; at most
``sum(rates) x seconds`` calls (plus ``--warmup`` calls first, not counted), each step bounded in time;
a step that fails more than ``--stop-failed`` of its calls ends the run.

Prints one JSON line (``{"skipped": ...}`` when no FreeSWITCH or no sipp can be had).
Run: ``.venv/bin/python bench/call_storm.py [--rates 5,10,15,20,30] [--seconds 15] [--hold 2]
[--workers N] [--realtime] [--webhook-batch N] [--probe-every S]``.
"""
from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.realswitch.esl import EslError  # noqa: E402
from tests.realswitch.freeswitch import HOST, FreeSwitch, Ports, Unavailable, find_install, free_range  # noqa: E402
from tests.realswitch.sipp import SIPP, Phone, answer_scenario, call_scenario  # noqa: E402
from tests.realswitch.switchdesk import Http, Switchdesk  # noqa: E402
from tests.realswitch.webhook import WebhookReceiver  # noqa: E402

PASSWORD = "Storm-phone-pw-1234"
CALLER, CALLEE, EXTENSION = "3001", "3002", "302"
LISTENED = ("CHANNEL_CREATE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_ANSWER",
            "CHANNEL_HANGUP_COMPLETE")
FS_PATTERNS = {"cant_find_user": "Can't find user", "sip_auth_failure": "SIP auth failure",
               "xml_curl": "xml_curl", "err": "[ERR]", "crit": "[CRIT]"}
SD_PATTERNS = {"warning": " WARNING ", "error": " ERROR ", "traceback": "Traceback"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- measurements ------------------------------------------------------------------------------------

def percentiles(values: list[float], scale: float = 1.0) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * scale, 1)

    return {"n": len(ordered), "p50": at(50), "p99": at(99), "max": round(ordered[-1] * scale, 1)}


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process, all its threads (fields 14 and 15 of /proc/<pid>/stat)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def family_cpu_seconds(pid: int | None) -> float:
    """A process and its children (`serve --workers N`: the engine process and its workers) that are running
    now; a worker that exited during the step takes its CPU with it (none did in the recorded runs)."""
    if pid is None:
        return 0.0
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(cpu_seconds(int(child)) for child in children)


def events_of(requests: list) -> list[dict]:
    """The events of the receiver's requests: one per request, or a batch's `events` (event_push_batch > 1)."""
    return [event for _headers, body, _raw in requests
            for event in body.get("events", [body])]


def xml_curl_requests(base: str) -> dict[str, float]:
    """switchdesk's request counters of the xml_curl routes (/metrics, loopback), by route."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = collections.Counter()
    for route, value in re.findall(r'^switchdesk_http_requests_total\{[^}]*route="(/freeswitch/[^"]*)"[^}]*\} (\S+)$',
                                   text, re.M):
        counts[route] += float(value)
    return counts


def children_cpu_seconds(pid: int | None) -> dict[int, float]:
    if pid is None:
        return {}
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return {}
    return {int(child): cpu_seconds(int(child)) for child in children}


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Snapshot:
    def __init__(self, fs_pid: int | None, sd_pid: int | None):
        self.wall = time.monotonic()
        self.fs, self.sd, self.sipp = cpu_seconds(fs_pid), family_cpu_seconds(sd_pid), children_cpu()
        self.sd_engine = cpu_seconds(sd_pid)  # the engine process alone (the same as `sd` without workers)
        self.sd_children = children_cpu_seconds(sd_pid)  # serve --workers: each child by pid
        self.me = time.process_time()  # this process: event listener, webhook receiver, samplers
        self.sd_wait = runqueue_wait(sd_pid) if sd_pid else 0.0
        self.busy, self.total = machine_jiffies()


class EventListener(threading.Thread):
    """Its own event-socket connection: per leg, the first Event-Date-Timestamp of each channel event, and
    the receive lag of every event."""

    def __init__(self, fs: FreeSwitch):
        super().__init__(name="esl-listener", daemon=True)
        self.probe = fs.probe()
        self.probe.timeout = None
        self.lock = threading.Lock()
        self.legs: dict[str, dict[str, float]] = {}
        self.direction: dict[str, str] = {}
        self.lags: list[tuple[str, float, float, str]] = []
        self.causes: list[str] = []
        self.closed = False

    def start(self) -> EventListener:
        self.probe.connect()
        assert self.probe.sock is not None
        self.probe.sock.settimeout(None)
        self.probe.sock.sendall(f"event json {' '.join(LISTENED)}\n\n".encode())
        super().start()
        return self

    def run(self) -> None:
        while True:
            try:
                headers, body = self.probe.read_message()
            except (OSError, EslError, AssertionError):  # closed (the probe drops its socket)
                return
            if headers.get("Content-Type") != "text/event-json":
                continue
            received = time.time()
            event = json.loads(body)
            stamp = int(event.get("Event-Date-Timestamp") or 0) / 1e6
            uid, name = event.get("Unique-ID"), event.get("Event-Name")
            with self.lock:
                if stamp:
                    self.lags.append((name or "?", received - stamp, stamp, uid or ""))
                if uid and name:
                    self.legs.setdefault(uid, {}).setdefault(name, stamp)
                    if name == "CHANNEL_CREATE":
                        self.direction[uid] = event.get("Call-Direction", "")
                    if name == "CHANNEL_HANGUP_COMPLETE":
                        self.causes.append(event.get("Hangup-Cause", "?"))

    def marks(self) -> tuple[int, int]:
        with self.lock:
            return len(self.lags), len(self.causes)

    def source(self, event: str, uid: str) -> float | None:
        """When FreeSWITCH did what the call event reports (epoch seconds)."""
        with self.lock:
            seen = self.legs.get(uid, {})
            if event == "call:answer":
                return seen.get("CHANNEL_ANSWER")
            if event == "call:end":
                return seen.get("CHANNEL_HANGUP_COMPLETE")
            if event == "call:ring":
                if self.direction.get(uid) == "inbound":
                    return seen.get("CHANNEL_CREATE")
                firsts = [seen[n] for n in ("CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_ANSWER")
                          if n in seen]
                return min(firsts) if firsts else None
        return None

    def close(self) -> None:
        self.closed = True
        self.probe.close()


class Sampler(threading.Thread):
    """Every second: the account's outbox backlog and switchdesk's ESL event lag (`freeswitch.event_lag`),
    both from GET /api/status. (/metrics has the lag too, but a scrape costs ~6 ms of switchdesk's CPU:
    once a second it was ~0.2 ms per call at 30 calls/s, where Prometheus scrapes every 15 s or so.)"""

    def __init__(self, http: Http):
        super().__init__(name="sampler", daemon=True)
        self.http = http
        self.stop_event = threading.Event()
        self.backlog: list[int] = []
        self.lag: list[float] = []
        self.errors = 0

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            try:
                status, reply = self.http("GET", "/api/status", timeout=10)
                if status == 200:
                    self.backlog.append(reply["data"]["outbox"]["backlog"])
                    lag = reply["data"].get("freeswitch", {}).get("event_lag")
                    if lag is not None:
                        self.lag.append(float(lag))
            except (OSError, ValueError, KeyError):
                self.errors += 1

    def stop(self) -> None:
        self.stop_event.set()
        self.join(15)


class LatencyProbe:
    """Every `--probe-every` seconds (0.25; 0: off), in turn: GET /api/status, GET /api/user (an ordinary
    API read) and a dialplan lookup as FreeSWITCH's xml_curl sends it (POST /freeswitch/dialplan, basic auth):
    the time to the whole answer, seen from a client on loopback, for the API's and xml_curl's p99 under load
    against idle. Its requests are switchdesk's CPU too: 4 a second, ~0.5-1 ms of CPU per call at 15/s.

    The probe runs in a process of its own (this script with ``--latency-probe``): in this one it would share
    the GIL with the event listener and the webhook receiver, which are busy during a storm, and a reply
    would wait for them (up to the 5 ms switch interval) before its clock stops."""

    def __init__(self, http: Http, base: str, xmlcurl_password: str, domain: str, every: float = 0.25):
        self.config = {"key": http.key, "base": base, "xmlcurl_password": xmlcurl_password, "domain": domain,
                       "every": every}
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--latency-probe"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.config) + "\n")
        self.process.stdin.flush()

    def stop(self) -> dict:
        assert self.process is not None
        out, _ = self.process.communicate(timeout=30)  # closing its stdin ends the probe
        return json.loads(out)


def latency_probe_child() -> None:
    """The probe's own process: the config on the first line of stdin, probes until stdin closes, then the
    figures as one JSON line."""
    config = json.loads(sys.stdin.readline())
    try:  # an instrument FreeSWITCH's real-time threads do not keep off the CPU (when the machine allows)
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        realtime = True
    except OSError:
        realtime = False
    loop = _ProbeLoop(Http(config["base"], config["key"]), config["base"], config["xmlcurl_password"],
                      config["domain"], config["every"])
    loop.start()
    sys.stdin.read()
    print(json.dumps({**loop.stop(), "probe_realtime": realtime}))


class _ProbeLoop(threading.Thread):
    KINDS = ("status", "user", "xml_curl")

    def __init__(self, http: Http, base: str, xmlcurl_password: str, domain: str, every: float = 0.25):
        super().__init__(name="latency", daemon=True)
        self.every = every
        self.http, self.base, self.domain = http, base, domain
        self.auth = "Basic " + base64.b64encode(f"freeswitch:{xmlcurl_password}".encode()).decode()
        self.stop_event = threading.Event()
        self.ms: dict[str, list[float]] = {kind: [] for kind in self.KINDS}
        self.errors = 0

    def _xml_curl(self) -> None:
        body = urllib.parse.urlencode({"section": "dialplan", "Hunt-Context": self.domain,
                                       "Hunt-Destination-Number": EXTENSION, "Caller-Context": self.domain,
                                       "Caller-Destination-Number": EXTENSION}).encode()
        request = urllib.request.Request(self.base + "/freeswitch/dialplan", data=body, method="POST", headers={
            "Authorization": self.auth, "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=10) as response:
            if b"<extension" not in response.read():
                raise ValueError("no extension in the dialplan answer")

    def run(self) -> None:
        turn = 0
        if self.every <= 0:
            return
        while not self.stop_event.wait(self.every):
            kind = self.KINDS[turn % len(self.KINDS)]
            turn += 1
            started = time.perf_counter()
            try:
                if kind == "xml_curl":
                    self._xml_curl()
                else:
                    status, _reply = self.http("GET", "/api/status" if kind == "status" else "/api/user",
                                               timeout=10)
                    if status != 200:
                        raise ValueError(status)
            except (OSError, ValueError):
                self.errors += 1
                continue
            self.ms[kind].append(time.perf_counter() - started)

    def stop(self) -> dict:
        self.stop_event.set()
        self.join(15)
        return {kind: percentiles(values, 1000) for kind, values in self.ms.items()} | {"errors": self.errors}


SYSCALLS = {"0": "read", "1": "write", "7": "poll", "17": "pread64", "18": "pwrite64", "35": "nanosleep",
            "74": "fsync", "75": "fdatasync", "202": "futex", "230": "clock_nanosleep", "232": "epoll_wait",
            "281": "epoll_pwait", "44": "sendto", "45": "recvfrom", "20": "writev"}


def runqueue_wait(pid: int) -> float:
    """Seconds the process's main thread waited for a CPU while runnable (/proc/<pid>/schedstat, field 2)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class Watcher(threading.Thread):
    """Every 50 ms, what switchdesk's main thread is doing: on a CPU or runnable (`running`), or in which
    system call it sleeps (/proc/<pid>/syscall): epoll_wait is an idle event loop, a sleep or futex is a
    wait inside a call (e.g. SQLite's busy handler), fsync / pwrite the disk."""

    def __init__(self, pid: int):
        super().__init__(name="watcher", daemon=True)
        self.pid = pid
        self.stop_event = threading.Event()
        self.seen: collections.Counter = collections.Counter()

    def run(self) -> None:
        while not self.stop_event.wait(0.05):
            try:
                state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                call = Path(f"/proc/{self.pid}/syscall").read_text().split()[0]
            except (OSError, IndexError):
                continue
            self.seen["running" if state == "R" or call == "running" else SYSCALLS.get(call, f"syscall {call}")] += 1

    def stop(self) -> dict:
        self.stop_event.set()
        self.join(5)
        total = sum(self.seen.values()) or 1
        return {name: round(100 * count / total, 1) for name, count in self.seen.most_common(6)}


def log_findings(text: str, patterns: dict[str, str], samples: int = 3) -> dict:
    out: dict = {}
    shown: list[str] = []
    for line in text.splitlines():
        for key, needle in patterns.items():
            if needle in line:
                out[key] = out.get(key, 0) + 1
                if len(shown) < samples and line.strip()[:220] not in shown:
                    shown.append(line.strip()[:220])
    if shown:
        out["samples"] = shown
    return out


# --- sipp ----------------------------------------------------------------------------------------------

def sipp_stats(path: Path) -> dict[str, str]:
    """The last row of a -trace_stat file, by column (cumulative columns end in "(C)")."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    names = lines[0].rstrip(";").split(";")
    return dict(zip(names, lines[-1].rstrip(";").split(";"), strict=False))


def counter(stats: dict[str, str], name: str) -> int:
    try:
        return int(stats.get(f"{name}(C)", "0") or 0)
    except ValueError:
        return 0


def rtt_values(folder: Path) -> list[float]:
    """Response times (ms) of every call: sipp -trace_rtt -rtt_freq 1 writes `date_ms;rtt_ms;rtd_no`."""
    values = []
    for path in folder.glob("*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(";")
            if len(parts) >= 2:
                try:
                    values.append(float(parts[1]))
                except ValueError:
                    continue  # the header
    return values


def error_kinds(path: Path) -> dict:
    """What sipp's error log says, by kind (call ids and times left out), apart from the receive timeout that
    is the caller's own hang-up (`jumping to label`)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    kinds: collections.Counter = collections.Counter()
    for entry in re.split(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ", text)[1:]:
        if "jumping to label" in entry:
            continue
        status = re.search(r"SIP/2.0 (\d{3}[^\r\n']*)", entry)
        entry = re.sub(r"Call-I[dD]: \S+,? ?|'?\d+-\d+@[\d.]+'?", "", entry)
        kinds[entry.strip().splitlines()[0][:100] + (f" [{status.group(1).strip()}]" if status else "")] += 1
    return dict(kinds.most_common(6))


def run_sipp(command: list[str], folder: Path, name: str) -> subprocess.Popen:
    with open(folder / f"{name}.out", "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=folder)


def stop(process: subprocess.Popen, wait: float) -> None:
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)  # sipp: dump the final stats and quit
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# --- one step --------------------------------------------------------------------------------------------

def channels(fs: FreeSwitch) -> int:
    reply = fs.api("show channels count")
    found = re.search(r"(\d+) total", reply)
    return int(found.group(1)) if found else -1


def step(args, rate: float, ctx: dict, seconds: float | None = None, name: str = "") -> dict:
    fs, sd, caller, callee = ctx["fs"], ctx["sd"], ctx["caller"], ctx["callee"]
    hook, listener, account = ctx["hook"], ctx["listener"], ctx["account"]
    seconds = args.seconds if seconds is None else seconds
    calls = max(1, round(rate * seconds))
    folder = ctx["root"] / (name or f"step-{rate:g}")
    folder.mkdir()
    hold_ms = int(args.hold * 1000)
    (folder / "uac.xml").write_text(call_scenario(CALLER, account.domain, EXTENSION, "[media_port]", hold_ms))
    uas_xml = answer_scenario(CALLEE, "[media_port]", args.ring_ms, hold_ms + 30_000)
    if args.ring_ms == 0:
        uas_xml = uas_xml.replace('  <pause milliseconds="0"/>\n', "")
    (folder / "uas.xml").write_text(uas_xml)
    run_for = seconds + args.hold + 60
    common = ["-i", HOST, "-nostdin", "-trace_stat", "-fd", "1", "-trace_err", "-timeout", f"{int(run_for)}s"]
    uas_cmd = [SIPP, "-sf", "uas.xml", "-p", str(callee.sip_port), "-mp", str(callee.media_port),
               "-m", str(calls), "-stf", "uas_stat.csv", "-error_file", "uas_errors.log", *common]
    uac_cmd = [SIPP, f"{HOST}:{ctx['ports'].sip}", "-sf", "uac.xml", "-p", str(caller.sip_port),
               "-mp", str(caller.media_port), "-r", f"{rate:g}", "-rp", "1000", "-m", str(calls),
               "-l", str(int(rate * (args.hold + 10)) + 50), "-au", CALLER, "-ap", PASSWORD,
               "-recv_timeout", "20000", "-trace_rtt", "-rtt_freq", "1", "-stf", "uac_stat.csv",
               "-error_file", "uac_errors.log", *common]

    fs_log_at, sd_log_at = len(fs.log_text()), len(sd.log_text())
    hook_at = len(hook.arrived)
    lag_at, cause_at = listener.marks()
    before = Snapshot(fs.pid(), sd.process.pid)
    lookups_before = xml_curl_requests(sd.base)
    sampler = Sampler(account.http)
    sampler.start()
    latency = LatencyProbe(account.http, sd.base, ctx["xmlcurl_password"], account.domain, args.probe_every)
    latency.start()
    watcher = Watcher(sd.process.pid)
    watcher.start()
    uas = run_sipp(uas_cmd, folder, "uas")
    callee.wait_listening(10)
    started = time.monotonic()
    uac = run_sipp(uac_cmd, folder, "uac")
    stop(uac, run_for + 10)
    calls_s = time.monotonic() - started
    stop(uas, 15)
    # drain: FreeSWITCH without channels, the account's outbox empty, and a call:end received for every leg
    # that ended (switchdesk may still hold events in memory that are not in the outbox yet)
    deadline = time.monotonic() + args.drain_timeout
    left = backlog = -1
    while time.monotonic() < deadline:
        left = channels(fs)
        backlog = account.http("GET", "/api/status")[1].get("data", {}).get("outbox", {}).get("backlog", -1)
        with hook._lock:
            ends = sum(1 for body in events_of(hook.received[hook_at:]) if body["event"] == "call:end")
        if left == 0 and backlog == 0 and ends >= listener.marks()[1] - cause_at:
            break
        time.sleep(0.2)
    drain_s = time.monotonic() - started - calls_s
    sampler.stop()
    latency_ms = latency.stop()
    sd_states = watcher.stop()
    after = Snapshot(fs.pid(), sd.process.pid)
    lookups = {route: n - lookups_before.get(route, 0) for route, n in xml_curl_requests(sd.base).items()}

    uac_stats, uas_stats = sipp_stats(folder / "uac_stat.csv"), sipp_stats(folder / "uas_stat.csv")
    completed, failed = counter(uac_stats, "SuccessfulCall"), counter(uac_stats, "FailedCall")
    failures = {name[6:-3]: int(value) for name, value in uac_stats.items()
                if name.startswith("Failed") and name.endswith("(C)") and name != "FailedCall(C)"
                and value.isdigit() and int(value)}
    wall = after.wall - before.wall
    busy = (after.busy - before.busy) / max(1, after.total - before.total)
    per_call = 1000 / completed if completed else 0

    # webhooks of this step: delay from the FreeSWITCH event they report, and from their own ts
    with hook._lock:
        received = [(body, arrived) for (_h, request, _r), arrived in zip(hook.received[hook_at:],
                                                                          hook.arrived[hook_at:], strict=True)
                    for body in request.get("events", [request])]
    precise: dict[str, list[float]] = collections.defaultdict(list)
    coarse, kinds = [], collections.Counter()
    for body, arrived in received:
        kinds[body["event"]] += 1
        coarse.append(arrived - body["ts"])
        if body["event"].startswith("call:"):
            source = listener.source(body["event"], body["data"]["id"])
            if source:
                precise[body["event"]].append(arrived - source)
    with listener.lock:
        lags = listener.lags[lag_at:]
        causes = collections.Counter(listener.causes[cause_at:])
    if args.keep:  # the raw figures, for a closer look
        (folder / "esl_lags.json").write_text(json.dumps(lags))
        (folder / "webhooks.json").write_text(json.dumps([[arrived, body] for body, arrived in received]))

    return {
        "rate": rate, "calls": calls, "completed": completed, "failed": failed,
        "failed_kinds": failures, "sipp_errors": error_kinds(folder / "uac_errors.log"),
        "callee_failed": counter(uas_stats, "FailedCall"), "callee_completed": counter(uas_stats, "SuccessfulCall"),
        "hangup_causes": dict(causes.most_common()),
        "calls_s": round(calls_s, 1), "drain_s": round(drain_s, 1), "left_channels": left, "left_backlog": backlog,
        "setup_ms": percentiles(rtt_values(folder)),
        "fs_cpu_ms_per_call": round((after.fs - before.fs) * per_call, 2),
        "sd_cpu_ms_per_call": round((after.sd - before.sd) * per_call, 2),
        "sd_engine_cpu_ms_per_call": round((after.sd_engine - before.sd_engine) * per_call, 2),
        # each child (the HTTP workers in pid order, the webhook sender last: it is started last)
        "sd_children_cpu_ms_per_call": [round((after.sd_children[pid] - before.sd_children[pid]) * per_call, 2)
                                        for pid in sorted(before.sd_children) if pid in after.sd_children],
        # FreeSWITCH's xml_curl requests per call, by section (the probe's dialplan lookups included)
        "xml_curl_per_call": {route.rsplit("/", 1)[-1]: round(n / completed, 2) for route, n in sorted(lookups.items())
                              if n} if completed else None,
        "sipp_cpu_ms_per_call": round((after.sipp - before.sipp) * per_call, 2),
        "fs_core_pct": round(100 * (after.fs - before.fs) / wall, 1),
        "sd_core_pct": round(100 * (after.sd - before.sd) / wall, 1),
        "machine_busy_pct": round(100 * busy, 1),
        "others_core_pct": round(100 * (busy * (os.cpu_count() or 1) - (after.fs - before.fs + after.sd - before.sd
                                                                       + after.sipp - before.sipp) / wall), 1),
        "bench_core_pct": round(100 * (after.me - before.me) / wall, 1),
        "sd_runqueue_wait_pct": round(100 * (after.sd_wait - before.sd_wait) / wall, 1),
        "sd_main_thread_pct": sd_states,
        "esl_lag_ms": percentiles([lag for _, lag, *_ in lags], 1000),
        "esl_lag_ms_by_event": {name: percentiles([lag for n, lag, *_ in lags if n == name], 1000)
                                for name in sorted({n for n, *_ in lags})},
        "sd_event_lag_ms": ({"median": round(sorted(sampler.lag)[len(sampler.lag) // 2] * 1000, 1),
                             "max": round(max(sampler.lag) * 1000, 1), "samples": len(sampler.lag)}
                            if sampler.lag else None),
        "outbox_backlog_max": max(sampler.backlog, default=None),
        "latency_ms": latency_ms,
        "webhook_events": dict(kinds),
        "webhook_ms": {name: percentiles(values, 1000) for name, values in sorted(precise.items())},
        "webhook_all_ms": percentiles([v for values in precise.values() for v in values], 1000),
        "webhook_ts_ms": percentiles(coarse, 1000),
        "fs_log": log_findings(fs.log_text()[fs_log_at:], FS_PATTERNS),
        "sd_log": log_findings(sd.log_text()[sd_log_at:], SD_PATTERNS),
    }


# --- the run ----------------------------------------------------------------------------------------------

def main() -> None:
    if sys.argv[1:] == ["--latency-probe"]:
        return latency_probe_child()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default=os.environ.get("BENCH_RATES", "5,10,15,20,30"),
                        help="calls per second of each step, comma-separated (default 5,10,15,20,30)")
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 15)),
                        help="seconds of calls per step (calls = rate x seconds; default 15)")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds the caller stays after the answer (2)")
    parser.add_argument("--ring-ms", type=int, default=0, help="ms the callee rings before answering (0)")
    parser.add_argument("--rtp-ports", type=int, default=2000,
                        help="size of FreeSWITCH's RTP port range (2 per leg; default 2000)")
    parser.add_argument("--drain-timeout", type=float, default=60,
                        help="seconds a step waits for the channels to end and the outbox to empty (60)")
    parser.add_argument("--stop-failed", type=float, default=0.5,
                        help="skip the higher rates once a step failed this share of its calls (0.5)")
    parser.add_argument("--warmup", type=int, default=5, help="calls before the first step, not counted (5)")
    parser.add_argument("--probe-every", type=float, default=0.25,
                        help="seconds between latency probes during the steps (0.25; 0: none, for CPU per call alone)")
    parser.add_argument("--idle-seconds", type=float, default=6.0,
                        help="seconds of API and xml_curl latency probing before the first call (6)")
    parser.add_argument("--workers", type=int, default=0,
                        help="serve --workers N: the API and xml_curl in N worker processes (0: one process)")
    parser.add_argument("--realtime", action="store_true",
                        help="serve --realtime: switchdesk's event loops at real-time priority (engine.priority)")
    parser.add_argument("--webhook-batch", type=int, default=1,
                        help="the account's event_push_batch: events per webhook request (1: the vendor's format)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (logs, sipp files)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    result: dict = {"bench": "call_storm"}
    try:
        install = find_install()
    except Unavailable as exc:
        print(json.dumps({**result, "skipped": str(exc)}))
        return
    if SIPP is None:
        print(json.dumps({**result, "skipped": "sipp is not installed (apt-get install sip-tester)"}))
        return

    root = Path(tempfile.mkdtemp(prefix="call_storm-"))
    ports = Ports(rtp_start=free_range(args.rtp_ports), rtp_size=args.rtp_ports)
    esl_password, xmlcurl_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    fs = FreeSwitch(install, root / "fs", ports, esl_password, xmlcurl_password)
    sd = Switchdesk(root, ports.http, ports.outbound, ports.esl, esl_password, xmlcurl_password,
                    webhook_allow_private=True)
    sd.workers = args.workers
    sd.realtime = args.realtime
    hook = listener = None
    result.update(python=platform.python_version(), cpus=os.cpu_count(), load_before=os.getloadavg()[0],
                  rates=rates, seconds=args.seconds, hold_s=args.hold, ring_ms=args.ring_ms,
                  rtp_ports=args.rtp_ports, workers=args.workers, webhook_batch=args.webhook_batch,
                  realtime=args.realtime)
    try:
        fs.prepare()
        admin_key = sd.init("default.test")
        sd.start()  # first, as on a real box: FreeSWITCH asks it for callcenter.conf while loading
        fs.start()
        sd.wait_connected(Http(sd.base, admin_key))
        result["freeswitch"] = fs.api("version").strip().split(" (")[0]
        account = sd.create_account("Storm", f"storm-{secrets.token_hex(3)}.test", "storm")
        hook = WebhookReceiver()
        account.http.ok("PUT", "/api/account", {"event_push_url": hook.url,
                                                "webhook_secret": "storm-webhook-secret-0123",
                                                "event_push_batch": args.webhook_batch})
        for username, fields in ((CALLER, {"cid_num": CALLER}), (CALLEE, {"extension": EXTENSION})):
            account.http.post("/api/device", {"name": f"Desk {username}", "sip_username": username,
                                              "sip_password": PASSWORD, **fields})
        caller = Phone(root / "phones", ports.sip, account.domain, CALLER, PASSWORD)
        callee = Phone(root / "phones", ports.sip, account.domain, CALLEE, PASSWORD)
        for phone in (caller, callee):
            run = phone.register()
            if not run.ok:
                raise RuntimeError(f"{phone.username} did not register: {run.report()}" + fs.log_tail(20))
        listener = EventListener(fs).start()
        ctx = {"fs": fs, "sd": sd, "caller": caller, "callee": callee, "hook": hook, "listener": listener,
               "account": account, "root": root, "ports": ports, "xmlcurl_password": xmlcurl_password}
        idle = LatencyProbe(account.http, sd.base, xmlcurl_password, account.domain, args.probe_every or 0.25)
        idle.start()
        time.sleep(args.idle_seconds)  # the same probe with no calls: what "unchanged" compares with
        result["idle_latency_ms"] = idle.stop()
        if args.warmup:  # FreeSWITCH's first calls after start deliver their events ~0.5 s late
            warm = step(args, 5, ctx, seconds=args.warmup / 5, name="warmup")
            result["warmup"] = {k: warm[k] for k in ("calls", "completed", "failed", "setup_ms", "esl_lag_ms")}
        steps = []
        for rate in rates:
            steps.append(step(args, rate, ctx))
            last = steps[-1]
            print(f"rate {rate:g}/s: {last['completed']} completed, {last['failed']} failed, setup p99 "
                  f"{(last['setup_ms'] or {}).get('p99')} ms, fs {last['fs_core_pct']} % sd {last['sd_core_pct']} %"
                  f" of a core, webhook p99 {(last['webhook_all_ms'] or {}).get('p99')} ms, latency p99 ms "
                  f"{ {k: (last['latency_ms'][k] or {}).get('p99') for k in ('status', 'user', 'xml_curl')} }",
                  file=sys.stderr)
            if last["failed"] > args.stop_failed * last["calls"]:
                result["stopped_after"] = rate
                break
        result["steps"] = steps
    finally:
        if listener is not None:
            listener.close()
        sd.stop()
        fs.stop()
        if hook is not None:
            hook.close()
        if args.keep:
            result["folder"] = str(root)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
