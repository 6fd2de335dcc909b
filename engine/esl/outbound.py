"""Outbound event socket: FreeSWITCH connects to us (``socket 127.0.0.1:8040 async full``).

Used for check-in codes: the dialplan hands the call to the engine, which
answers, confirms with a tone and hangs up.  Framings follow the recordings
in ``outbound-socket-*.esl``:

* FreeSWITCH sends nothing until we send ``connect``; the reply is one header
  block (``Event-Name: CHANNEL_DATA`` ... ``Content-Type: command/reply``,
  ``Reply-Text: %2BOK%0A``, ``Socket-Mode``, ``Control``) with no body;
* ``myevents`` delivers this channel's events as text/event-plain;
* ``sendmsg`` execute with our ``Event-UUID`` comes back as
  ``Application-UUID`` on CHANNEL_EXECUTE_COMPLETE, which is how
  :meth:`OutboundSession.execute` waits for *its* application; in async mode
  the ``+OK`` comes at once, in static mode when the application is done;
* after hang-up with ``linger``, a disconnect notice with
  ``Content-Disposition: linger`` comes first, the final one later.

The server is gevent's ``StreamServer`` (no accept polling).  A bind error
raises :class:`OutboundBindError`; greenswitch's server called ``sys.exit()``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import gevent
import gevent.event
import gevent.pool
import gevent.server
import gevent.socket

from .connection import ESLConnection
from .dispatch import Handler
from .errors import DEFAULT_TIMEOUT, CommandTimeout, ConnectionLost, ESLError
from .protocol import COMMAND_REPLY, Event, Frame, channel_data

__all__ = ["OutboundBindError", "OutboundServer", "OutboundSession", "SessionHandler"]

log = logging.getLogger("switchdesk.esl")

SessionHandler = Callable[["OutboundSession"], None]


class OutboundBindError(OSError):
    """The outbound-socket server could not listen (port in use, bad address...)."""


class OutboundSession(ESLConnection):
    """One call handed to us by FreeSWITCH's ``socket`` application."""

    def __init__(self, sock: gevent.socket.socket, address: tuple, *, group: gevent.pool.Group | None = None) -> None:
        self._init_core(name=f"outbound:{address[0]}:{address[1]}", queue_size=1000, group=group)
        self.address = address
        self.channel: Event = Event({})
        self.hangup_event = gevent.event.Event()
        self.hangup_cause: str | None = None
        self._start_core(sock)

    # -- channel data ---------------------------------------------------------

    @property
    def uuid(self) -> str | None:
        return self.channel.get_str("Unique-ID")

    @property
    def caller_id_number(self) -> str | None:
        return self.channel.get_str("Caller-Caller-ID-Number")

    @property
    def destination_number(self) -> str | None:
        return self.channel.get_str("Caller-Destination-Number")

    @property
    def socket_mode(self) -> str | None:
        return self.channel.get_str("Socket-Mode")

    def get(self, key: str, default: str | None = None) -> str | None:
        """A channel-data header (``variable_switchdesk_device_id`` ...)."""
        return self.channel.get_str(key, default)

    @property
    def hung_up(self) -> bool:
        return self.hangup_event.is_set()

    def _intake(self, event: Event) -> None:
        if event.name == "CHANNEL_HANGUP" and not self.hangup_event.is_set():
            self.hangup_cause = event.get_str("Hangup-Cause")
            self.hangup_event.set()

    # -- commands --------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> Event:
        """Send ``connect`` and keep the channel data of the reply."""
        frame: Frame = self.send_command("connect", timeout)
        if frame.content_type != COMMAND_REPLY or not frame.reply_text.startswith("+OK"):
            raise ESLError(frame.reply_text or "connect refused", "connect")
        self.channel = channel_data(frame)
        return self.channel

    def myevents(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Subscribe to this channel's events (plain, as FreeSWITCH sends them)."""
        return self.command("myevents", timeout)

    def linger(self, seconds: int | None = None, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Keep the socket after hang-up so the final events still arrive."""
        return self.command("linger" if seconds is None else f"linger {int(seconds)}", timeout)

    def sendmsg(self, headers: dict[str, str], timeout: float | None = DEFAULT_TIMEOUT) -> str:
        reply = self.send_command("sendmsg", timeout, headers).reply_text
        if not reply.startswith("+OK"):
            raise ESLError(reply, f"sendmsg {headers.get('call-command')}")
        return reply

    def execute(
        self,
        app: str,
        arg: str | None = None,
        *,
        event_lock: bool = False,
        wait: bool = True,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Event | None:
        """Run a dialplan application; with ``wait`` return its CHANNEL_EXECUTE_COMPLETE.

        The completion is matched by the ``Event-UUID`` we send (echoed as
        ``Application-UUID``), registered before the command goes out.  Needs
        ``myevents``.  ``event_lock`` makes FreeSWITCH run queued
        applications strictly one after another.
        """
        app_uuid = str(uuid.uuid4())
        headers = {"call-command": "execute", "execute-app-name": app}
        if arg is not None:
            headers["execute-app-arg"] = arg
        if event_lock:
            headers["event-lock"] = "true"
        headers["Event-UUID"] = app_uuid
        result = gevent.event.AsyncResult()
        if wait:
            self._keyed[("app", app_uuid)] = result
        try:
            self.sendmsg(headers, timeout)
        except BaseException:
            self._keyed.pop(("app", app_uuid), None)
            raise
        if not wait:
            return None
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            self._keyed.pop(("app", app_uuid), None)
            raise CommandTimeout(f"{app} did not complete within {timeout}s", app) from None

    def answer(self, timeout: float | None = DEFAULT_TIMEOUT) -> Event | None:
        return self.execute("answer", timeout=timeout)

    def playback(self, path: str, timeout: float | None = 120.0) -> str | None:
        """Play and wait; returns Application-Response (``FILE PLAYED`` / ``PLAYBACK ERROR``)."""
        event = self.execute("playback", path, timeout=timeout)
        return None if event is None else event.get_str("Application-Response")

    def hangup(self, cause: str = "NORMAL_CLEARING", timeout: float | None = DEFAULT_TIMEOUT) -> str:
        return self.sendmsg({"call-command": "hangup", "hangup-cause": cause}, timeout)

    def wait_hangup(self, timeout: float | None = None) -> bool:
        return self.hangup_event.wait(timeout)

    def wait_for_event(self, predicate: Callable[[Event], bool], timeout: float | None = DEFAULT_TIMEOUT) -> Event:
        """The next event for which ``predicate`` is true (registered now, so call before acting)."""
        result = gevent.event.AsyncResult()

        def check(event: Event) -> None:
            if not result.ready() and predicate(event):
                result.set(event)

        self.on_event("*", check)
        lost = self._closed

        def on_lost(_: object) -> None:
            if not result.ready():
                result.set_exception(ConnectionLost(self.lost_reason or "closed"))

        watcher = gevent.spawn(lambda: (lost.wait(), on_lost(None)))
        try:
            return result.get(timeout=timeout)
        except gevent.Timeout:
            raise CommandTimeout(f"no matching event within {timeout}s") from None
        finally:
            watcher.kill(block=False)
            self.off_event("*", check)

    def on_channel_event(self, name: str, handler: Handler, *, spawn: bool = False) -> None:
        self.on_event(name, handler, spawn=spawn)


class OutboundServer:
    """Accepts FreeSWITCH's outbound-socket connections and runs ``handler(session)`` for each.

    Before the handler runs the session is connected (channel data loaded).
    Afterwards the server says ``exit`` if FreeSWITCH has not closed yet.
    """

    def __init__(
        self,
        handler: SessionHandler,
        host: str = "127.0.0.1",
        port: int = 8040,
        *,
        max_sessions: int = 200,
        connect_timeout: float = 5.0,
        group: gevent.pool.Group | None = None,
    ) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.group = group if group is not None else gevent.pool.Group()
        self._pool = gevent.pool.Pool(max_sessions)
        self._server: gevent.server.StreamServer | None = None
        self.sessions: set[OutboundSession] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> None:
        """Bind and listen; raises OutboundBindError with the address on failure."""
        server = gevent.server.StreamServer((self.host, self.port), self._handle, spawn=self._pool)
        try:
            server.init_socket()
            server.start()
        except OSError as exc:
            raise OutboundBindError(
                exc.errno, f"cannot listen for outbound sockets on {self.host}:{self.port}: {exc.strerror or exc}"
            ) from exc
        self._server = server
        self.port = server.server_port
        log.info("outbound socket server listening on %s:%s", self.host, self.port)

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.stop(timeout=timeout)
            self._server = None
        for session in list(self.sessions):
            session.close(timeout=1)

    def serve_forever(self) -> None:
        if self._server is None:
            self.start()
        assert self._server is not None
        self._server.serve_forever()

    def _handle(self, sock: gevent.socket.socket, address: tuple) -> None:
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        session = OutboundSession(sock, address, group=self.group)
        self.sessions.add(session)
        try:
            session.connect(self.connect_timeout)
            # Not the destination: on this socket it is a check-in code, a secret.
            log.info("outbound call %s from %s", session.uuid, session.caller_id_number)
            self.handler(session)
        except ConnectionLost as exc:
            log.info("outbound session %s ended: %s", session.uuid, exc)
        except Exception:
            log.exception("outbound handler failed for %s", session.uuid)
        finally:
            self.sessions.discard(session)
            session.close(timeout=2)
