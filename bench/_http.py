"""Shared helpers of the HTTP benchmarks: servers in subprocesses, a keep-alive load generator."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, path: str = "/", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def spawn(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def load(port: int, paths: list[str], requests: int, concurrency: int = 50, headers: dict | None = None) -> dict:
    """`requests` GETs over `concurrency` keep-alive connections; throughput and latency percentiles."""
    import gevent
    from gevent import monkey

    assert monkey.is_module_patched("socket"), "call gevent.monkey.patch_all() first"
    latencies: list[float] = []
    per_conn = requests // concurrency
    errors = 0

    def worker(offset: int) -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(per_conn):
            path = paths[(offset + i) % len(paths)]
            start = time.perf_counter()
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                errors += 1
        conn.close()

    start = time.perf_counter()
    gevent.joinall([gevent.spawn(worker, i * 7) for i in range(concurrency)], raise_error=True)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "errors": errors,
    }
