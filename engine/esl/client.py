"""ESL client on greenswitch: one TCP connection to FreeSWITCH's event socket.

greenswitch 0.0.19 is the project's chosen dependency.  ``ESLClient``
subclasses ``greenswitch.InboundESL`` and keeps what is sound in it (the
handler registry: ``register_handle`` keyed by ``Event-Name``, or by
``Event-Subclass`` for CUSTOM events; the context-manager protocol; the
host/port/password/timeout attributes) and replaces the reader, the sender and
the dispatcher, which are broken (see STYLE.md and ``tests/test_esl_client.py``,
one test per defect):

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
  survive, ``event json`` supported;
* ``bgapi`` with our own Job-UUID, answered through a waiter keyed by it;
* a bounded event queue.  **Overflow policy:** when the queue is full the
  reader blocks, so it stops reading the socket and TCP backpressure reaches
  FreeSWITCH; nothing is dropped, and every time the reader had to wait is
  counted in ``stats["queue_full_waits"]``;
* handlers run on a dispatcher greenlet, in event order, never on the reader;
  a handler registered with ``spawn=True`` runs in its own greenlet from a
  bounded pool, so a slow handler delays nothing else.

**One connection, one direction of traffic.**  A synchronous ``api`` blocks
its connection inside FreeSWITCH: events raised meanwhile are held back until
the reply has been sent (recorded in the fixtures).  And while the event
queue is full, this connection's command replies wait too.  So switchdesk runs
one connection for events and separate ones for commands; a handler on the
events connection that needs to send a command should use a command
connection.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.queue
import gevent.socket
import greenswitch

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
    parse_event,
)

__all__ = [
    "AuthError",
    "CommandTimeout",
    "ConnectionLost",
    "ESLClient",
    "ESLConnection",
    "ESLError",
    "Handler",
]

log = logging.getLogger("switchdesk.esl")

Handler = Callable[[Event], None]

DEFAULT_TIMEOUT = 30.0


class ESLError(Exception):
    """FreeSWITCH answered with an error (``-ERR ...``); ``text`` is its reply."""

    def __init__(self, text: str, command: str | None = None) -> None:
        super().__init__(text.strip() if command is None else f"{command!r}: {text.strip()}")
        self.text = text
        self.command = command


class ConnectionLost(ESLError, ConnectionError):
    """The connection is gone (or never was); the command's fate is unknown."""

    def __init__(self, reason: str = "connection lost") -> None:
        ESLError.__init__(self, reason)


class CommandTimeout(ESLError, TimeoutError):
    """No reply within the timeout.  The command may still run in FreeSWITCH."""


class AuthError(ESLError):
    """FreeSWITCH refused the password (``-ERR invalid``)."""


class _Waiter(gevent.event.AsyncResult):
    """A pending reply.  ``abandoned`` waiters still consume their reply."""

    __slots__ = ("abandoned", "command")

    def __init__(self, command: str) -> None:
        super().__init__()
        self.command = command
        self.abandoned = False


def _redact(command: str) -> str:
    return "auth ********" if command.startswith("auth ") else command


def _check_line(command: str) -> None:
    # A newline would end this command and start another: injection.
    if "\n" in command or "\r" in command:
        raise ValueError("ESL command must be a single line")


