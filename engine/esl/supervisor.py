"""Keeps one ESL connection alive: reconnect, watchdog, callbacks, status.

ESL has no replay and greenswitch cannot reconnect, so every (re)connect is a
new :class:`ESLClient`; the ``on_connect`` callbacks re-subscribe and resync
(DESIGN.md "Events across outages").  Backoff is capped exponential with
jitter, so a fleet of engines does not hammer a restarting FreeSWITCH in step,
and ``stop()`` interrupts the wait at once.

FreeSWITCH sends HEARTBEAT every 20 s.  A connection that has carried no
event for ``heartbeat_misses`` intervals is treated as dead even if TCP has
not noticed (a stalled switch, a silent network drop) and is rebuilt.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.pool

from .client import ESLClient
from .errors import ConnectionLost, ESLError

__all__ = ["ESLSupervisor", "SupervisorStatus"]

log = logging.getLogger("switchdesk.esl")

ConnectCallback = Callable[[ESLClient], None]
DisconnectCallback = Callable[[str], None]


@dataclass(frozen=True)
class SupervisorStatus:
    connected: bool
    since: float | None  # epoch seconds of the current state's start
    last_error: str | None
    version: str | None  # ``api version`` of the connected FreeSWITCH
    event_lag: float | None  # now - Event-Date-Timestamp of the last event, seconds
    last_event_age: float | None  # seconds since the last event arrived
    reconnects: int
    attempts: int


def _log_greenlet_error(greenlet: gevent.Greenlet) -> None:
    log.error("supervisor greenlet %s crashed", greenlet, exc_info=greenlet.exc_info)


class ESLSupervisor:
    """Owns an :class:`ESLClient` and rebuilds it forever until :meth:`stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        events: Sequence[str] = (),
        event_format: str = "json",
        name: str = "esl",
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        heartbeat_interval: float = 20.0,
        heartbeat_misses: int = 3,
        watchdog: bool = True,
        client_factory: Callable[[], ESLClient] | None = None,
        group: gevent.pool.Group | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.name = name
        self.events = list(events)
        if watchdog and "HEARTBEAT" not in self.events and "ALL" not in self.events:
            self.events.append("HEARTBEAT")
        self.event_format = event_format
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_misses = heartbeat_misses
        self.watchdog = watchdog
        self._password = password
        self._factory = client_factory or self._default_factory
        self.group = group if group is not None else gevent.pool.Group()
        self._client: ESLClient | None = None
        self._on_connect: list[ConnectCallback] = []
        self._on_disconnect: list[DisconnectCallback] = []
        self._handlers: list[tuple[str, Callable, bool]] = []
        self._batch: Callable[[], Any] | None = None
        self._batch_keys: frozenset[str] = frozenset()
        self._session: Callable[[], Any] | None = None
        self._stopping = gevent.event.Event()
        self._connected_event = gevent.event.Event()
        self._runner: gevent.Greenlet | None = None
        self._since: float | None = None
        self._last_error: str | None = None
        self._version: str | None = None
        self._reconnects = 0
        self._attempts = 0

    def __repr__(self) -> str:
        return f"<ESLSupervisor {self.name} {self.host}:{self.port}>"

    def _default_factory(self) -> ESLClient:
        return ESLClient(
            self.host,
            self.port,
            self._password,
            events=self.events,
            event_format=self.event_format,
            timeout=self.connect_timeout,
            name=f"{self.name}:{self.host}:{self.port}",
            group=self.group,
        )

    # -- registration ----------------------------------------------------------

    def on_connect(self, callback: ConnectCallback) -> None:
        """Run after every (re)connect, in registration order, with the new client.

        A callback that raises ConnectionLost makes the supervisor reconnect;
        any other exception is logged and the next callback still runs.
        """
        self._on_connect.append(callback)

    def on_disconnect(self, callback: DisconnectCallback) -> None:
        self._on_disconnect.append(callback)

    def batch_events(self, batch: Callable[[], Any], keys: Collection[str],
                     session: Callable[[], Any] | None = None) -> None:
        """Dispatch waiting events of `keys` together inside `batch()` on every client this supervisor builds
        (engine.esl.dispatch, "Batches"), and each busy spell of its dispatcher inside `session()` if given
        ("Sessions"); `keys` add to those already given."""
        self._batch = batch
        self._batch_keys = frozenset(self._batch_keys) | frozenset(keys)
        self._session = session
        if self._client is not None:
            self._client.batch, self._client.batch_keys = self._batch, self._batch_keys
            self._client.session = session

    def on_event(self, name: str, handler: Callable, *, spawn: bool = False) -> None:
        """Register an event handler on every client this supervisor builds."""
        self._handlers.append((name, handler, spawn))
        if self._client is not None:
            self._client.on_event(name, handler, spawn=spawn)

    # -- lifecycle -----------------------------------------------------------

    @property
    def client(self) -> ESLClient | None:
        """The connected client, or None while disconnected."""
        c = self._client
        return c if c is not None and c.connected else None

    @property
    def connected(self) -> bool:
        return self.client is not None

    def require_client(self) -> ESLClient:
        c = self.client
        if c is None:
            raise ConnectionLost("FreeSWITCH is not connected")
        return c

    def start(self) -> None:
        if self._runner is None:
            self._stopping.clear()
            self._runner = self.group.spawn(self._run)
            self._runner.link_exception(_log_greenlet_error)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reconnecting, close the client and wait for the greenlets."""
        self._stopping.set()
        client = self._client
        if client is not None:
            client.close(timeout=min(timeout, 2.0))
        if self._runner is not None:
            self._runner.join(timeout)
            if not self._runner.dead:
                self._runner.kill(block=True, timeout=1)
        self._runner = None

    def wait_connected(self, timeout: float | None = None) -> bool:
        return self._connected_event.wait(timeout)

    def status(self) -> SupervisorStatus:
        client = self.client
        lag = age = None
        if client is not None:
            if client.last_event_timestamp is not None:
                lag = max(0.0, time.time() - client.last_event_timestamp)
            if client.last_event_monotonic is not None:
                age = time.monotonic() - client.last_event_monotonic
        return SupervisorStatus(
            connected=client is not None,
            since=self._since,
            last_error=self._last_error,
            version=self._version if client is not None else None,
            event_lag=lag,
            last_event_age=age,
            reconnects=self._reconnects,
            attempts=self._attempts,
        )

    # -- the loop -------------------------------------------------------------

    def backoff(self, failures: int) -> float:
        """Capped exponential delay with jitter: 50-100 % of min(max, initial * 2**n)."""
        base = min(self.backoff_max, self.backoff_initial * (2 ** max(0, failures)))
        return base * (0.5 + random.random() / 2)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._attempts += 1
            client = self._factory()
            client.batch, client.batch_keys, client.session = self._batch, self._batch_keys, self._session
            for name, handler, spawn in self._handlers:
                client.on_event(name, handler, spawn=spawn)
            try:
                client.connect(self.connect_timeout)
                self._version = client.api("version", timeout=self.connect_timeout).strip()
                self._client = client
                self._run_connect_callbacks(client)
                if not client.connected:
                    raise ConnectionLost(client.lost_reason or "lost during on_connect")
            except (ESLError, OSError) as exc:
                self._client = None
                client.close(timeout=0.5)
                self._last_error = str(exc)
                failures += 1
                delay = self.backoff(failures - 1)
                # Said once per outage; the retries go on quietly (a box without FreeSWITCH yet
                # would otherwise log a warning every few seconds for ever).
                log.log(logging.WARNING if failures == 1 else logging.DEBUG,
                        "%s: cannot reach FreeSWITCH (%s); retrying every %.0f s at most, quietly%s",
                        self.name, exc, self.backoff_max,
                        " (set --esl / SWITCHDESK_ESL, or --no-esl to run without it)" if self._attempts == 1 else "")
                self._stopping.wait(delay)
                continue
            failures = 0
            self._since = time.time()
            if self._reconnects or self._attempts > 1:
                log.info("%s: reconnected to FreeSWITCH (%s)", self.name, self._version)
            self._connected_event.set()
            reason = self._watch(client)
            self._connected_event.clear()
            self._client = None
            self._since = time.time()
            if self._stopping.is_set():
                client.close(timeout=0.5)
                break
            self._last_error = reason
            self._reconnects += 1
            client.close(timeout=0.5)
            for cb in list(self._on_disconnect):
                try:
                    cb(reason)
                except Exception:
                    log.exception("%s: on_disconnect callback failed", self.name)
            delay = self.backoff(0)
            log.warning("%s: lost FreeSWITCH (%s); reconnecting in %.1fs", self.name, reason, delay)
            self._stopping.wait(delay)

    def _run_connect_callbacks(self, client: ESLClient) -> None:
        for cb in list(self._on_connect):
            try:
                cb(client)
            except ConnectionLost:
                raise
            except Exception:
                log.exception("%s: on_connect callback %r failed", self.name, cb)

    def _watch(self, client: ESLClient) -> str:
        """Wait until the client dies, the watchdog fires or we are stopped."""
        limit = self.heartbeat_interval * self.heartbeat_misses
        check = max(0.05, min(self.heartbeat_interval / 4, 5.0))
        started = time.monotonic()
        while True:
            if client.wait_closed(check):
                return client.lost_reason or "closed"
            if self._stopping.is_set():
                return "stopped"
            if not self.watchdog:
                continue
            last = client.last_event_monotonic or started
            if time.monotonic() - last > limit:
                reason = f"no event for {limit:.1f}s (heartbeat watchdog)"
                log.warning("%s: %s", self.name, reason)
                client.abort(reason)
                return reason
