"""FreeSWITCH emulator core: the inbound event socket, byte for byte as recorded.

Every reply string and framing here comes from the transcripts in
``shared/fixtures/freeswitch`` (``tests/test_fakeswitch_wire.py`` compares
them byte for byte).  The emulator deliberately does not import the parser it
is used to test: it splits the client's commands and renders events itself.

Inspect and steer it from tests: ``received`` / ``wait_for_command()``,
``commands[...]`` for api handlers, ``push_event()``, ``emit_heartbeat()``,
and faults (``drop_all()``, ``drop_mid_body()``, ``stall()``, ``restart()``,
``down()``/``up()``).  mod_callcenter's state lives in ``callcenter.py``.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import gevent.queue
import gevent.server
import gevent.socket

log = logging.getLogger("switchdesk.fakeswitch")

VERSION = (
    "FreeSWITCH Version 1.10.12-release+git~20240802T210227Z~a88d069d6f~64bit "
    "(git a88d069 2024-08-02 21:02:27Z 64bit)"
)
GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
SHUTDOWN = "The system is being shut down.\n"

# switch_url_encode(): these plus bytes outside 0x20..0x7e are %XX-encoded
# (upper-case hex).  A '%' already followed by two upper-case hex digits is
# left alone (FreeSWITCH does not double-encode).
_URL_UNSAFE = set(b'\r\n "#%&+:;<=>?@[\\]^`{|}')
_HEX = b"0123456789ABCDEF"

HeaderValue = str | list[str]
ApiHandler = Callable[[str], str]


def fs_urlencode(value: str) -> str:
    """Percent-encode a header value exactly as FreeSWITCH's event serialiser does."""
    raw = value.encode("utf-8", "surrogateescape")
    out = bytearray()
    n = len(raw)
    for i, b in enumerate(raw):
        if b == 0x25 and i + 2 < n and raw[i + 1] in _HEX and raw[i + 2] in _HEX:
            out.append(b)
        elif b < 0x20 or b > 0x7E or b in _URL_UNSAFE:
            out += b"%%%02X" % b
        else:
            out.append(b)
    return out.decode("ascii")


Headers = Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]]


def _pairs(headers: Headers) -> Iterable[tuple[str, HeaderValue]]:
    # FreeSWITCH events can repeat a header name (a CODEC event carries
    # Channel-Write-Codec-Name twice), so a list of pairs is accepted too.
    return headers.items() if isinstance(headers, Mapping) else headers


def render_plain(headers: Headers, body: str | None = None) -> bytes:
    """The body of a ``text/event-plain`` frame (switch_event_serialize)."""
    parts = []
    for name, value in _pairs(headers):
        if isinstance(value, list):
            value = "ARRAY::" + "|:".join(value)
        parts.append(f"{name}: {fs_urlencode(value)}\n")
    if body:
        raw = body.encode("utf-8")
        return ("".join(parts) + f"Content-Length: {len(raw)}\n\n").encode("utf-8") + raw
    return ("".join(parts) + "\n").encode("utf-8")


def render_json(headers: Headers, body: str | None = None) -> bytes:
    """The body of a ``text/event-json`` frame (cJSON, unformatted, duplicates kept)."""
    pairs = list(_pairs(headers))
    if body is not None:
        pairs += [("Content-Length", str(len(body.encode("utf-8")))), ("_body", body)]
    dump = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    return ("{" + ",".join(f"{dump(k)}:{dump(v)}" for k, v in pairs) + "}").encode("utf-8")


def event_frame(fmt: str, payload: bytes) -> bytes:
    """Outer frame of an event: Content-Length first, then Content-Type."""
    return b"Content-Length: %d\nContent-Type: text/event-%s\n\n" % (len(payload), fmt.encode()) + payload