class ESLConnection:
    """The socket-level core shared by the inbound client and outbound sessions.

    Owns the reader and dispatcher greenlets (in ``self.group``), the waiter
    FIFO, the keyed waiters (job and application UUIDs) and the event queue.
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
        self._queue: gevent.queue.Queue = gevent.queue.Queue(maxsize=queue_size)
        self._handler_pool = gevent.pool.Pool(handler_pool_size)
        self._handlers: dict[str, list[tuple[Handler, bool]]] = {}
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
        while True:
            event = q.get()
            if event is None:
                if not self._alive and q.empty():
                    return
                continue
            self._dispatch(event)

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
        _check_line(command)
        lines = [command]
        for key, value in (headers or {}).items():
            _check_line(key)
            _check_line(value)
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
        if check and _is_error(text):
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
            _check_line(c)
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
            results.append(ESLError(text, waiter.command) if _is_error(text) else text)
        return results

    def bgapi(self, command: str, timeout: float | None = 60.0, *, check: bool = True) -> str:
        """Run ``bgapi`` with our own Job-UUID and return the BACKGROUND_JOB body.

        The waiter keyed by the Job-UUID exists before the command is sent,
        so even an instant job result cannot be missed.  Needs BACKGROUND_JOB
        events on this connection (ESLClient subscribes them by default).
        """
        return self.bgapi_async(command).get_result(timeout, check=check)

    def bgapi_async(self, command: str, timeout: float | None = DEFAULT_TIMEOUT) -> BackgroundJob:
        """Start a bgapi job and return at once with a handle on its result."""
        _check_line(command)
        job_uuid = str(uuid.uuid4())
        result = gevent.event.AsyncResult()
        self._keyed[("job", job_uuid)] = result
        try:
            reply = self.send_command(f"bgapi {command}", timeout, {"Job-UUID": job_uuid}).reply_text
        except BaseException:
            self._keyed.pop(("job", job_uuid), None)
            raise
        if not reply.startswith("+OK"):
            self._keyed.pop(("job", job_uuid), None)
            raise ESLError(reply, command)
        return BackgroundJob(self, job_uuid, command, result)

    def _forget_job(self, job_uuid: str) -> None:
        self._keyed.pop(("job", job_uuid), None)

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


class BackgroundJob:
    """Handle on a running bgapi job."""

    def __init__(self, conn: ESLConnection, job_uuid: str, command: str, result: gevent.event.AsyncResult) -> None:
        self.job_uuid = job_uuid
        self.command = command
        self._conn = conn
        self._result = result

    def ready(self) -> bool:
        return self._result.ready()

    def get_event(self, timeout: float | None = 60.0) -> Event:
        try:
            return self._result.get(timeout=timeout)
        except gevent.Timeout:
            self._conn._forget_job(self.job_uuid)
            raise CommandTimeout(f"no BACKGROUND_JOB within {timeout}s", self.command) from None

    def get_result(self, timeout: float | None = 60.0, *, check: bool = True) -> str:
        body = self.get_event(timeout).body or ""
        if check and _is_error(body):
            raise ESLError(body, self.command)
        return body


def _is_error(text: str) -> bool:
    return text.startswith("-ERR") or text.startswith("-USAGE")


def build_event_command(events: Iterable[str], event_format: str) -> str:
    """``event json A B CUSTOM x::y``: plain names first, subclasses after CUSTOM.

    mod_event_socket reads every word after ``CUSTOM`` as a subclass, so
    subclasses (names with ``::``) must come last whatever order we were given.
    """
    names: list[str] = []
    subclasses: list[str] = []
    for item in events:
        for word in item.split():
            if word == "CUSTOM":
                continue
            (subclasses if "::" in word else names).append(word)
    names = list(dict.fromkeys(names))
    words = names + (["CUSTOM", *dict.fromkeys(subclasses)] if subclasses else [])
    if not words:
        raise ValueError("no events to subscribe to")
    return f"event {event_format} {' '.join(words)}"


class ESLClient(ESLConnection, greenswitch.InboundESL):
    """An inbound event-socket connection (we connect to FreeSWITCH).

    ``events`` are subscribed during :meth:`connect` in ``event_format``
    (``json``: about 6x cheaper to parse, or ``plain``).  BACKGROUND_JOB is
    always added so :meth:`bgapi` can be answered on this connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        events: Sequence[str] = (),
        event_format: str = "json",
        timeout: float = 5.0,
        queue_size: int = 1000,
        handler_pool_size: int = 100,
        name: str | None = None,
        group: gevent.pool.Group | None = None,
    ) -> None:
        if event_format not in ("json", "plain"):
            raise ValueError("event_format must be 'json' or 'plain'")
        greenswitch.InboundESL.__init__(self, host, port, password, timeout)
        self._init_core(
            name=name or f"esl:{host}:{port}",
            queue_size=queue_size,
            handler_pool_size=handler_pool_size,
            group=group,
        )
        self.events = list(events)
        self.event_format = event_format
        # greenswitch's handler table becomes ours: register_handle() keeps working.
        self.event_handlers = self._handlers  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<ESLClient {self.name} {'connected' if self.connected else 'disconnected'}>"

    # greenswitch assigns ``self.connected`` in __init__; ours is derived.
    @property  # type: ignore[override]
    def connected(self) -> bool:
        return self._alive

    @connected.setter
    def connected(self, value: bool) -> None:
        pass

    def register_handle(self, name: str, handler: Handler) -> None:  # greenswitch API
        self.on_event(name, handler)

    def unregister_handle(self, name: str, handler: Handler) -> None:  # greenswitch API
        if name not in self._handlers:
            raise ValueError(f"No handlers found for event: {name}")
        self.off_event(name, handler)

    def connect(self, timeout: float | None = None) -> None:  # type: ignore[override]
        """Connect, authenticate and subscribe; raises AuthError / ConnectionLost / CommandTimeout."""
        if self._lost_reason is not None or self._sock is not None:
            raise RuntimeError("an ESLClient connects once; make a new one to reconnect")
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            sock = gevent.socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            self._lost(f"connect failed: {exc}")
            raise ConnectionLost(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        try:
            sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
            self._handshake(sock, deadline)
        except BaseException:
            sock.close()
            self._lost(self._lost_reason or "handshake failed")
            raise
        sock.settimeout(None)
        self._start_core(sock)
        log.info("%s: connected", self.name)
        # Always: BACKGROUND_JOB at least, so bgapi results reach this connection.
        self.subscribe(self.events, timeout=max(0.1, deadline - time.monotonic()))

    def _read_frame_blocking(self, sock: gevent.socket.socket, deadline: float) -> Frame:
        # Only the handshake reads this way; the reader greenlet is not running yet.
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout("handshake timed out")
            sock.settimeout(remaining)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise CommandTimeout("handshake timed out") from None
            except OSError as exc:
                raise ConnectionLost(f"socket error during handshake: {exc}") from exc
            if not data:
                raise ConnectionLost("connection closed during handshake")
            frames = self._parser.feed(data)
            if frames:
                self._handshake_backlog.extend(frames[1:])
                return frames[0]

    def _next_handshake_frame(self, sock: gevent.socket.socket, deadline: float) -> Frame:
        if self._handshake_backlog:
            return self._handshake_backlog.pop(0)
        return self._read_frame_blocking(sock, deadline)

    def _handshake(self, sock: gevent.socket.socket, deadline: float) -> None:
        self._handshake_backlog: list[Frame] = []
        greeting = self._next_handshake_frame(sock, deadline)
        if greeting.content_type == RUDE_REJECTION:
            raise ConnectionLost(f"rejected by FreeSWITCH: {greeting.text.strip()}")
        if greeting.content_type != AUTH_REQUEST:
            raise ConnectionLost(f"unexpected greeting {greeting.content_type!r}")
        sock.sendall(f"auth {self.password}\n\n".encode())
        log.debug("%s: >> auth ********", self.name)
        reply = self._next_handshake_frame(sock, deadline)
        if reply.content_type != COMMAND_REPLY or not reply.reply_text.startswith("+OK"):
            raise AuthError(reply.reply_text or "authentication failed")
        if self._handshake_backlog:
            raise ProtocolError("unexpected frames after auth")

    def subscribe(
        self,
        events: Sequence[str] | None = None,
        *,
        event_format: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> str:
        """Send ``event <fmt> ...`` (BACKGROUND_JOB always included)."""
        fmt = event_format or self.event_format
        wanted = list(events if events is not None else self.events)
        if "ALL" not in wanted and "BACKGROUND_JOB" not in wanted:
            wanted.append("BACKGROUND_JOB")
        if events is not None:
            self.events = list(events)
        self.event_format = fmt
        return self.command(build_event_command(wanted, fmt), timeout)

    # greenswitch compatibility: ``send`` returned an object with ``.data``.
    def send(self, data: str, timeout: float | None = DEFAULT_TIMEOUT) -> Frame:  # type: ignore[override]
        return self.send_command(data, timeout)

    def stop(self) -> None:  # greenswitch API
        self.close()
