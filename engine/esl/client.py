"""The inbound ESL client: switchdesk connects to FreeSWITCH's event socket.

What is particular to dialling in (the auth handshake, subscribing events,
staying a drop-in ``greenswitch.InboundESL``) changes apart from the connection
core that outbound sessions share (:mod:`.connection`).

greenswitch 0.0.19 is the project's chosen dependency.  ``ESLClient``
subclasses ``greenswitch.InboundESL`` and keeps what is sound in it (the
handler registry: ``register_handle`` keyed by ``Event-Name``, or by
``Event-Subclass`` for CUSTOM events; the context-manager protocol; the
host/port/password/timeout attributes) and replaces the reader, the sender
(:mod:`.connection`), the dispatcher (:mod:`.dispatch`) and bgapi
(:mod:`.jobs`), which are broken (see ``tests/esl/test_esl_client.py``, one test
per defect).

**One connection, one direction of traffic.**  A synchronous ``api`` blocks
its connection inside FreeSWITCH: events raised meanwhile are held back until
the reply has been sent (recorded in the fixtures).  And while the event
queue is full, this connection's command replies wait too.  So switchdesk runs
one connection for events and separate ones for commands; a handler on the
events connection that needs to send a command should use a command
connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

import gevent.pool
import gevent.socket
import greenswitch

from .connection import ESLConnection
from .dispatch import Handler
from .errors import DEFAULT_TIMEOUT, AuthError, CommandTimeout, ConnectionLost
from .protocol import AUTH_REQUEST, COMMAND_REPLY, RUDE_REJECTION, Frame, ProtocolError

__all__ = ["ESLClient", "build_event_command"]

log = logging.getLogger("switchdesk.esl")


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
