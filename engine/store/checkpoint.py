"""SQLite's WAL checkpoints off the event loop.

By default SQLite checkpoints inside the commit that takes the write-ahead log past 1,000 pages: that
commit copies the log into the database file and fsyncs both, on the thread that committed, which in
`serve` is the event loop. During a call storm that came every few seconds and stopped the loop for
milliseconds each time (up to 2 % of its time in fdatasync at 40 calls/s, bench/call_storm.py), and
every request then in flight (FreeSWITCH's xml_curl lookups, the API) waited for it.

`serve` turns the automatic checkpoint off on its connections (`wal_autocheckpoint=0`, every process of
`serve --workers` alike) and the process started runs this checkpointer: every second, on a connection
of its own in gevent's threadpool (the sqlite3 module lets go of the GIL while SQLite works), a PASSIVE
checkpoint, which copies what no reader still needs without taking any lock a writer or reader waits
for. The log then restarts from its beginning on a later commit, so it stays as small as a second's
writes. Command-line tools (`leads import`, ...) keep SQLite's own checkpoints, and SQLite checkpoints
when the last connection to the file closes.
"""
from __future__ import annotations

import logging
import sqlite3
import threading

import gevent
import gevent.event

log = logging.getLogger("switchdesk")

EVERY = 1.0  # seconds between checkpoints
BUSY_TIMEOUT = 5.0  # seconds the checkpoint's connection waits to open the file while another sets it up


class Checkpointer:
    """A greenlet that has the database file at `path` checkpointed every `every` seconds, off the loop."""

    def __init__(self, path: str, every: float = EVERY):
        self.path = path
        self.every = every
        self.checkpoints = 0  # completed checkpoints
        self.last: tuple[int, int, int] | None = None  # (busy, frames in the log, frames checkpointed)
        self.threads: set[int] = set()  # where they ran (never the loop's thread)
        self._connection: sqlite3.Connection | None = None
        self._stopped = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._failing = False

    def start(self) -> Checkpointer:
        self._greenlet = gevent.spawn(self._run)
        return self

    def _run(self) -> None:
        while not self._stopped.wait(self.every):
            self.run_once()

    def run_once(self) -> tuple[int, int, int] | None:
        """One checkpoint in the threadpool; None (said once in the log until it works again) if it failed."""
        try:
            self.last = gevent.get_hub().threadpool.apply(self._checkpoint)
        except Exception as exc:  # a file gone or unreadable: the commits still work, the log grows meanwhile
            if not self._failing:
                log.warning("SQLite checkpoint of %s failed: %s (retried every %g s)", self.path, exc, self.every)
            self._failing = True
            return None
        if self._failing:
            log.info("SQLite checkpoint of %s works again", self.path)
            self._failing = False
        self.checkpoints += 1
        return self.last

    def _checkpoint(self) -> tuple[int, int, int]:
        self.threads.add(threading.get_ident())
        if self._connection is None:
            # its own connection, used by one threadpool thread at a time (each run waits for the last)
            self._connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False,
                                               isolation_level=None)
        busy, frames, done = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return busy, frames, done

    def stop(self) -> None:
        self._stopped.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout=self.every + BUSY_TIMEOUT)
            self._greenlet.kill()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
