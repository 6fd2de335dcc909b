"""Other processes' configuration changes, heard through PostgreSQL's LISTEN (DESIGN.md, Scale-out).

engine.store.changes NOTIFYs every committed change; `RemoteChanges` listens on its
own connection — not one of the pool's, which are lent to requests and would
miss notifications between uses — and hands what other processes sent to this
process's listeners, exactly as a local `changes.notify` would.

It talks to libpq through psycopg's low-level `pq` layer, non-blocking, and
waits with gevent's `wait_read`/`wait_write`: psycopg's own waits block the
whole process unless `select` was monkey-patched before psycopg was imported,
and this must hold in tests and tools too. (libpq still resolves a host name
while starting to connect; an address in the URL avoids even that.)
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.pool
import peewee
from gevent.socket import wait_read, wait_write
from psycopg import OperationalError, conninfo, pq

from engine.store import changes

log = logging.getLogger("switchdesk.pgnotify")

HEARTBEAT = 30.0  # idle this long: ask the server, so a silently lost connection is noticed
TIMEOUT = 10.0  # for connecting, LISTEN and the heartbeat's answer
BACKOFF = (0.5, 30.0)  # first and longest wait between connection attempts
APPLICATION_NAME = "switchdesk-changes"  # how the connection shows in pg_stat_activity


class _Timeout(Exception):
    pass


class RemoteChanges:
    """Hears the changes other processes committed and tells this process's listeners.

    `on_reconnect` runs every time LISTEN takes effect, the first time too:
    what was committed while nobody listened is only found by reading
    everything again (the engine's full sync).
    """

    def __init__(self, dsn: str, *, on_reconnect: Callable[[], None] | None = None,
                 group: gevent.pool.Group | None = None, origin: str | None = None,
                 heartbeat: float = HEARTBEAT, timeout: float = TIMEOUT,
                 backoff: tuple[float, float] = BACKOFF):
        params = conninfo.conninfo_to_dict(dsn)
        params.setdefault("application_name", APPLICATION_NAME)
        self.dsn = conninfo.make_conninfo(**params)
        self.on_reconnect = on_reconnect
        self.group = group or gevent.pool.Group()
        self.origin = origin or changes.ORIGIN
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.backoff = backoff
        self.backend_pid: int | None = None  # of the listening connection, while it listens
        self.connects = 0
        self.failures = 0
        self.heard = 0
        self._pg: pq.abc.PGconn | None = None
        self._listening = gevent.event.Event()
        self._parts: dict[tuple[str, str, int], list[int]] = {}  # pieces of split lists, until the last one
        self._greenlet: gevent.Greenlet | None = None

    @classmethod
    def for_database(cls, database: peewee.Database, **kwargs: Any) -> RemoteChanges:
        """The same server and credentials as the bound peewee database."""
        return cls(conninfo.make_conninfo(database.database, **database.connect_params), **kwargs)

    def status(self) -> dict[str, Any]:
        """For /api/status: whether changes from other boxes are heard right now."""
        return {"listening": self._listening.is_set(), "connects": self.connects, "failures": self.failures,
                "heard": self.heard}

    def start(self) -> RemoteChanges:
        self._greenlet = self.group.spawn(self._run)
        return self

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self._close()

    def wait_listening(self, timeout: float | None = None) -> bool:
        return self._listening.wait(timeout)

    # -- the connection --------------------------------------------------------------------------

    def _run(self) -> None:
        delay = self.backoff[0]
        while True:
            try:
                self._connect()
            except Exception as exc:
                self.failures += 1
                log.warning("cannot LISTEN for other boxes' changes: %s; again in %.1f s", _message(exc), delay)
                self._close()
                gevent.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            delay = self.backoff[0]
            self.connects += 1
            if self.connects > 1:
                log.info("listening for other boxes' changes again")
            if self.on_reconnect is not None:
                try:
                    self.on_reconnect()
                except Exception:
                    log.exception("resync after LISTEN failed")
            try:
                self._listen()
            except Exception as exc:
                log.warning("lost the connection that hears other boxes' changes: %s", _message(exc))
            self._close()
            self.failures += 1
            gevent.sleep(delay)

    def _connect(self) -> None:
        pg = self._pg = pq.PGconn.connect_start(self.dsn.encode())
        while True:
            status = pg.connect_poll()
            if status == pq.PollingStatus.OK:
                break
            if status == pq.PollingStatus.READING:
                self._wait(wait_read, self.timeout)
            elif status == pq.PollingStatus.WRITING:
                self._wait(wait_write, self.timeout)
            else:
                raise OperationalError(pg.get_error_message())
        pg.nonblocking = 1
        self._execute(f"LISTEN {changes.CHANNEL}")
        self.backend_pid = pg.backend_pid
        self._listening.set()
        changes.hearing(self, True)

    def _listen(self) -> None:
        assert self._pg is not None
        while True:
            self._dispatch()  # first: LISTEN's or the heartbeat's reply may have brought some along
            try:
                self._wait(wait_read, self.heartbeat)
            except _Timeout:
                self._execute("SELECT 1")  # raises if the server or the link is gone
            else:
                self._pg.consume_input()
                if self._pg.status != pq.ConnStatus.OK:
                    raise OperationalError(self._pg.get_error_message())

    def _execute(self, sql: str) -> None:
        """One statement, sent and answered without blocking the hub; notifications stay queued in libpq."""
        pg = self._pg
        assert pg is not None
        pg.send_query(sql.encode())
        while pg.flush():
            self._wait(wait_write, self.timeout)
        while True:
            pg.consume_input()
            if not pg.is_busy():
                break
            self._wait(wait_read, self.timeout)
        error = None
        while (result := pg.get_result()) is not None:
            if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                error = result.get_error_message()
        if error is not None:
            raise OperationalError(error)

    def _wait(self, wait: Callable[..., Any], timeout: float) -> None:
        assert self._pg is not None
        wait(self._pg.socket, timeout=timeout, timeout_exc=_Timeout(f"no answer in {timeout:g} s"))

    def _close(self) -> None:
        if self._listening.is_set():
            changes.hearing(self, False)
        self._listening.clear()
        self.backend_pid = None
        self._parts.clear()  # the rest will not come: the resync after reconnecting covers them
        pg, self._pg = self._pg, None
        if pg is not None:
            pg.finish()

    # -- the notifications -----------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Everything queued, other processes' only; a split list handed over whole, a burst merged per kind."""
        assert self._pg is not None
        merged: dict[tuple[str, int], list[int]] = {}
        while (notice := self._pg.notifies()) is not None:
            parsed = changes.parse_payload(notice.extra.decode("utf-8", "replace"))
            if parsed is None:
                log.warning("ignored a notification on %s that is not a change: %.200r", changes.CHANNEL,
                            notice.extra)
                continue
            origin, kind, account_id, ids, more = parsed
            if origin == self.origin:
                continue  # this process's listeners heard it when it was sent
            self.heard += 1
            key = (origin, kind, account_id)
            if more:
                self._parts.setdefault(key, []).extend(ids)
                continue
            merged.setdefault((kind, account_id), []).extend(self._parts.pop(key, []) + ids)
        for (kind, account_id), ids in merged.items():
            changes.deliver(kind, account_id, list(dict.fromkeys(ids)))


def _message(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def attach(engine: Any, database: peewee.Database) -> RemoteChanges | None:
    """Started by `switchdesk serve` with the engine, on PostgreSQL only (SQLite is one box)."""
    if not isinstance(database, peewee.PostgresqlDatabase):
        return None
    remote = RemoteChanges.for_database(database, on_reconnect=engine.request_sync, group=engine.group).start()
    engine.on_stop(remote.stop)
    engine.remote_changes = remote
    return remote
