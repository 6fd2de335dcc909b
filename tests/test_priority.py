"""What keeps serve's event loop from stalling: `--realtime` (engine.priority: the loop at SCHED_RR 1, everything
it starts at normal priority) and a settled heap (engine.server.settle_heap).

Where this machine grants real-time priority (root, CAP_SYS_NICE or RLIMIT_RTPRIO), the loop must get it
and the threads and processes it starts must not; where it does not, switchdesk must say so and serve on.
The worker processes of `serve --workers --realtime` are checked in tests/test_workers.py.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import priority
from tests.support import realtime_granted

ROOT = Path(__file__).resolve().parent.parent

# in a process of its own: the test process itself must not end up at real-time priority
CHILD = """
import json, logging, os, subprocess, sys, threading
import gevent
from engine import priority
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
applied = priority.apply(True)
pool = gevent.get_hub().threadpool.apply(priority.is_realtime)  # where the long jobs run
plain = {}
thread = threading.Thread(target=lambda: plain.update(rt=priority.is_realtime()))
thread.start(); thread.join()
child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                       capture_output=True, text=True).stdout.strip()
print(json.dumps({"applied": applied, "loop": priority.is_realtime(), "threadpool": pool,
                  "thread": plain["rt"], "child_policy": int(child)}))
"""


def test_the_loop_is_raised_and_what_it_starts_is_not():
    import json

    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    if realtime_granted():
        assert seen["applied"] is True and seen["loop"] is True, (seen, run.stderr)
        assert "runs at real-time priority (SCHED_RR 1)" in run.stderr
    else:
        assert seen["applied"] is False and seen["loop"] is False
        assert "stays at normal priority" in run.stderr and "LimitRTPRIO" in run.stderr
    # never at real-time priority: gevent's threadpool, a thread, a subprocess (SCHED_OTHER is 0)
    assert seen["threadpool"] is False and seen["thread"] is False and seen["child_policy"] == os.SCHED_OTHER


def test_refused_it_says_why_and_serves_on(monkeypatch, caplog):
    def refuse(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.WARNING, logger="switchdesk"):
        assert priority.apply(True) is False
    assert "stays at normal priority (Operation not permitted)" in caplog.text
    assert "CAP_SYS_NICE" in caplog.text and "LimitRTPRIO=1" in caplog.text


def test_off_it_changes_nothing(monkeypatch):
    monkeypatch.setattr(os, "sched_setscheduler", lambda *_a: pytest.fail("asked for a priority when off"))
    assert priority.apply(False) is False


def test_the_environment_flag_is_checked(tmp_path):
    run = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--db", f"sqlite:///{tmp_path / 'x.db'}"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "SWITCHDESK_REALTIME": "maybe"})
    assert run.returncode == 2 and "SWITCHDESK_REALTIME must be 1 or 0" in run.stderr
    assert not (tmp_path / "x.db").exists()  # refused before anything was made


def test_a_settled_heap_is_not_walked_again():
    """serve freezes what start-up made (engine.server.settle_heap): a full collection then walks only what
    came after, not the ~100,000 objects of the loaded app (a 17-33 ms stall of the loop each time)."""
    code = ("import gc, time; from api import create_app; app = create_app({}); "
            "from engine.server import settle_heap; "
            "t = time.perf_counter(); gc.collect(); before = time.perf_counter() - t; "
            "settle_heap(); t = time.perf_counter(); gc.collect(); after = time.perf_counter() - t; "
            "print(gc.get_freeze_count(), before, after)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr
    frozen, before, after = run.stdout.split()
    assert int(frozen) > 50_000 and float(after) < float(before) / 5
