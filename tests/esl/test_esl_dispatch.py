"""Batches on the dispatcher: what is waiting runs inside one context, in order, and nothing is lost."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

import gevent
import pytest

from engine.esl.dispatch import BATCH_MAX, EventDispatcher
from engine.esl.protocol import Event


class Dispatcher(EventDispatcher):
    def __init__(self) -> None:
        self.name = "test"
        self.stats = collections.Counter()
        self._alive = True
        self._init_dispatch(queue_size=1000, handler_pool_size=4)


def ev(name: str, n: int) -> Event:
    return Event({"Event-Name": name, "n": str(n)}, None, "json")


def run(d: Dispatcher, events: list[Event | None]) -> None:
    """Queue everything first (so it is all waiting), then let the dispatcher drain it."""
    for event in events:
        d._queue.put(event)
    d._alive = False
    d._queue.put(None)
    gevent.spawn(d._dispatch_loop).join(timeout=5)


@pytest.fixture
def traced() -> Iterator[tuple[Dispatcher, list]]:
    d, trace = Dispatcher(), []

    @contextlib.contextmanager
    def batch() -> Iterator[None]:
        trace.append("begin")
        try:
            yield
        except BaseException:
            trace.append("rollback")
            raise
        trace.append("commit")

    d.batch, d.batch_keys = batch, {"A"}
    for name in ("A", "B"):
        d.on_event(name, lambda e: trace.append(f"{e.name}{e['n']}"))
    yield d, trace


def test_waiting_events_of_batch_keys_run_in_one_context_in_order(traced) -> None:
    d, trace = traced
    run(d, [ev("A", 1), ev("A", 2), ev("A", 3), ev("B", 4), ev("A", 5), ev("A", 6), ev("A", 7)])
    # B ends the run and is dispatched alone, after it; the last A is alone too (nothing waits behind it)
    assert trace == ["begin", "A1", "A2", "A3", "commit", "B4", "begin", "A5", "A6", "A7", "commit"]
    assert d.stats["dispatched"] == 7 and d.stats["batches"] == 2 and d.stats["batched"] == 6


def test_an_event_alone_is_dispatched_without_the_context(traced) -> None:
    d, trace = traced
    run(d, [ev("A", 1)])
    assert trace == ["A1"] and d.stats["batches"] == 0


def test_a_batch_is_bounded(traced) -> None:
    d, trace = traced
    run(d, [ev("A", n) for n in range(BATCH_MAX + 3)])
    assert trace.count("begin") == 2 and trace.index("commit") == BATCH_MAX + 1
    assert [t for t in trace if t.startswith("A")] == [f"A{n}" for n in range(BATCH_MAX + 3)]


def test_a_failing_handler_does_not_end_the_batch(traced) -> None:
    d, trace = traced

    def boom(e: Event) -> None:
        if e["n"] == "2":
            raise RuntimeError("handler bug")
    d.on_event("A", boom)
    run(d, [ev("A", 1), ev("A", 2), ev("A", 3)])
    assert trace == ["begin", "A1", "A2", "A3", "commit"]
    assert d.stats["handler_errors"] == 1


def test_a_batch_that_cannot_begin_is_dispatched_one_by_one(traced) -> None:
    d, trace = traced

    def refused():
        raise OSError("database is locked")
    d.batch = refused
    run(d, [ev("A", 1), ev("A", 2)])
    assert trace == ["A1", "A2"] and d.stats["dispatched"] == 2


def test_a_failed_commit_is_counted_and_the_dispatcher_goes_on(traced) -> None:
    d, trace = traced

    @contextlib.contextmanager
    def failing_commit() -> Iterator[None]:
        yield
        raise OSError("disk I/O error")
    d.batch = failing_commit
    run(d, [ev("A", 1), ev("A", 2), ev("B", 3), ev("A", 4)])
    assert trace == ["A1", "A2", "B3", "A4"]
    assert d.stats["batch_failures"] == 1 and d.stats["dispatched"] == 4



def test_a_busy_spell_runs_inside_one_session_left_when_idle(traced, monkeypatch) -> None:
    """The owner's session (SQLite: the dispatcher keeps its connection) is entered once for events that keep
    coming, left after SESSION_IDLE without one, entered again for the next spell, and left when the
    dispatcher ends."""
    from engine.esl import dispatch

    monkeypatch.setattr(dispatch, "SESSION_IDLE", 0.1)
    d, trace = traced

    @contextlib.contextmanager
    def session() -> Iterator[None]:
        trace.append("open")
        yield
        trace.append("close")
    d.session = session
    loop = gevent.spawn(d._dispatch_loop)
    for n in range(5):  # a spell: an event every 20 ms
        d._queue.put(ev("B", n))
        gevent.sleep(0.02)
    gevent.sleep(0.25)  # idle: the session is left
    d._queue.put(ev("B", 9))
    gevent.sleep(0.02)
    d._alive = False
    d._queue.put(None)
    loop.join(timeout=5)
    assert trace == ["open", "B0", "B1", "B2", "B3", "B4", "close", "open", "B9", "close"]


def test_a_session_that_cannot_begin_does_not_stop_the_events(traced) -> None:
    d, trace = traced

    def refused():
        raise OSError("unable to open database file")
    d.session = refused
    run(d, [ev("B", 1), ev("A", 2), ev("A", 3)])
    assert trace == ["B1", "begin", "A2", "A3", "commit"] and d.stats["session_failures"] >= 1
