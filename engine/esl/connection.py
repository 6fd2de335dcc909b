"""The socket-level core of an ESL connection, shared by the inbound client and outbound sessions.

Both kinds of connection read frames, pair replies with the commands that
asked for them and fail every pending command when the socket goes; that
plumbing changes when the wire or its failure modes do, not when a handshake
(:mod:`.client`, :mod:`.outbound`), the dispatch policy (:mod:`.dispatch`) or
bgapi jobs (:mod:`.jobs`) do.  It replaces greenswitch's reader and sender,
which are broken (see STYLE.md and ``tests/esl/test_esl_client.py``, one test per
defect):

* ``sendall`` instead of ``sock.send`` (a long command was cut short);
* every command has a timeout;
* a send lock plus a FIFO of waiters registered *before* the bytes go out, so
  concurrent greenlets get their own replies; a timed-out waiter stays in the
  FIFO (abandoned) so later replies still pair correctly;
* EOF and socket errors fail every waiter with :class:`ConnectionLost`
  (pending ``api`` calls never hang) and the reader stops: no 100 % CPU spin
  on a connection dropped mid-body;
* framing by :mod:`engine.esl.protocol`: header values decoded after the line
  split, bodies counted in bytes, invalid UTF-8 and a missing Content-Type
  survive, ``event json`` supported.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Sequence

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.queue
import gevent.socket

from .dispatch import EventDispatcher
from .errors import DEFAULT_TIMEOUT, CommandTimeout, ConnectionLost, ESLError, is_error_reply
from .jobs import BackgroundJobs
from .protocol import (
    API_RESPONSE,
    AUTH_REQUEST,
    COMMAND_REPLY,
    DISCONNECT_NOTICE,
    EVENT_JSON,
    EVENT_PLAIN,
    LOG_DATA,
    RUDE_REJECTION,
    Event,
    Frame,
    FrameParser,
    ProtocolError,
    check_command_line,
    parse_event,
)

__all__ = ["ESLConnection"]

log = logging.getLogger("switchdesk.esl")


class _Waiter(gevent.event.AsyncResult):
    """A pending reply.  ``abandoned`` waiters still consume their reply."""

    __slots__ = ("abandoned", "command")

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command
        self.abandoned = False


def _redact(command: str) -> str:
    return "auth ********" if command.startswith("auth ") else command


class ESLConnection(EventDispatcher, BackgroundJobs):
    """The socket-level core shared by the inbound client and outbound sessions.

    Owns the reader and dispatcher greenlets (in ``self.group``), the waiter
    FIFO and the keyed waiters (job and application UUIDs); the event queue
    and handlers come from :class:`EventDispatcher`, ``bgapi`` from
    :class:`BackgroundJobs`.
    """

    def _init_core(
        self,
        *,
        name: str,
        queue_size: int = 1000,
        handler_pool_size: int = 100,
        group: gevent.pool.Group | None = None,
    ) -> None:
        self.name = name
        self.group = group if group is not None else gevent.pool.Group()
        self._sock: gevent.socket.socket | None = None
        self._parser = FrameParser()
        self._send_lock = gevent.lock.Semaphore()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._keyed: dict[tuple[str, str], gevent.event.AsyncResult] = {}
        self._init_dispatch(queue_size=queue_size, handler_pool_size=handler_pool_size)
        self._reader: gevent.Greenlet | None = None
        self._dispatcher: gevent.Greenlet | None = None
        self._alive = False
        self._lost_reason: str | None = None
        self._closed = gevent.event.Event()
        self._closing = False
        self._disconnect_callbacks: list[Callable[[str], None]] = []
        self.disconnect_notice: Frame | None = None
        self.lingering = False
        self.last_event_monotonic: float | None = None
        self.last_event_timestamp: float | None = None
        self.stats: collections.Counter[str] = collections.Counter()

    # -- state -----------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def lost_reason(self) -> str | None:
        return self._lost_reason

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the connection is gone; True if it is."""
        return self._closed.wait(timeout)

    def add_disconnect_callback(self, callback: Callable[[str], None]) -> None:
        """Called once, with the reason, when the connection is lost or closed."""
        self._disconnect_callbacks.append(callback)

    # -- start / stop ----------------------------------------------------------

    def _start_core(self, sock: gevent.socket.socket) -> None:
        self._sock = sock
        self._alive = True
        self._reader = self.group.spawn(self._read_loop)
        self._dispatcher = self.group.spawn(self._dispatch_loop)
        for g in (self._reader, self._dispatcher):
            g.link_exception(self._greenlet_failed)

    def _greenlet_failed(self, greenlet: gevent.Greenlet) -> None:
        log.error("%s: greenlet %s crashed", self.name, greenlet, exc_info=greenlet.exc_info)
        self._lost(f"internal error: {greenlet.exception!r}")

    def _lost(self, reason: str) -> None:
        """Fail every waiter exactly once and close the socket."""
        if self._lost_reason is not None:
            return
        self._lost_reason = reason
        self._alive = False
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        exc = ConnectionLost(reason)
        waiters, self._waiters = self._waiters, collections.deque()
        for w in waiters:
            if not w.ready():
                w.set_exception(exc)
        keyed, self._keyed = self._keyed, {}
        for w in keyed.values():
            if not w.ready():
                w.set_exception(exc)
        self._closed.set()
        # Wake the dispatcher so it can finish the queue and stop.
        try:
            self._queue.put_nowait(None)
        except gevent.queue.Full:
            self.group.spawn(self._queue.put, None)
        log.info("%s: disconnected (%s)", self.name, reason)
        for cb in list(self._disconnect_callbacks):
            try:
                cb(reason)
            except Exception:
                log.exception("%s: disconnect callback failed", self.name)

    def abort(self, reason: str = "aborted") -> None:
        """Drop the connection now (used by the supervisor's heartbeat watchdog)."""
        self._lost(reason)
        reader = self._reader
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=False)

    # -- reading ---------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        parser = self._parser
        try:
            while self._alive and sock is not None:
                try:
                    data = sock.recv(262144)
                except OSError as exc:
                    self._lost(f"socket error: {exc}")
                    return
                if not data:
                    cut = parser.buffered
                    self._lost("closed" if self._closing else "EOF in the middle of a frame" if cut else "EOF")
                    return
                try:
                    frames = parser.feed(data)
                except ProtocolError as exc:
                    log.error("%s: protocol error, dropping the connection: %s", self.name, exc)
                    self._lost(f"protocol error: {exc}")
                    return
                for frame in frames:
                    self._handle_frame(frame)
        except gevent.GreenletExit:
            self._lost(self._lost_reason or "closed")

    def _handle_frame(self, frame: Frame) -> None:
        ctype = frame.content_type
        self.stats["frames"] += 1
        if ctype in (EVENT_JSON, EVENT_PLAIN):
            try:
                event = parse_event(frame)
            except ProtocolError as exc:
                # One bad event body does not desynchronise the stream.
                self.stats["bad_events"] += 1
                log.warning("%s: unparseable event skipped: %s", self.name, exc)
                return
            if event is not None:
                self._on_event_frame(event)
        elif ctype in (COMMAND_REPLY, API_RESPONSE):
            self._on_reply(frame)
        elif ctype == DISCONNECT_NOTICE:
            self._on_disconnect_notice(frame)
        elif ctype == LOG_DATA:
            self._enqueue(Event(dict(frame.headers), frame.text, "log"))
        elif ctype == AUTH_REQUEST:
            log.debug("%s: late auth/request ignored", self.name)
        elif ctype == RUDE_REJECTION:
            self._lost(f"rejected by FreeSWITCH: {frame.text.strip()}")
        else:
            self.stats["unknown_frames"] += 1
            log.warning("%s: frame of unknown type %r ignored", self.name, ctype)

    def _on_reply(self, frame: Frame) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            if waiter.abandoned:
                # The reply of a command that timed out: consumed, so pairing holds.
                self.stats["late_replies"] += 1
            else:
                waiter.set(frame)
            return
        self.stats["unexpected_replies"] += 1
        log.warning("%s: reply with no command waiting: %r", self.name, frame)

    def _on_event_frame(self, event: Event) -> None:
        self.stats["events"] += 1
        self.last_event_monotonic = time.monotonic()
        ts = event.timestamp
        if ts is not None:
            self.last_event_timestamp = ts
        name = event.name
        if name == "BACKGROUND_JOB":
            job = event.get_str("Job-UUID")
            waiter = self._keyed.pop(("job", job), None) if job else None
            if waiter is not None:
                waiter.set(event)
        elif name == "CHANNEL_EXECUTE_COMPLETE":
            app_uuid = event.get_str("Application-UUID")
            waiter = self._keyed.pop(("app", app_uuid), None) if app_uuid else None
            if waiter is not None:
                waiter.set(event)
        self._intake(event)
        self._enqueue(event)

    def _intake(self, event: Event) -> None:
        """Hook for subclasses that react to events on the reader (cheap only)."""

    def _on_disconnect_notice(self, frame: Frame) -> None:
        self.disconnect_notice = frame
        disposition = frame.headers.get("Content-Disposition")
        if disposition == "linger":
            self.lingering = True
            log.debug("%s: lingering", self.name)
        else:
            log.info("%s: disconnect notice: %s", self.name, frame.text.strip() or disposition)
        self._enqueue(Event(dict(frame.headers), frame.text, "disconnect"))

    # -- sending -------------------------------------------------------------

    def _require_alive(self) -> gevent.socket.socket:
        sock = self._sock
        if not self._alive or sock is None:
            raise ConnectionLost(self._lost_reason or "not connected")
        return sock

    def _send_frames(self, payloads: Sequence[tuple[str, bytes]]) -> list[_Waiter]:
        """Register one waiter per payload, then write them, all under the lock.

        Holding the lock across registration and write keeps the FIFO in the
        wire order whatever the number of concurrent greenlets.
        """
        with self._send_lock:
            sock = self._require_alive()
            waiters = [_Waiter(cmd) for cmd, _ in payloads]
            self._waiters.extend(waiters)
            try:
                sock.sendall(b"".join(p for _, p in payloads))
            except OSError as exc:
                self._lost(f"send failed: {exc}")
                raise ConnectionLost(f"send failed: {exc}") from exc
        for cmd, _ in payloads:
            log.debug("%s: >> %s", self.name, _redact(cmd))
        return waiters

    def _wait(self, waiter: _Waiter, timeout: float | None) -> Frame:
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            waiter.abandoned = True
            self.stats["timeouts"] += 1
            raise CommandTimeout(f"no reply within {timeout}s", _redact(waiter.command)) from None

    def send_command(
        self, command: str, timeout: float | None = DEFAULT_TIMEOUT, headers: dict[str, str] | None = None
    ) -> Frame:
        """Send one command (``command\\nHeader: v\\n\\n``) and return its reply frame."""
        check_command_line(command)
        lines = [command]
        for key, value in (headers or {}).items():
            check_command_line(key)
            check_command_line(value)
            lines.append(f"{key}: {value}")
        payload = ("\n".join(lines) + "\n\n").encode("utf-8")
        (waiter,) = self._send_frames([(command, payload)])
        return self._wait(waiter, timeout)

    def command(self, command: str, timeout: float | None = DEFAULT_TIMEOUT) -> str:
        """A non-api command (``event``, ``linger``...): its Reply-Text, ESLError on ``-ERR``."""
        reply = self.send_command(command, timeout).reply_text
        if reply.startswith("-"):
            raise ESLError(reply, _redact(command))
        return reply

    def api(self, command: str, timeout: float | None = DEFAULT_TIMEOUT, *, check: bool = True) -> str:
        """Run ``api <command>`` and return the body text.

        Raises :class:`ESLError` (with FreeSWITCH's text) for ``-ERR ...`` and
        ``-USAGE...`` replies when ``check`` is true.  Note: an api that
        printed nothing is answered ``-ERR no reply`` by FreeSWITCH.
        """
        text = self.send_command(f"api {command}", timeout).text
        if check and is_error_reply(text):
            raise ESLError(text, command)
        return text

    def api_many(
        self,
        commands: Iterable[str],
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        chunk: int = 500,
    ) -> list[str | ESLError]:
        """Pipelined ``api``: write every command, then collect replies in order.

        Per command the result is the reply text or an :class:`ESLError`
        (returned, not raised, so one failure does not hide the others).
        ``timeout`` bounds the whole batch.  Commands go out in chunks so
        other greenlets' commands can interleave between chunks.
        """
        cmds = list(commands)
        for c in cmds:
            check_command_line(c)
        deadline = None if timeout is None else time.monotonic() + timeout
        waiters: list[_Waiter] = []
        for i in range(0, len(cmds), chunk):
            part = cmds[i : i + chunk]
            waiters.extend(self._send_frames([(c, f"api {c}\n\n".encode()) for c in part]))
        results: list[str | ESLError] = []
        for waiter in waiters:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                text = self._wait(waiter, remaining).text
            except CommandTimeout:
                for w in waiters:
                    w.abandoned = True
                raise
            results.append(ESLError(text, waiter.command) if is_error_reply(text) else text)
        return results

    def close(self, timeout: float = 2.0) -> None:
        """Say ``exit`` if still connected, then close and stop the greenlets."""
        self._closing = True
        if self._alive:
            try:
                self.send_command("exit", timeout)
            except (ESLError, OSError):
                pass
        self._lost(self._lost_reason or "closed")
        for g in (self._reader, self._dispatcher):
            if g is not None and g is not gevent.getcurrent():
                g.kill(block=True, timeout=timeout)
