"""Reconnect, watchdog, callbacks and status of ESLSupervisor against the emulator."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import gevent
import gevent.event
import pytest

from engine.esl.errors import ConnectionLost
from engine.esl.supervisor import ESLSupervisor
from tests.fakeswitch import FakeSwitch
from tests.support import wait_until


@pytest.fixture
def fs() -> Iterator[FakeSwitch]:
    switch = FakeSwitch().start()
    yield switch
    switch.stop()


@pytest.fixture
def supervisors():
    made: list[ESLSupervisor] = []

    def make(fs: FakeSwitch, **kwargs) -> ESLSupervisor:
        kwargs.setdefault("backoff_initial", 0.01)
        kwargs.setdefault("backoff_max", 0.05)
        sup = ESLSupervisor(fs.host, fs.port, "ClueCon", **kwargs)
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.stop(timeout=2)


def test_connects_resubscribes_and_reports_status(fs: FakeSwitch, supervisors) -> None:
    sup = supervisors(fs, events=["CUSTOM callcenter::info"])
    connects = []
    sup.on_connect(lambda client: connects.append(client.api("hostname")))
    sup.start()
    assert sup.wait_connected(5)
    st = sup.status()
    assert st.connected and st.version.startswith("FreeSWITCH Version 1.10.12") and st.since
    assert connects == ["vm"]
    sub = fs.wait_for_command("event json")
    assert sub.line == "event json HEARTBEAT BACKGROUND_JOB CUSTOM callcenter::info"


def test_reconnects_after_drop_and_fails_pending(fs: FakeSwitch, supervisors) -> None:
    sup = supervisors(fs)
    connected = []
    lost = []
    sup.on_connect(lambda c: connected.append(c))
    sup.on_disconnect(lost.append)
    sup.start()
    assert sup.wait_connected(5)
    first = sup.require_client()
    fs.stall()
    pending = gevent.spawn(first.api, "version", 30)
    fs.wait_for_command("api version")
    fs.drop_all()
    with pytest.raises(ConnectionLost):
        pending.get(timeout=2)
    fs.unstall()
    wait_until(lambda: len(connected) == 2)
    assert sup.require_client() is not first and sup.require_client().api("hostname") == "vm"
    assert lost and sup.status().reconnects == 1


def test_backoff_while_down_then_recovers(fs: FakeSwitch, supervisors) -> None:
    sup = supervisors(fs)
    sup.start()
    assert sup.wait_connected(5)
    fs.down()
    wait_until(lambda: sup.status().attempts >= 4)
    st = sup.status()
    assert not st.connected and st.last_error
    fs.up()
    assert sup.wait_connected(5)


def test_backoff_is_capped_and_jittered(fs: FakeSwitch) -> None:
    sup = ESLSupervisor(fs.host, fs.port, "x", backoff_initial=0.5, backoff_max=30)
    delays = [sup.backoff(n) for n in range(12)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(15 <= d <= 30 for d in delays[8:])
    assert len({round(sup.backoff(3), 6) for _ in range(20)}) > 1


def test_heartbeat_watchdog_drops_a_silent_connection(fs: FakeSwitch, supervisors) -> None:
    sup = supervisors(fs, heartbeat_interval=0.1, heartbeat_misses=2)
    connected = []
    sup.on_connect(connected.append)
    sup.start()
    assert sup.wait_connected(5)
    # Heartbeats keep it alive...
    for _ in range(5):
        fs.emit_heartbeat()
        gevent.sleep(0.08)
    assert len(connected) == 1
    assert sup.status().event_lag is not None and sup.status().event_lag < 1
    # ...silence (a stalled switch with TCP still up) makes it reconnect.
    wait_until(lambda: len(connected) >= 2, timeout=3)
    assert "watchdog" in (sup.status().last_error or "")


def test_stop_interrupts_backoff(fs: FakeSwitch, supervisors) -> None:
    fs.down()
    sup = supervisors(fs, backoff_initial=30, backoff_max=60)
    sup.start()
    wait_until(lambda: sup.status().attempts >= 1)
    started = time.monotonic()
    sup.stop(timeout=5)
    assert time.monotonic() - started < 1.0


def test_failing_on_connect_callback_is_logged_not_fatal(fs: FakeSwitch, supervisors, caplog) -> None:
    sup = supervisors(fs)
    ran = []

    def broken(client) -> None:
        raise RuntimeError("resync bug")

    sup.on_connect(broken)
    sup.on_connect(lambda c: ran.append(1))
    sup.start()
    assert sup.wait_connected(5)
    assert ran == [1] and "resync bug" in caplog.text


def test_no_freeswitch_is_said_once_per_outage_then_retried_quietly(fs: FakeSwitch, supervisors, caplog) -> None:
    """A box without FreeSWITCH yet logged a warning every few seconds for ever."""
    fs.down()
    sup = supervisors(fs)
    with caplog.at_level(logging.DEBUG, logger="switchdesk.esl"):
        sup.start()

        def ours() -> list[logging.LogRecord]:  # the supervisor's own lines, not another test's leftovers
            return [r for r in caplog.records if r.name == "switchdesk.esl"]

        def quiet_retries() -> int:
            return len([r for r in ours() if r.levelno == logging.DEBUG and "cannot reach" in r.getMessage()])

        # the attempt is counted before its line is logged: wait for the lines themselves
        wait_until(lambda: sup.status().attempts >= 6 and quiet_retries() >= 5)
        warnings = [r for r in ours() if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "cannot reach FreeSWITCH" in warnings[0].getMessage()
        assert "--no-esl" in warnings[0].getMessage()
        fs.up()
        assert sup.wait_connected(5)
        caplog.clear()
        fs.down()  # a new outage is said once again
        wait_until(lambda: any(r.levelno >= logging.WARNING for r in ours()))
        wait_until(lambda: sup.status().attempts >= 12)
        assert len([r for r in ours()
                    if r.levelno >= logging.WARNING and "cannot reach" in r.getMessage()]) <= 1
