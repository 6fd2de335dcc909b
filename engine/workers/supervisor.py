"""The engine process starts, watches and stops its workers (see engine.workers)."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import gevent

from engine.workers import ENV

log = logging.getLogger("switchdesk.workers")

BACKOFF = (1.0, 30.0)  # first and longest wait before starting again a worker that exited
HEALTHY_AFTER = 60.0  # a worker that ran this long starts again at once if it exits


@dataclass
class WorkerSpec:
    """What a worker needs to serve as the engine process would: handed over in its environment
    (not its command line, which every local user can read: it holds the xml_curl password)."""

    index: int
    fd: int  # the listening socket, inherited
    hub: str  # engine.workers.hub's socket
    engine: str  # engine.workers.proxy's socket
    token: str
    metrics_dir: str
    parent: int  # the engine process's pid
    origin: str  # engine.store.changes.ORIGIN of the engine process: its workers NOTIFY as the same process
    settings: dict[str, Any] = field(default_factory=dict)  # engine.server.serve's settings
    role: str = "http"  # "http": the API and xml_curl; "deliver": the webhook sender (engine.events.delivery)

    def dumps(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


class Workers:
    """N worker processes and the webhook sender's, each started again when it exits (with a growing delay
    while they keep failing)."""

    def __init__(self, count: int, spec: WorkerSpec) -> None:
        self.count = count
        self.spec = spec
        self.processes: dict[int, subprocess.Popen] = {}  # index -> process; index `count` is the sender
        self.restarts = 0
        self._stopping = False
        self._greenlets: list[gevent.Greenlet] = []

    def start(self) -> Workers:
        self._greenlets = [gevent.spawn(self._keep, index) for index in range(self.count + 1)]
        return self

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values() if p.poll() is None]

    def name(self, index: int) -> str:
        return "webhook sender" if index == self.count else f"worker {index}"

    def _spawn(self, index: int) -> subprocess.Popen:
        spec = WorkerSpec(**{**asdict(self.spec), "index": index,
                             "role": "deliver" if index == self.count else "http"})
        env = dict(os.environ)
        env[ENV] = spec.dumps()
        env["PROMETHEUS_MULTIPROC_DIR"] = spec.metrics_dir  # read when prometheus_client is imported
        return subprocess.Popen([sys.executable, "-m", "engine.workers"], pass_fds=(spec.fd,), env=env,
                                close_fds=True)

    def _keep(self, index: int) -> None:
        delay = BACKOFF[0]
        while not self._stopping:
            started = time.monotonic()
            try:
                process = self.processes[index] = self._spawn(index)
            except OSError as exc:
                log.error("%s could not start: %s", self.name(index), exc)
            else:
                log.info("%s started (pid %d)", self.name(index), process.pid)
                code = process.wait()
                if self._stopping:
                    return
                log.error("%s (pid %d) exited with %s; starting it again", self.name(index), process.pid,
                          code if code >= 0 else f"signal {-code}")
                self.restarts += 1
            if time.monotonic() - started >= HEALTHY_AFTER:
                delay = BACKOFF[0]
                continue
            gevent.sleep(delay)
            delay = min(delay * 2, BACKOFF[1])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to every worker (each finishes its requests), SIGKILL to those still running after `timeout`."""
        self._stopping = True
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in %.0f s; killing it", process.pid, timeout)
                process.kill()
                process.wait()
        for greenlet in self._greenlets:
            greenlet.kill(block=False)


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when `parent`, which started it, dies (a killed `serve` leaves no
    worker holding its port); elsewhere a watcher greenlet notices the new parent within a second."""
    if os.getppid() != parent:
        os._exit(1)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # it died before the call
                os._exit(1)
            return
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            gevent.sleep(1.0)
        os._exit(1)

    gevent.spawn(watch)
