"""Event dispatch for an ESL connection, kept apart from the socket.

How events reach their handlers (in order, off the reader; a bounded queue
whose overflow blocks the reader so TCP backpressure reaches FreeSWITCH; slow
handlers in a bounded pool) changes for reasons of its own, independently of
how frames are read or replies paired with commands.  :class:`EventDispatcher`
is mixed into :class:`~engine.esl.connection.ESLConnection`, which owns the
greenlets and feeds the queue from its reader.

**Batches:** events already waiting in the queue when the dispatcher takes
one may run together inside one context of ``batch`` (a callable set by the
owner, e.g. one database transaction for all of them instead of one each),
as long as each event's key is in ``batch_keys``; an event of another key
ends the run and is dispatched alone, after it.  The order never changes.
A batch is only what has queued up, at most ``BATCH_MAX`` events, so at a
low rate every event is dispatched alone as before and under load the cost
per event falls.

**Sessions:** ``session`` (a callable set by the owner, e.g. keeping one
database connection) is entered when the dispatcher takes an event while
idle and left once no event came for ``SESSION_IDLE`` seconds, or when the
dispatcher ends: under a steady stream the events share what it holds
instead of each batch taking and returning it.

**Overflow policy:** when the queue is full the reader blocks, so it stops
reading the socket; nothing is dropped, and every time the reader had to wait
is counted in ``stats["queue_full_waits"]``.  Handlers run on the dispatcher
greenlet, in event order, never on the reader; a handler registered with
``spawn=True`` runs in its own greenlet from a bounded pool, so a slow handler
delays nothing else.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any

import gevent.pool
import gevent.queue

from .protocol import Event

__all__ = ["EventDispatcher", "Handler"]

log = logging.getLogger("switchdesk.esl")

Handler = Callable[[Event], None]
Batch = Callable[[], AbstractContextManager[Any]]

BATCH_MAX = 64  # events in one batch at most (one transaction's worth: a few milliseconds)
SESSION_IDLE = 1.0  # seconds without an event before the dispatcher leaves its session
_NONE_HELD = object()


class EventDispatcher:
    """The handler registry, the bounded event queue and the dispatcher loop.

    Expects ``name``, ``stats`` and ``_alive`` from the connection it is mixed into.
    """

    name: str
    stats: collections.Counter[str]
    _alive: bool
    #: Entered around a run of waiting events whose keys are in ``batch_keys`` (see the module's docstring).
    #: If entering it fails, the events are dispatched one by one without it; if leaving it fails (a failed
    #: commit), the failure is logged and counted in ``stats["batch_failures"]``.
    batch: Batch | None = None
    batch_keys: Collection[str] = ()
    #: Entered around a busy spell of the dispatcher (see the module's docstring). If entering it fails the
    #: events are dispatched without it; a failure to leave it is logged.
    session: Batch | None = None

    def _init_dispatch(self, *, queue_size: int, handler_pool_size: int) -> None:
        self._queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=queue_size)
        self._handler_pool = gevent.pool.Pool(handler_pool_size)
        self._handlers: dict[str, list[tuple[Handler, bool]]] = {}

    # -- handlers ----------------------------------------------------------

    def on_event(self, name: str, handler: Handler, *, spawn: bool = False) -> None:
        """Call ``handler(event)`` for events named ``name`` (or CUSTOM subclass, or ``*``).

        Handlers run in event order on the dispatcher greenlet and must hand
        work off quickly; ``spawn=True`` runs each call in its own greenlet
        (bounded pool) for handlers that may block.  ``"log"`` receives
        ``log/data`` frames and ``"DISCONNECT"`` the disconnect notices.
        """
        entries = self._handlers.setdefault(name, [])
        if all(h is not handler for h, _ in entries):
            entries.append((handler, spawn))

    def off_event(self, name: str, handler: Handler) -> None:
        entries = self._handlers.get(name, [])
        self._handlers[name] = [(h, s) for h, s in entries if h is not handler]
        if not self._handlers[name]:
            del self._handlers[name]

    # -- queueing ----------------------------------------------------------

    def _enqueue(self, event: Event) -> None:
        q = self._queue
        if q.full():
            # Overflow policy: block the reader (TCP backpressure), count it.
            self.stats["queue_full_waits"] += 1
        q.put(event)

    @property
    def queue_size(self) -> int:
        return self._queue.qsize()

    # -- dispatching -------------------------------------------------------

    def _dispatch_loop(self) -> None:
        q = self._queue
        held: Any = _NONE_HELD  # taken off the queue while gathering a batch, not part of it: next
        session: AbstractContextManager[Any] | None = None  # entered while busy
        try:
            while True:
                if held is not _NONE_HELD:
                    event, held = held, _NONE_HELD
                elif session is None:
                    event = q.get()
                else:
                    try:
                        event = q.get(timeout=SESSION_IDLE)
                    except gevent.queue.Empty:  # idle: let go of what the session holds
                        self._leave_session(session)
                        session = None
                        continue
                if event is None:
                    if not self._alive and q.empty():
                        return
                    continue
                if session is None and self.session is not None:
                    session = self._enter_session()
                if self.batch is None or q.empty() or not self._batchable(event):
                    self._dispatch(event)
                    continue
                events = [event]
                while len(events) < BATCH_MAX and not q.empty():
                    following = q.get_nowait()
                    if following is None or not self._batchable(following):
                        held = following
                        break
                    events.append(following)
                if len(events) == 1:
                    self._dispatch(event)
                else:
                    self._dispatch_batch(events)
        finally:
            if session is not None:
                self._leave_session(session)

    def _enter_session(self) -> AbstractContextManager[Any] | None:
        assert self.session is not None
        try:
            context = self.session()
            context.__enter__()
        except Exception:
            self.stats["session_failures"] += 1
            log.exception("%s: the dispatcher's session could not begin; dispatching without it", self.name)
            return None
        return context

    def _leave_session(self, context: AbstractContextManager[Any]) -> None:
        try:
            context.__exit__(None, None, None)
        except Exception:
            self.stats["session_failures"] += 1
            log.exception("%s: the dispatcher's session failed to end", self.name)

    def _batchable(self, event: Event) -> bool:
        return event.format in ("json", "plain") and event.key in self.batch_keys

    def _dispatch_batch(self, events: list[Event]) -> None:
        batch = self.batch
        assert batch is not None
        try:
            context = batch()
            context.__enter__()
        except Exception:
            log.exception("%s: a batch of %d events could not begin; dispatching them one by one", self.name,
                          len(events))
            for event in events:
                self._dispatch(event)
            return
        try:
            for event in events:
                self._dispatch(event)
        except BaseException as exc:  # _dispatch catches handler errors: this is a kill or a bug of ours
            if not context.__exit__(type(exc), exc, exc.__traceback__):
                raise
            return
        try:
            context.__exit__(None, None, None)
        except Exception:
            self.stats["batch_failures"] += 1
            log.exception("%s: a batch of %d events failed to commit", self.name, len(events))
        self.stats["batches"] += 1
        self.stats["batched"] += len(events)

    def _handlers_for(self, event: Event) -> list[tuple[Handler, bool]]:
        if event.format == "disconnect":
            key = "DISCONNECT"
        elif event.format == "log":
            key = "log"
        else:
            key = event.key
        found = self._handlers.get(key, [])
        star = self._handlers.get("*")
        if star and key not in ("DISCONNECT", "log"):
            found = found + star
        return found

    def _dispatch(self, event: Event) -> None:
        for handler, spawn in self._handlers_for(event):
            if spawn:
                self._handler_pool.spawn(self._run_handler, handler, event)
            else:
                self._run_handler(handler, event)
        self.stats["dispatched"] += 1

    def _run_handler(self, handler: Handler, event: Event) -> None:
        try:
            handler(event)
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("%s: handler %r failed on %r", self.name, handler, event)