def reply_frame(text: str, extra: Mapping[str, str] | None = None) -> bytes:
    lines = ["Content-Type: command/reply", f"Reply-Text: {text}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def api_frame(body: str | bytes) -> bytes:
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(raw) + raw


def disconnect_frame(text: str = GOODBYE, extra: Mapping[str, str] | None = None) -> bytes:
    raw = text.encode("utf-8")
    lines = ["Content-Type: text/disconnect-notice"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    lines.append(f"Content-Length: {len(raw)}")
    return ("\n".join(lines) + "\n\n").encode("utf-8") + raw


@dataclass
class ClientCommand:
    """One command as the client wrote it."""

    conn_id: int
    line: str
    headers: dict[str, str]
    raw: bytes

    @property
    def verb(self) -> str:
        return self.line.split(" ", 1)[0]

    @property
    def args(self) -> str:
        return self.line.split(" ", 1)[1] if " " in self.line else ""


@dataclass
class Subscription:
    fmt: str | None = None
    names: set[str] = field(default_factory=set)
    subclasses: set[str] = field(default_factory=set)
    all: bool = False
    filters: list[tuple[str, str]] = field(default_factory=list)

    def wants(self, headers: Mapping[str, HeaderValue]) -> bool:
        if self.fmt is None:
            return False
        name = headers.get("Event-Name")
        if self.all:
            ok = True
        elif name == "CUSTOM":
            sub = headers.get("Event-Subclass")
            ok = "CUSTOM" in self.names and (not self.subclasses or sub in self.subclasses)
        else:
            ok = name in self.names
        if ok and self.filters:
            ok = any(headers.get(h) == v for h, v in self.filters)
        return ok


def read_command(buf: bytearray) -> bytes | None:
    """Cut one client command (``line\\nHeader: v\\n\\n``) off the buffer."""
    while buf[:1] in (b"\n", b"\r") and buf:
        del buf[:1]
    end = buf.find(b"\n\n")
    if end < 0:
        return None
    raw = bytes(buf[:end])
    del buf[: end + 2]
    return raw


def split_command(raw: bytes) -> tuple[str, dict[str, str]]:
    lines = raw.decode("utf-8", "replace").split("\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip()] = v.strip()
    return lines[0].rstrip("\r"), headers


class Connection:
    """One client of the emulator's inbound socket."""

    def __init__(self, fs: FakeSwitch, sock: gevent.socket.socket, conn_id: int) -> None:
        self.fs = fs
        self.sock = sock
        self.id = conn_id
        self.authed = False
        self.sub = Subscription()
        self.closed = False
        self._write_lock = gevent.lock.Semaphore()
        self._busy = False  # a sync api is running: events wait (real FS)
        self._held: list[bytes] = []
        self.linger = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        with self._write_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.close()

    def deliver_event(self, frame: bytes) -> None:
        if self._busy:
            self._held.append(frame)
        else:
            self.write(frame)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(gevent.socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def goodbye(self, text: str = GOODBYE) -> None:
        self.write(disconnect_frame(text))
        self.close()

    # -- command loop -----------------------------------------------------

    def serve(self) -> None:
        buf = bytearray()
        self.write(b"Content-Type: auth/request\n\n")
        while not self.closed:
            raw = read_command(buf)
            if raw is None:
                try:
                    data = self.sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                continue
            line, headers = split_command(raw)
            cmd = ClientCommand(self.id, line, headers, raw + b"\n\n")
            self.fs._record(cmd)
            self.fs._wait_unstalled()
            if self.closed:
                break
            try:
                self.handle(cmd)
            except Exception:
                log.exception("fakeswitch: command %r failed", line)
                self.write(reply_frame("-ERR command failed"))
        self.close()

    def handle(self, cmd: ClientCommand) -> None:
        verb, args = cmd.verb, cmd.args
        if not self.authed:
            if verb == "auth":
                if args == self.fs.password:
                    self.authed = True
                    self.write(reply_frame("+OK accepted"))
                else:
                    # auth-fail.esl: reply and notice in one write, then close.
                    self.write(reply_frame("-ERR invalid") + disconnect_frame())
                    self.close()
            else:
                self.write(reply_frame("-ERR command not found"))
            return
        if verb == "api":
            self._busy = True
            try:
                body = self.fs.run_api(args)
                self.write(api_frame(body))
                if self.fs._shutdown_pending:
                    self.fs._shutdown_pending = False
                    self.fs.shutdown()
            finally:
                self._busy = False
                held, self._held = self._held, []
                for frame in held:
                    self.write(frame)
        elif verb == "bgapi":
            job = cmd.headers.get("Job-UUID") or str(uuid.uuid4())
            self.write(reply_frame(f"+OK Job-UUID: {job}", {"Job-UUID": job}))
            self.fs.group.spawn(self.fs._run_job, job, args)
        elif verb == "event":
            fmt, _, rest = args.partition(" ")
            if fmt not in ("plain", "json", "xml"):
                # mod_event_socket treats an unknown first word as an event name, plain.
                fmt, rest = "plain", args
            self.sub.fmt = fmt
            custom = False
            for word in rest.split():
                if word == "ALL":
                    self.sub.all = True
                elif word == "CUSTOM":
                    custom = True
                    self.sub.names.add("CUSTOM")
                elif custom:
                    self.sub.subclasses.add(word)
                else:
                    self.sub.names.add(word)
            self.write(reply_frame(f"+OK event listener enabled {fmt}"))
        elif verb == "noevents":
            self.sub = Subscription(filters=self.sub.filters)
            self.write(reply_frame("+OK no longer listening for events"))
        elif verb == "nixevent":
            for word in args.split():
                self.sub.names.discard(word)
                self.sub.subclasses.discard(word)
            self.write(reply_frame("+OK events nixed"))
        elif verb == "exit":
            self.write(reply_frame("+OK bye"))
            self.goodbye()
        elif verb == "log":
            level = args or "debug"
            self.write(reply_frame(f"+OK log level {level} [{_LOG_LEVELS.get(level, 7)}]"))
        elif verb == "nolog":
            self.write(reply_frame("+OK no longer logging"))
        elif verb == "filter":
            header, _, value = args.partition(" ")
            if header == "delete":
                h, _, v = value.partition(" ")
                self.sub.filters = [(a, b) for a, b in self.sub.filters if (a, b) != (h, v)]
                self.write(reply_frame(f"+OK filter deleted. [{h}]=[{v}]"))
            else:
                self.sub.filters.append((header, value))
                self.write(reply_frame(f"+OK filter added. [{header}]=[{value}]"))
        elif verb == "linger":
            self.linger = True
            self.write(reply_frame(f"+OK will linger {args} seconds" if args else "+OK will linger"))
        elif verb == "nolinger":
            self.linger = False
            self.write(reply_frame("+OK will not linger"))
        else:
            # auth-and-subscribe.esl: myevents without a uuid and unknown words.
            self.write(reply_frame("-ERR command not found"))


_LOG_LEVELS = {"console": 0, "alert": 1, "crit": 2, "err": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}


class FakeSwitch:
    """A FreeSWITCH stand-in on 127.0.0.1, port 0 by default.

    >>> fs = FakeSwitch(); fs.start(); ...; fs.stop()
    """

    def __init__(
        self,
        password: str = "ClueCon",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        heartbeat_interval: float | None = None,
        hostname: str = "vm",
    ) -> None:
        self.password = password
        self.host = host
        self.port = port
        self.hostname = hostname
        self.heartbeat_interval = heartbeat_interval
        self.group = gevent.pool.Group()
        self.connections: list[Connection] = []
        self.received: list[ClientCommand] = []
        self.commands: dict[str, ApiHandler] = {}
        self._server: gevent.server.StreamServer | None = None
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._command_event = gevent.event.Event()
        self._unstalled = gevent.event.Event()
        self._unstalled.set()
        self._started_at = time.time()
        self.core_uuid = str(uuid.uuid4())
        self.callcenter: Any = None
        self.queue_configs: dict[str, Any] = {}
        self._shutdown_pending = False
        self._install_default_commands()
        from .calls import Calls  # originate to registered phones (calls.py)

        self.calls = Calls(self)

    # -- lifecycle -----------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> FakeSwitch:
        self._server = gevent.server.StreamServer((self.host, self.port), self._accept)
        self._server.init_socket()
        self._server.start()
        self.port = self._server.server_port
        if self.heartbeat_interval:
            self.group.spawn(self._heartbeat_loop)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None
        self.drop_all()
        self._unstalled.set()
        self.group.kill(block=True, timeout=2)

    def __enter__(self) -> FakeSwitch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def down(self) -> None:
        """Stop listening and drop every connection: FreeSWITCH is gone."""
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None
        self.drop_all()

    def up(self) -> None:
        """Listen again on the same port (a restarted FreeSWITCH)."""
        if self._server is None:
            self._server = gevent.server.StreamServer((self.host, self.port), self._accept)
            self._server.start()

    def restart(self) -> None:
        """Drop everything and forget state (subscriptions, received, core uuid)."""
        self.drop_all()
        self.received.clear()
        self.core_uuid = str(uuid.uuid4())
        self._started_at = time.time()
        self._seq = itertools.count(1)
        if self.callcenter is not None and hasattr(self.callcenter, "reset"):
            self.callcenter.reset()

    def _accept(self, sock: gevent.socket.socket, addr: Any) -> None:
        # mod_event_socket sets TCP_NODELAY on inbound sockets; without it a reply followed shortly by an
        # event (bgapi, then its BACKGROUND_JOB) waits ~40 ms on Nagle and the client's delayed ACK.
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        conn = Connection(self, sock, next(self._ids))
        self.connections.append(conn)
        try:
            conn.serve()
        finally:
            conn.close()
            if conn in self.connections:
                self.connections.remove(conn)

    # -- observability -------------------------------------------------------

    def _record(self, cmd: ClientCommand) -> None:
        self.received.append(cmd)
        self._command_event.set()
        self._command_event = gevent.event.Event()

    def wait_for_command(self, predicate: Callable[[ClientCommand], bool] | str, timeout: float = 5.0) -> ClientCommand:
        """The first received command (past or future) matching; a str matches the line prefix."""
        if isinstance(predicate, str):
            prefix = predicate

            def predicate(c: ClientCommand) -> bool:
                return c.line.startswith(prefix)

        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for cmd in self.received[seen:]:
                if predicate(cmd):
                    return cmd
            seen = len(self.received)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._command_event.wait(remaining):
                raise TimeoutError("no matching command received")

    def wait_for_connections(self, count: int, timeout: float = 5.0, *, authed: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for c in self.connections if c.authed or not authed) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} connections")
            gevent.sleep(0.005)

    def wait_for_subscribers(self, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for c in self.connections if c.sub.fmt and not c.closed) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} subscribers")
            gevent.sleep(0.005)

    # -- api -------------------------------------------------------------------

    def _install_default_commands(self) -> None:
        self.commands["version"] = lambda args: VERSION + "\n"
        self.commands["status"] = self._status
        self.commands["show"] = self._show
        self.commands["uuid_kill"] = lambda args: "-ERR No such channel!\n"
        self.commands["uuid_exists"] = lambda args: "false"
        self.commands["hostname"] = lambda args: self.hostname
        self.commands["sofia"] = self._sofia
        self.commands["module_exists"] = lambda args: "true" if args in _MODULES else "false"
        self.commands["fsctl"] = self._fsctl
        self.commands["xml_flush_cache"] = self._xml_flush_cache
        try:
            from .callcenter import CallCenter
        except ImportError:
            return
        try:
            # queue_configs stands in for the callcenter.conf that mod_xml_curl would fetch.
            self.callcenter = CallCenter(
                lambda name: self.queue_configs.get(name),
                next_sequence=lambda: next(self._seq),
            )
        except Exception:  # the sibling module is written concurrently; keep the core usable
            log.exception("fakeswitch: CallCenter() failed; callcenter_config not emulated")
            return
        if getattr(self.callcenter, "on_event", "absent") is None:
            # An emitter hook: the model raises its events through us.
            self.callcenter.on_event = self._push_model_event
            self.commands["callcenter_config"] = self.callcenter.command
        else:
            self.commands["callcenter_config"] = self._callcenter_command

    def _callcenter_command(self, args: str) -> str:
        """Run callcenter_config and deliver the events it fired (after the reply, as FS does)."""
        fired = getattr(self.callcenter, "fired", None)
        start = len(fired) if fired is not None else 0
        reply = self.callcenter.command(args)
        for ev in (fired or [])[start:]:
            self._push_model_event(ev)
        return reply

    def _push_model_event(self, ev: Any, body: str | None = None) -> None:
        headers = getattr(ev, "headers", ev)
        self.push_event(headers if isinstance(headers, Mapping) else list(headers), getattr(ev, "body", body))

    def run_api(self, line: str) -> str:
        """What ``api <line>`` answers (also used for bgapi jobs)."""
        name, _, args = line.partition(" ")
        handler = self.commands.get(name)
        if handler is None:
            return f"-ERR {name} Command not found!\n"
        result = handler(args)
        return result if result else "-ERR no reply\n"

    def _xml_flush_cache(self, args: str) -> str:
        """FreeSWITCH's user cache (which the emulator does not keep): counted, answered as FS answers."""
        self.xml_flushes = getattr(self, "xml_flushes", 0) + 1
        return "+OK cleared 0 entries\n"

    def _status(self, args: str) -> str:
        up = max(0, time.time() - self._started_at)
        mins, secs = divmod(int(up), 60)
        hours, mins = divmod(mins, 60)
        days, hours = divmod(hours, 24)
        ms = int((up - int(up)) * 1000)
        return (
            f"UP 0 years, {days} days, {hours} hours, {mins} minutes, {secs} seconds, {ms} milliseconds, "
            "0 microseconds\n"
            "FreeSWITCH (Version 1.10.12-release git a88d069 2024-08-02 21:02:27Z 64bit) is ready\n"
            "0 session(s) since startup\n"
            "0 session(s) - peak 0, last 5min 0 \n"
            "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
            "100 session(s) max\n"
            "min idle cpu 0.00/100.00\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    def _show(self, args: str) -> str:
        # api-basic.esl, with no calls running.
        if args in ("channels as json", "calls as json"):
            return '{"row_count": 0}\n'
        if args in ("channels", "calls", "channels count", "calls count"):
            return "\n0 total.\n"
        return "-ERR no reply\n"

    def _sofia(self, args: str) -> str:
        if args == "status":
            return (
                "                     Name\t   Type\t                                      Data\tState\n"
                + "=" * 97 + "\n"
                "                127.0.0.1\t  alias\t                                  internal\tALIASED\n"
                "                 internal\tprofile\t              sip:mod_sofia@127.0.0.1:5060\tRUNNING (0)\n"
                + "=" * 97 + "\n"
                "1 profile 1 alias\n"
            )
        return "Invalid Profile!\n"

    def _fsctl(self, args: str) -> str:
        if args == "shutdown":
            self._shutdown_pending = True  # after the +OK has been written
            return "+OK\n"
        return "-ERR no reply\n"

    def shutdown(self) -> None:
        """shutdown-disconnect.esl: SHUTDOWN event, then the shutdown notice to everyone."""
        self.push_event(self.make_event("SHUTDOWN", {"Event-Info": "System Shutting Down"}))
        for conn in list(self.connections):
            conn.goodbye(SHUTDOWN)

    def _run_job(self, job: str, args: str) -> None:
        body = self.run_api(args)
        name, _, rest = args.partition(" ")
        extra = {"Job-UUID": job, "Job-Command": name}
        if rest:
            extra["Job-Command-Arg"] = rest
        headers = self.make_event("BACKGROUND_JOB", extra, calling=("mod_event_socket.c", "api_exec", "1572"))
        self.push_event(headers, body)

    # -- events ---------------------------------------------------------------

    def make_event(
        self,
        name: str,
        extra: Mapping[str, HeaderValue] | None = None,
        *,
        subclass: str | None = None,
        calling: tuple[str, str, str] = ("switch_core.c", "send_heartbeat", "95"),
        timestamp: float | None = None,
    ) -> dict[str, HeaderValue]:
        """The standard header block of a FreeSWITCH event, in FreeSWITCH's order."""
        now = time.time() if timestamp is None else timestamp
        lt = time.localtime(now)
        headers: dict[str, HeaderValue] = {"Event-Name": name}
        if subclass:
            headers["Event-Subclass"] = subclass
        headers.update(
            {
                "Core-UUID": self.core_uuid,
                "FreeSWITCH-Hostname": self.hostname,
                "FreeSWITCH-Switchname": self.hostname,
                "FreeSWITCH-IPv4": "192.0.2.2",
                "FreeSWITCH-IPv6": "fd00::2",
                "Event-Date-Local": time.strftime("%Y-%m-%d %H:%M:%S", lt),
                "Event-Date-GMT": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)),
                "Event-Date-Timestamp": str(int(now * 1e6)),
                "Event-Calling-File": calling[0],
                "Event-Calling-Function": calling[1],
                "Event-Calling-Line-Number": calling[2],
                "Event-Sequence": str(next(self._seq)),
            }
        )
        if extra:
            headers.update(extra)
        return headers

    def push_event(self, headers: Headers, body: str | None = None) -> int:
        """Send an event to every subscribed connection; returns how many got it.

        Rendered once per format, in the header order given.  Blocks while a
        client's socket is full (the same TCP backpressure FreeSWITCH meets).
        """
        if not isinstance(headers, Mapping):
            headers = list(headers)
            lookup: Mapping[str, HeaderValue] = dict(headers)
        else:
            lookup = headers
        rendered: dict[str, bytes] = {}
        count = 0
        for conn in list(self.connections):
            if conn.closed or not conn.authed or not conn.sub.wants(lookup):
                continue
            fmt = conn.sub.fmt if conn.sub.fmt in ("plain", "json") else "plain"
            frame = rendered.get(fmt)
            if frame is None:
                payload = render_json(headers, body) if fmt == "json" else render_plain(headers, body)
                frame = rendered[fmt] = event_frame(fmt, payload)
            conn.deliver_event(frame)
            count += 1
        return count

    def push_raw(self, data: bytes, *, only_subscribed: bool = True) -> None:
        """Write raw bytes to every (subscribed) connection, for malformed-input tests."""
        for conn in list(self.connections):
            if conn.authed and (conn.sub.fmt or not only_subscribed):
                conn.write(data)

    def burst(self, frames: Iterable[bytes], repeat: int = 1) -> int:
        """Write pre-rendered event frames to every subscriber, ``repeat`` times.

        Writes ~64 KiB at a time so the emulator is not the bottleneck of a
        benchmark; memory stays bounded because sendall blocks on a slow client.
        """
        one = b"".join(frames)
        count = one.count(b"Content-Type: text/event-")
        per = max(1, 65536 // max(1, len(one)))
        block = one * per
        conns = [c for c in self.connections if c.authed and c.sub.fmt]
        remaining = repeat
        while remaining > 0:
            n = min(per, remaining)
            data = block if n == per else one * n
            for c in conns:
                c.write(data)
            remaining -= n
        return repeat * count

    def render(self, fmt: str, headers: Headers, body: str | None = None) -> bytes:
        payload = render_json(headers, body) if fmt == "json" else render_plain(headers, body)
        return event_frame(fmt, payload)

    def emit_heartbeat(self) -> int:
        """A HEARTBEAT like the recorded one (auth-and-subscribe.esl)."""
        up = time.time() - self._started_at
        extra = {
            "Event-Info": "System Ready",
            "Up-Time": f"0 years, 0 days, 0 hours, 0 minutes, {int(up)} seconds, 0 milliseconds, 0 microseconds",
            "FreeSWITCH-Version": "1.10.12-release+git~20240802T210227Z~a88d069d6f~64bit",
            "Uptime-msec": str(int(up * 1000)),
            "Session-Count": "0",
            "Max-Sessions": "100",
            "Session-Per-Sec": "30",
            "Session-Per-Sec-Last": "0",
            "Session-Per-Sec-Max": "0",
            "Session-Per-Sec-FiveMin": "0",
            "Session-Since-Startup": "0",
            "Session-Peak-Max": "0",
            "Session-Peak-FiveMin": "0",
            "Idle-CPU": "99.000000",
        }
        return self.push_event(self.make_event("HEARTBEAT", extra))

    def _heartbeat_loop(self) -> None:
        while True:
            gevent.sleep(self.heartbeat_interval or 20.0)
            self.emit_heartbeat()

    # -- faults ----------------------------------------------------------------

    def drop_all(self) -> None:
        """Close every connection without a notice (a crash or a cut cable)."""
        for conn in list(self.connections):
            conn.close()

    def drop_mid_body(self, announced: int = 4096, partial: bytes = b"+OK partial") -> None:
        """Announce a body of ``announced`` bytes, send only ``partial``, close."""
        head = b"Content-Type: api/response\nContent-Length: %d\n\n" % announced
        for conn in list(self.connections):
            conn.write(head + partial)
            conn.close()

    def stall(self, seconds: float | None = None) -> None:
        """Stop answering commands for ``seconds`` (None: until ``unstall()``)."""
        self._unstalled.clear()
        if seconds is not None:
            self.group.add(gevent.spawn_later(seconds, self._unstalled.set))

    def unstall(self) -> None:
        self._unstalled.set()

    def _wait_unstalled(self) -> None:
        self._unstalled.wait()

    # -- outbound socket ---------------------------------------------------------

    def connect_outbound(
        self,
        host: str,
        port: int,
        channel_data_headers: Mapping[str, HeaderValue] | None = None,
        *,
        mode: str = "async",
        **kwargs: Any,
    ) -> Any:
        """Play FreeSWITCH's side of ``socket host:port [async] full`` (see outbound.py here)."""
        call = FakeOutboundCall(self, host, port, channel_data_headers, mode=mode, **kwargs)
        call.start()
        return call


_MODULES = {"mod_callcenter", "mod_event_socket", "mod_sofia", "mod_commands", "mod_dptools", "mod_xml_curl"}


def default_channel(destination: str = "***1234", caller: str = "1000") -> dict[str, HeaderValue]:
    """A trimmed version of the channel block FreeSWITCH sends in CHANNEL_DATA."""
    chan_uuid = str(uuid.uuid4())
    name = f"sofia/internal/{caller}@127.0.0.1"
    return {
        "Channel-State": "CS_EXECUTE",
        "Channel-Call-State": "RINGING",
        "Channel-State-Number": "4",
        "Channel-Name": name,
        "Unique-ID": chan_uuid,
        "Call-Direction": "inbound",
        "Presence-Call-Direction": "inbound",
        "Channel-HIT-Dialplan": "true",
        "Channel-Call-UUID": chan_uuid,
        "Answer-State": "ringing",
        "Caller-Direction": "inbound",
        "Caller-Username": caller,
        "Caller-Caller-ID-Name": caller,
        "Caller-Caller-ID-Number": caller,
        "Caller-Destination-Number": destination,
        "Caller-Unique-ID": chan_uuid,
        "Caller-Context": "default",
        "Caller-Channel-Name": name,
        "variable_direction": "inbound",
        "variable_uuid": chan_uuid,
        "variable_channel_name": name,
        "variable_destination_number": destination,
        "variable_DP_MATCH": [destination, destination.lstrip("*")],
        "variable_current_application_data": "127.0.0.1:8040 async full",
        "variable_current_application": "socket",
        "variable_socket_host": "127.0.0.1",
    }


class FakeOutboundCall:
    """FreeSWITCH's side of one outbound-socket session (outbound-socket-*.esl).

    Connects to the application's server, waits for ``connect``, answers with
    the CHANNEL_DATA reply, then obeys ``myevents``, ``linger``, ``sendmsg``
    (execute / hangup), ``api`` and ``exit`` with the recorded framings.
    ``hangup_by_caller()`` plays the caller's BYE.
    """

    def __init__(
        self,
        fs: FakeSwitch,
        host: str,
        port: int,
        channel_data_headers: Mapping[str, HeaderValue] | None = None,
        *,
        mode: str = "async",
        playback_seconds: float = 0.02,
    ) -> None:
        self.fs = fs
        self.host, self.port = host, port
        self.channel: dict[str, HeaderValue] = dict(channel_data_headers or default_channel())
        self.uuid = str(self.channel.get("Unique-ID") or uuid.uuid4())
        self.mode = mode
        self.playback_seconds = playback_seconds
        self.received: list[ClientCommand] = []
        self.events_sent: list[str] = []
        self.myevents = False
        self.linger: float | None = None  # -1 for a bare ``linger``
        self.answered = False
        self.hungup = gevent.event.Event()
        self.closed = gevent.event.Event()
        self._sock: gevent.socket.socket | None = None
        self._apps: gevent.queue.Queue = gevent.queue.Queue()
        self._app_idle = gevent.event.Event()
        self._app_idle.set()
        self._write_lock = gevent.lock.Semaphore()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = self.fs.group.spawn(self._run)

    def wait_closed(self, timeout: float = 5.0) -> bool:
        return self.closed.wait(timeout)

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None or self.closed.is_set():
            return
        with self._write_lock:
            try:
                sock.sendall(data)
            except OSError:
                self._close()

    def _close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(gevent.socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _event(self, name: str, extra: Mapping[str, HeaderValue] | None = None) -> None:
        headers = self.fs.make_event(name, calling=("switch_channel.c", "switch_channel_perform_event", "0"))
        headers.update(self.channel)
        if extra:
            headers.update(extra)
        if self.myevents:
            self.events_sent.append(name)
            self._write(event_frame("plain", render_plain(headers)))

    def _channel_data(self) -> bytes:
        headers = self.fs.make_event("CHANNEL_DATA", calling=("mod_event_socket.c", "parse_command", "0"))
        headers.update(self.channel)
        head = render_plain(headers)[:-1]  # drop the blank line: the reply headers follow
        mode = "async" if self.mode == "async" else "static"
        tail = f"Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: {mode}\nControl: full\n\n"
        return head + tail.encode()

    def _run(self) -> None:
        try:
            self._sock = gevent.socket.create_connection((self.host, self.port), timeout=5)
            self._sock.settimeout(None)
        except OSError:
            self.closed.set()
            return
        if self.mode == "async":
            self.fs.group.spawn(self._app_worker)
        buf = bytearray()
        while not self.closed.is_set():
            raw = read_command(buf)
            if raw is None:
                sock = self._sock
                if sock is None:
                    break
                try:
                    data = sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                continue
            line, headers = split_command(raw)
            cmd = ClientCommand(0, line, headers, raw + b"\n\n")
            self.received.append(cmd)
            self.fs._record(cmd)
            self._handle(cmd)
        self._close()

    def _handle(self, cmd: ClientCommand) -> None:
        verb, args = cmd.verb, cmd.args
        if verb == "connect":
            self._write(self._channel_data())
        elif verb == "myevents":
            self.myevents = True
            self._write(reply_frame("+OK Events Enabled"))
        elif verb == "linger":
            self.linger = float(args) if args else -1
            self._write(reply_frame(f"+OK will linger {args} seconds" if args else "+OK will linger"))
        elif verb == "exit":
            self._write(reply_frame("+OK bye"))
            self._final_notice()
        elif verb == "api":
            self._write(api_frame(self._api(args)))
        elif verb == "sendmsg":
            self._write_sendmsg(cmd.headers)
        elif verb == "event":
            self._write(reply_frame("+OK event listener enabled plain"))
        else:
            self._write(reply_frame("-ERR command not found"))

    def _api(self, args: str) -> str:
        name, _, rest = args.partition(" ")
        if name == "uuid_getvar":
            _, _, var = rest.partition(" ")
            value = self.channel.get(f"variable_{var}")
            if value is None:
                return "_undef_"
            return value if isinstance(value, str) else "|".join(value)
        if name == "uuid_kill" and rest.split(" ", 1)[0] == self.uuid:
            self.fs.group.spawn(self._hangup, "NORMAL_CLEARING")
            return "+OK\n"
        return self.fs.run_api(args)

    def _write_sendmsg(self, headers: dict[str, str]) -> None:
        command = headers.get("call-command", "")
        if self.hungup.is_set():
            self._write(reply_frame("-ERR Channel has been hung up"))
            return
        if command == "hangup":
            self._write(reply_frame("+OK"))
            self.fs.group.spawn(self._hangup, headers.get("hangup-cause", "NORMAL_CLEARING"))
        elif command == "execute":
            app = headers.get("execute-app-name", "")
            arg = headers.get("execute-app-arg")
            app_uuid = headers.get("Event-UUID") or str(uuid.uuid4())
            if self.mode == "async":
                self._write(reply_frame("+OK"))
                self._app_idle.clear()
                self._apps.put((app, arg, app_uuid))
            else:
                # Static mode: +OK only when the application has finished, then its events.
                response = self._execute(app, arg)
                self._write(reply_frame("+OK"))
                self._app_events(app, arg, app_uuid, response)
        else:
            self._write(reply_frame("-ERR invalid command"))

    def _app_worker(self) -> None:
        while not self.closed.is_set():
            app, arg, app_uuid = self._apps.get()
            self._app_events(app, arg, app_uuid, None)
            if self._apps.empty():
                self._app_idle.set()

    def _app_events(self, app: str, arg: str | None, app_uuid: str, response: str | None) -> None:
        data = {"Application": app}
        if arg:
            data["Application-Data"] = arg
        self._event("CHANNEL_EXECUTE", {**data, "Application-UUID": app_uuid})
        if response is None:
            response = self._execute(app, arg)
        self._event(
            "CHANNEL_EXECUTE_COMPLETE",
            {**data, "Application-Response": response, "Application-UUID": app_uuid},
        )

    def _execute(self, app: str, arg: str | None) -> str:
        if app == "answer":
            if not self.answered:
                self.answered = True
                self.channel["Answer-State"] = "answered"
                self.channel["Channel-Call-State"] = "ACTIVE"
                self._event("CHANNEL_ANSWER")
            return "_none_"
        if app == "playback":
            interrupted = self.hungup.wait(self.playback_seconds)
            return "PLAYBACK ERROR" if interrupted else "FILE PLAYED"
        if app == "hangup":
            self.fs.group.spawn(self._hangup, arg or "NORMAL_CLEARING")
            return "_none_"
        if app == "sleep":
            self.hungup.wait(float(arg or 0) / 1000)
        return "_none_"

    def hangup_by_caller(self, cause: str = "NORMAL_CLEARING") -> None:
        """The caller sends BYE (outbound-socket-caller-hangup.esl)."""
        self.fs.group.spawn(self._hangup, cause)

    def _hangup(self, cause: str) -> None:
        if self.hungup.is_set():
            return
        self.channel["Answer-State"] = "hangup"
        self.channel["Channel-Call-State"] = "HANGUP"
        self._event("CHANNEL_HANGUP", {"Hangup-Cause": cause})
        self.hungup.set()
        if self.linger is None:
            # outbound-socket-sync.esl: no linger, the final notice at once.
            self._final_notice()
            return
        self._app_idle.wait(2)
        self._event("CHANNEL_UNPARK")
        self._event("CHANNEL_EXECUTE_COMPLETE", {"Application": "socket", "Application-Response": "_none_"})
        self._event("CHANNEL_STATE", {"Channel-State": "CS_HANGUP"})
        self._event("CHANNEL_STATE", {"Channel-State": "CS_REPORTING"})
        self._event("CHANNEL_HANGUP_COMPLETE", {"Hangup-Cause": cause})
        linger = int(self.linger)
        notice = (
            "Content-Type: text/disconnect-notice\n"
            f"Controlled-Session-UUID: {self.uuid}\n"
            "Content-Disposition: linger\n"
            f"Channel-Name: {self.channel.get('Channel-Name', '')}\n"
            f"Linger-Time: {linger}\n"
            "Content-Length: 0\n\n"
        )
        self._write(notice.encode())
        if linger >= 0:
            gevent.sleep(linger)
            self._final_notice()

    def _final_notice(self) -> None:
        self._write(
            disconnect_frame(
                GOODBYE,
                {"Controlled-Session-UUID": self.uuid, "Content-Disposition": "disconnect"},
            )
        )
        self._close()
