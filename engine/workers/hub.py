"""The line between the engine process and its workers (see engine.workers).

Messages are one JSON object per line, `t` naming the kind:

* `n` — a committed change (`k` kind, `a` account id, `i` ids); with `r`, the sender waits for
  `a` (acknowledged, same `r`) until every other process has handed it to its listeners;
* `a` — that acknowledgement;
* `t` — statistics touched (`a`, `q` queue ids or null for any, `g` agent ids or null);
* `w` — push events recorded for account `a` (a worker to the engine process, the engine process to the
  webhook sender's process);
* `s` — the engine's status (`s`: the `/api/status` fields, null without an engine; engine process
  to workers only);
* `r` — a worker is accepting requests (the engine starts once one is: FreeSWITCH asks it for the
  configuration of every queue the first sync loads);
* `h` — a worker's hello (`pid`, `role`: "http" or "deliver", `lost`: it may have missed sending something
  since it last spoke).

Whatever one side hears it hands to its own listeners exactly as a local commit would; the engine
process also relays what one worker said to the others. A process hears every other process's
changes only while its line is up: `changes.hearing` tells the in-memory views (engine.directory.views)
when that stops, so they forget what they kept. A worker whose line dropped tells the engine process
so when it is back (`lost`): the engine then syncs mod_callcenter in full, as after any gap.

A change made through the API is served by every worker from the moment the API call returns: the
worker that committed it waits (at most ACK_TIMEOUT) until every other worker has dropped what it kept
of it and then the engine process has heard it (last, since its engine may at once make FreeSWITCH
fetch what changed, from any worker). Sending never blocks the sender's loop otherwise: every line has its
own bounded queue and writer greenlet, and a receiver that falls too far behind is disconnected (it
reconnects, and forgets its cache).
"""
from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.queue
from gevent.server import StreamServer

from engine.events import outbox
from engine.stats import hub as stats_hub
from engine.store import changes

log = logging.getLogger("switchdesk.workers")

