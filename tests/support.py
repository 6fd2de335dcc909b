"""Helpers shared by the tests that run the engine against the emulator."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent

from engine.callcenter import fsconfig, sync
from engine.store.models import Queue, User


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll cooperatively (other greenlets run meanwhile) until `predicate()` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        gevent.sleep(step)


def realtime_granted() -> bool:
    """Whether this machine lets a process take SCHED_RR 1 (root, CAP_SYS_NICE, RLIMIT_RTPRIO): tried in a
    child, which then exits, so the test process itself never runs at real-time priority."""
    probe = subprocess.run([sys.executable, "-c", "import os; os.sched_setscheduler(0, os.SCHED_RR, "
                            "os.sched_param(1))"], capture_output=True, timeout=30)
    return probe.returncode == 0


def provider(name: str) -> dict[str, str] | None:
    """The emulator's callcenter.conf for a queue name, read from the database as xml_curl would."""
    parsed = fsconfig.parse_name(name)
    queue = Queue.get_or_none(Queue.id == parsed[0]) if parsed else None
    if queue is None:
        return None
    from engine.media import library

    return dict(fsconfig.queue_params(queue, library.paths_of(queue.account_id, fsconfig.media_ids(queue))))


def listed(fs: Any, what: str) -> dict[Any, dict[str, str]]:
    """The emulator's `callcenter_config <what> list`, keyed by name (or (queue, agent) for tiers)."""
    return {row.get("name") or (row["queue"], row["agent"]): row
            for row in sync.parse_table(fs.callcenter.command(f"{what} list"))}


def make_agent(account: Any, username: str, **fields: Any) -> User:
    """An agent user created directly in the database (its password is never used)."""
    key = username.lower()
    values = {"name": username, "username": username, "username_key": key, "email": f"{key}@agents.test",
              "email_key": f"{key}@agents.test", "password_hash": "x", "is_agent": True, **fields}
    return User.create(account=account, **values)
