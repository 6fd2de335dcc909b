"""PostgreSQL under gevent: a slow query on one greenlet must not stop the others.

psycopg 3 picks its wait function when it is imported: with `select` monkey
patched it waits through gevent's poll, otherwise in C, which would freeze
the whole process for the length of every query. `switchdesk serve` patches
before anything imports psycopg; this runs the same order in a fresh
interpreter (patching the test process itself would change every other test)
and measures how often a ticker greenlet ran during `pg_sleep`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("SWITCHDESK_TEST_DB", "")

pytestmark = pytest.mark.skipif(not PG_URL.startswith("postgres"),
                                reason="needs SWITCHDESK_TEST_DB=postgresql://... (the PostgreSQL run of .ci/run)")

PROBE = r"""
import json, sys, time
from gevent import monkey
monkey.patch_all()
import gevent
sys.path.insert(0, sys.argv[2])
from engine.store import db

database = db.bind(sys.argv[1])
ticks = []

def ticker():
    while True:
        ticks.append(time.monotonic())
        gevent.sleep(0.01)

def slow():
    with database.connection_context():
        database.execute_sql("SELECT pg_sleep(1.0)")

def connect_and_query():
    # a second connection opened and used while the first waits
    with database.connection_context():
        return database.execute_sql("SELECT 1").fetchone()[0]

t = gevent.spawn(ticker)
gevent.sleep(0)
start = time.monotonic()
s = gevent.spawn(slow)
gevent.sleep(0.1)
quick_start = time.monotonic()
q = gevent.spawn(connect_and_query)
q.join()
quick = time.monotonic() - quick_start
s.join()
elapsed = time.monotonic() - start
t.kill()
during = [x for x in ticks if start <= x <= start + elapsed]
import psycopg.waiting
print(json.dumps({"elapsed": elapsed, "ticks": len(during), "quick": quick, "quick_ok": q.value == 1,
                  "slow_ok": s.successful(), "wait": psycopg.waiting.wait.__name__}))
"""


def test_slow_query_does_not_block_other_greenlets():
    out = subprocess.run([sys.executable, "-c", PROBE, PG_URL, str(ROOT)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["slow_ok"] and result["quick_ok"]
    assert result["wait"] != "wait_c"  # the C wait cannot yield to gevent
    assert result["elapsed"] >= 1.0
    # a 10 ms ticker over >= 1 s: ~100 ticks when the loop is free, ~1 when pg_sleep blocks it
    assert result["ticks"] >= 50, result
    # another greenlet connected and queried while pg_sleep was running
    assert result["quick"] < 0.5, result