MAX_QUEUED = 20000  # messages waiting for one line; past that the line is dropped and re-established
MAX_LINE = 1 << 20  # a longer line is not ours
STATUS_EVERY = 0.5  # seconds between the engine's status snapshots
RECONNECT_EVERY = 0.2
ACK_TIMEOUT = 2.0  # a worker waits this long at most for the others to have heard its change


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class _Line:
    """One connected socket: a writer greenlet drains its queue, so a slow peer never blocks a sender."""

    def __init__(self, sock: socket.socket, on_overflow: Callable[[], None]) -> None:
        self.sock = sock
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.on_overflow = on_overflow
        self.closed = False
        self.writer = gevent.spawn(self._write)

    def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= MAX_QUEUED:
            log.warning("worker line: %d messages waiting; dropping the line", MAX_QUEUED)
            self.close()
            self.on_overflow()
            return
        self.queue.put(_encode(message))

    def _write(self) -> None:
        try:
            while True:
                chunk = self.queue.get()
                if chunk is None:
                    return
                parts = [chunk]
                while not self.queue.empty() and len(parts) < 512:  # one write for what piled up
                    more = self.queue.get_nowait()
                    if more is None:
                        self.sock.sendall(b"".join(parts))
                        return
                    parts.append(more)
                self.sock.sendall(b"".join(parts))
        except OSError:
            self.close()

    def lines(self) -> Any:
        """The messages read from the socket, until it closes."""
        buffer = b""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            if b"\n" not in buffer:
                if len(buffer) > MAX_LINE:
                    log.error("worker line: a line of over %d bytes; closing", MAX_LINE)
                    return
                continue
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                try:
                    message = json.loads(raw)
                except ValueError:
                    log.error("worker line: not JSON, ignored: %r", raw[:200])
                    continue
                if isinstance(message, dict):
                    yield message

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.queue.put(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class _Relay:
    """What both sides do with a message heard, and how they hear their own process's news."""

    relay_changes: bool

    def __init__(self) -> None:
        self._source: object | None = None  # the line whose message is being handed on (not sent back)
        self._relaying_numbered = False  # ... and whether it waits for acknowledgements

    def _deliver(self, source: object, message: dict[str, Any]) -> None:
        kind = message.get("t")
        self._source = source
        self._relaying_numbered = "r" in message
        try:
            if kind == "n":
                ids = message.get("i")
                if self.relay_changes and isinstance(message.get("k"), str) and type(message.get("a")) is int \
                        and isinstance(ids, list):
                    changes.deliver(message["k"], message["a"], [i for i in ids if type(i) is int])
                self._heard(source, message)
            elif kind == "t" and type(message.get("a")) is int:
                stats_hub.touch(message["a"], message.get("q"), message.get("g"))
            elif kind == "w" and type(message.get("a")) is int:
                outbox.announce(message["a"])
        finally:
            self._source = None
            self._relaying_numbered = False

    def _heard(self, source: Any, message: dict[str, Any]) -> None:
        """A change from `source` was handed to this process's listeners (acknowledge or relay it)."""

    def _heard_change(self, kind: str, account_id: int, ids: list[int]) -> None:
        if self.relay_changes:
            self._broadcast({"t": "n", "k": kind, "a": account_id, "i": ids})

    def _heard_touch(self, account_id: int, queues: Any, agents: Any) -> None:
        self._broadcast({"t": "t", "a": account_id, "q": None if queues is None else sorted(queues),
                         "g": None if agents is None else sorted(agents)})

    def _broadcast(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def _listen(self) -> None:
        changes.listen(self._heard_change)
        stats_hub.on_touch(self._heard_touch)

    def _unlisten(self) -> None:
        changes.unlisten(self._heard_change)
        stats_hub.unhear_touch(self._heard_touch)


class Hub(_Relay):
    """The engine process's end: accepts the workers' lines, relays between them, sends the status."""

    def __init__(self, path: str, *, relay_changes: bool, status: Callable[[], dict[str, Any] | None],
                 on_lost: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.path = path
        self.relay_changes = relay_changes
        self.status = status
        self.on_lost = on_lost
        self.lines: dict[_Line, int] = {}  # line -> the worker's pid
        self.senders: set[_Line] = set()  # the lines of the webhook sender's process (role "deliver")
        self._wakes: set[int] = set()  # accounts with new events, told the sender once per turn of the loop
        self._server: StreamServer | None = None
        self._status_loop: gevent.Greenlet | None = None
        # a worker's change relayed to the other workers: number -> (its line, its message, lines yet to ack)
        self._waiting: dict[int, tuple[_Line, dict[str, Any], set[_Line]]] = {}
        self._numbers = 0
        self._unwake: Callable[[], None] = lambda: None
        self.ready = gevent.event.Event()  # a worker accepts requests

    def start(self) -> Hub:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if os.path.exists(self.path):
            os.unlink(self.path)
        listener.bind(self.path)
        os.chmod(self.path, 0o600)
        listener.listen(64)
        self._server = StreamServer(listener, self._handle)
        self._server.start()
        self._listen()
        self._unwake = outbox.on_commit(self._recorded)
        changes.hearing(self, True)
        self._status_loop = gevent.spawn(self._send_status)
        return self

    def stop(self) -> None:
        self._unlisten()
        self._unwake()
        changes.hearing(self, False)
        if self._status_loop is not None:
            self._status_loop.kill(block=False)
        if self._server is not None:
            self._server.stop(timeout=1)
        for line in list(self.lines):
            line.close()

    def _snapshot(self) -> dict[str, Any]:
        try:
            return {"t": "s", "s": self.status()}
        except Exception:
            log.exception("engine status for the workers failed")
            return {"t": "s", "s": None}

    def _send_status(self) -> None:
        while True:
            gevent.sleep(STATUS_EVERY)
            message = self._snapshot()
            for line in list(self.lines):
                line.send(message)

    def _handle(self, sock: socket.socket, _address: Any) -> None:
        line = _Line(sock, on_overflow=self._lost)
        self.lines[line] = 0
        line.send(self._snapshot())
        orderly = False
        try:
            for message in line.lines():
                if message.get("t") == "h":
                    self.lines[line] = message.get("pid") or 0
                    if message.get("role") == "deliver":
                        self.senders.add(line)
                    if message.get("lost"):
                        log.warning("worker %s may have missed telling its changes: syncing everything",
                                    self.lines[line])
                        self._lost()
                    continue
                if message.get("t") == "bye":
                    orderly = True
                    continue
                if message.get("t") == "r":
                    self.ready.set()
                    continue
                if message.get("t") == "a":
                    self._acked(line, message.get("r"))
                    continue
                self._deliver(line, message)
        finally:
            self.lines.pop(line, None)
            self.senders.discard(line)
            line.close()
            for number, (origin, _message, _pending) in list(self._waiting.items()):
                if origin is line:
                    self._complete(number)  # heard here all the same; nobody waits for the answer
                else:
                    self._acked(line, number)
            if not orderly:
                # it may have committed a change it had not told yet: nothing kept may be trusted
                self._lost()

    def _deliver(self, source: object, message: dict[str, Any]) -> None:
        if message.get("t") == "n" and "r" in message and isinstance(source, _Line):
            self._relay_first(source, message)
        else:
            super()._deliver(source, message)

    def _relay_first(self, source: _Line, message: dict[str, Any]) -> None:
        """A worker's change: the other workers drop what they kept first, then this process hears it (its
        engine may make FreeSWITCH fetch what changed at once, from any worker), then the worker is told."""
        others = {line for line in self.lines
                  if line is not source and not line.closed and line not in self.senders}
        self._numbers += 1
        number = self._numbers
        self._waiting[number] = (source, message, others)
        relayed = {k: v for k, v in message.items() if k != "r"}
        relayed["r"] = number
        for line in others:
            line.send(relayed)
        if others:
            gevent.spawn_later(ACK_TIMEOUT, self._complete, number)  # a worker that never answers holds no one
        else:
            self._complete(number)

    def _acked(self, line: _Line, number: Any) -> None:
        entry = self._waiting.get(number) if type(number) is int else None
        if entry is None:
            return
        entry[2].discard(line)
        if not entry[2]:
            self._complete(number)

    def _complete(self, number: int) -> None:
        entry = self._waiting.pop(number, None)
        if entry is None:
            return
        source, message, _pending = entry
        super()._deliver(source, message)  # this process's listeners (not relayed again: see _broadcast)
        source.send({"t": "a", "r": message["r"]})  # dropped if its line has closed

    def _lost(self) -> None:
        changes.hearing(self, False)
        changes.hearing(self, True)
        if self.on_lost is not None:
            self.on_lost()

    def _broadcast(self, message: dict[str, Any]) -> None:
        if self._source is not None and message.get("t") == "n" and self._relaying_numbered:
            return  # _heard sends it with its number, to be acknowledged
        for line in list(self.lines):
            if line is not self._source and line not in self.senders:
                line.send(message)

    def _recorded(self, account_id: int) -> None:
        """Events were committed for the account (here or in a worker): wake the sender, once per turn."""
        if not self._wakes:
            gevent.get_hub().loop.run_callback(self._wake_senders)
        self._wakes.add(account_id)

    def _wake_senders(self) -> None:
        accounts, self._wakes = self._wakes, set()
        for account_id in accounts:
            for line in list(self.senders):
                line.send({"t": "w", "a": account_id})


class HubClient(_Relay):
    """A worker's end: keeps its line to the engine process up and holds the last engine status."""

    def __init__(self, path: str, *, relay_changes: bool, announce: bool = True, role: str = "http") -> None:
        super().__init__()
        self.path = path
        self.relay_changes = relay_changes
        self.announce = announce  # tell the engine process of the events this process records
        self.role = role
        self.line: _Line | None = None
        self.status: dict[str, Any] | None = None
        self.status_at = 0.0
        self.connected = gevent.event.Event()
        self._lost = False
        self._greenlet: gevent.Greenlet | None = None
        self._unwake: Callable[[], None] | None = None
        self._acks: dict[int, gevent.event.Event] = {}
        self._numbers = 0
        self._serving = False

    def start(self) -> HubClient:
        if self.relay_changes:
            self._listen()
        if self.announce:
            self._unwake = outbox.on_commit(self._recorded)
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        self._unlisten()
        if self._unwake is not None:
            self._unwake()
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        line = self.line
        if line is not None:
            line.send({"t": "bye"})
            gevent.sleep(0)
            gevent.wait([line.writer], timeout=1)
            line.close()
        changes.hearing(self, False)

    def serving(self) -> None:
        """Tell the engine process this worker accepts requests (now and after every reconnect)."""
        self._serving = True
        self._send({"t": "r"})

    def _recorded(self, account_id: int) -> None:
        if self._source is None:  # not the engine process's wake being handed on
            self._send({"t": "w", "a": account_id})

    def _send(self, message: dict[str, Any]) -> None:
        line = self.line
        if line is None or line.closed:
            self._lost = True  # told when the line is back
            return
        line.send(message)

    def _broadcast(self, message: dict[str, Any]) -> None:
        if self._source is not None:  # what the engine process just told us
            return
        if message.get("t") != "n" or self.line is None:
            self._send(message)
            return
        # a change this worker committed: the API call returns once every process has heard it
        self._numbers += 1
        number = self._numbers
        done = self._acks[number] = gevent.event.Event()
        try:
            self._send({**message, "r": number})
            if not done.wait(ACK_TIMEOUT):
                log.warning("worker: the other processes did not confirm a %s change in %.0f s", message.get("k"),
                            ACK_TIMEOUT)
        finally:
            self._acks.pop(number, None)

    def _heard(self, source: Any, message: dict[str, Any]) -> None:
        if "r" in message:
            self._send({"t": "a", "r": message["r"]})

    def _run(self) -> None:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                gevent.sleep(RECONNECT_EVERY)
                continue
            line = self.line = _Line(sock, on_overflow=lambda: None)
            line.send({"t": "h", "pid": os.getpid(), "lost": self._lost, "role": self.role})
            if self._serving:
                line.send({"t": "r"})
            self._lost = False
            changes.hearing(self, True)
            self.connected.set()
            try:
                for message in line.lines():
                    if message.get("t") == "s":
                        self.status = message.get("s")
                        self.status_at = gevent.get_hub().loop.now()
                    elif message.get("t") == "a":
                        done = self._acks.get(message.get("r"))  # type: ignore[arg-type]
                        if done is not None:
                            done.set()
                    else:
                        self._deliver(line, message)
            finally:
                self.connected.clear()
                for done in self._acks.values():
                    done.set()  # nobody will confirm: go on
                changes.hearing(self, False)
                self.line = None
                line.close()
                self._lost = True
            log.warning("worker: the line to the engine process dropped; reconnecting")
            gevent.sleep(RECONNECT_EVERY)
