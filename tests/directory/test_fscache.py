"""FreeSWITCH keeps our directory answers (`cacheable`); engine.directory.fscache flushes them whenever a
device or an account changes, on every new command connection, and again after xml_curl's timeout."""
from __future__ import annotations

import time

import pytest

from engine.directory import fscache, views
from engine.engine import Engine
from engine.store import changes


def wait_until(check, timeout: float = 5.0) -> None:
    import gevent

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        gevent.sleep(0.01)


@pytest.fixture
def engine(switch):
    eng = Engine("127.0.0.1", switch.port, "ClueCon", resync_every=3600).start()
    assert eng.commands.wait_connected(10)
    yield eng
    eng.stop()


def flushes(switch) -> int:
    return getattr(switch, "xml_flushes", 0)


def test_a_connection_flushes_and_a_device_change_flushes_twice(engine, switch, monkeypatch):
    monkeypatch.setattr(fscache, "XML_CURL_TIMEOUT", 0.0)  # the second flush after 1 s instead of 6
    wait_until(lambda: flushes(switch) >= 1)  # the new command connection
    base = flushes(switch)
    changes.notify("device", 1, [7])
    wait_until(lambda: flushes(switch) >= base + 1, 2)
    wait_until(lambda: flushes(switch) >= base + 2, 3)  # once more, after answers in flight have landed


def test_runtime_notices_flush_nothing(engine, switch):
    wait_until(lambda: flushes(switch) >= 1)
    base = flushes(switch)
    for kind in ("agent", "tier", "pause", "timegroup"):
        changes.notify(kind, 1, [3])
    import gevent

    gevent.sleep(0.2)
    assert flushes(switch) == base


def test_the_ttl_is_bounded_and_can_be_turned_off(monkeypatch, database, heard):
    monkeypatch.setenv(fscache.ENV, "0")
    assert fscache.cacheable() is None
    monkeypatch.setenv(fscache.ENV, "99999999999")
    assert fscache.cacheable() == "86400000"
    monkeypatch.setenv(fscache.ENV, "nonsense")
    assert fscache.cacheable() == str(fscache.DEFAULT_MS)
    monkeypatch.setenv(views.ENV, "0")  # the views off: nothing may be kept anywhere
    assert fscache.cacheable() is None
