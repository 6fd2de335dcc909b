"""Read the FreeSWITCH-side events out of the recorded ``*.esl`` transcripts.

The emulator builds its ``callcenter::info`` and channel events from the real
recordings (header names and order), so it needs the events as ordered header
lists.  This loader is deliberately self-contained: it only needs the transcript
format described in the fixtures README ("Transcript file format").
"""

from __future__ import annotations

import json
import os
import re
from functools import cache
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote

_REPO = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(rb"(>>> SEND|<<< RECV) (\d+) @([0-9.]+)\n")


class Event(NamedTuple):
    """One event: ``(header, value)`` pairs in wire order, plus the body (or None)."""

    headers: list[tuple[str, str]]
    body: str | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` (events never repeat a header name)."""
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def names(self) -> list[str]:
        """Header names in order: what the emulator must reproduce."""
        return [k for k, _ in self.headers]


class Exchange(NamedTuple):
    """A command the client sent and the api/command reply body it got."""

    command: str
    reply: bytes


def fixtures_dir() -> Path:
    """``SWITCHDESK_FIXTURES`` if set, else the copy in the repository (``tests/recordings/freeswitch``)."""
    env = os.environ.get("SWITCHDESK_FIXTURES")
    if env:
        return Path(env)
    return _REPO / "tests" / "recordings" / "freeswitch"


def _blocks(raw: bytes) -> list[tuple[str, bytes]]:
    """Split a transcript into ``(SEND|RECV, payload)`` blocks, byte-exact."""
    pos = 0
    while raw.startswith(b"###", pos):
        pos = raw.index(b"\n", pos) + 1
    out: list[tuple[str, bytes]] = []
    while pos < len(raw):
        m = _BLOCK.match(raw, pos)
        if m is None:
            raise ValueError(f"bad block header at byte {pos}: {raw[pos:pos + 40]!r}")
        n = int(m.group(2))
        start = m.end()
        out.append(("SEND" if m.group(1).startswith(b">>>") else "RECV", raw[start:start + n]))
        pos = start + n + 1
    return out


def _frames(stream: bytes) -> list[tuple[list[tuple[str, str]], bytes]]:
    """Parse ESL framing: outer header block plus its Content-Length body."""
    frames: list[tuple[list[tuple[str, str]], bytes]] = []
    pos = 0
    while pos < len(stream):
        end = stream.find(b"\n\n", pos)
        if end < 0:
            break
        head: list[tuple[str, str]] = []
        for line in stream[pos:end].decode("utf-8", "replace").split("\n"):
            k, _, v = line.partition(": ")
            head.append((k, v))
        pos = end + 2
        length = next((int(v) for k, v in head if k == "Content-Length"), 0)
        frames.append((head, stream[pos:pos + length]))
        pos += length
    return frames


def _plain_event(body: bytes) -> Event:
    """A text/event-plain body: percent-encoded ``Name: value`` lines, maybe a body."""
    text = body.decode("utf-8", "replace")
    head_text, sep, rest = text.partition("\n\n")
    headers: list[tuple[str, str]] = []
    for line in head_text.split("\n"):
        if not line:
            continue
        k, _, v = line.partition(": ")
        headers.append((k, unquote(v)))
    ev_body: str | None = None
    if sep and any(k == "Content-Length" for k, _ in headers):
        n = int(next(v for k, v in headers if k == "Content-Length"))
        ev_body = rest[:n]
        headers = [(k, v) for k, v in headers if k != "Content-Length"]
    return Event(headers, ev_body)


def _json_event(body: bytes) -> Event:
    """A text/event-json body; arrays are kept as FreeSWITCH's ``ARRAY::`` text."""
    obj = json.loads(body.decode("utf-8"))
    headers: list[tuple[str, str]] = []
    ev_body: str | None = None
    for k, v in obj.items():
        if k == "_body":
            ev_body = v
        elif isinstance(v, list):
            headers.append((k, "ARRAY::" + "|:".join(v)))
        else:
            headers.append((k, v))
    return Event(headers, ev_body)


@cache
def load_events(name: str) -> tuple[Event, ...]:
    """Every event FreeSWITCH sent in transcript ``name``, in order."""
    raw = (fixtures_dir() / name).read_bytes()
    stream = b"".join(p for d, p in _blocks(raw) if d == "RECV")
    out: list[Event] = []
    for head, body in _frames(stream):
        ctype = dict(head).get("Content-Type", "")
        if ctype == "text/event-plain":
            out.append(_plain_event(body))
        elif ctype == "text/event-json":
            out.append(_json_event(body))
    return tuple(out)


@cache
def load_exchanges(name: str) -> tuple[Exchange, ...]:
    """``api``/``bgapi`` commands with the reply body read until the next command."""
    raw = (fixtures_dir() / name).read_bytes()
    out: list[Exchange] = []
    blocks = _blocks(raw)
    for i, (d, payload) in enumerate(blocks):
        if d != "SEND":
            continue
        acc = b""
        for d2, p2 in blocks[i + 1:]:
            if d2 == "SEND":
                break
            acc += p2
        cmd = payload.decode("utf-8").split("\n", 1)[0]
        frames = _frames(acc)
        reply = b""
        for head, fbody in frames:
            ctype = dict(head).get("Content-Type", "")
            if ctype in ("api/response", "command/reply"):
                reply = fbody if ctype == "api/response" else dict(head).get("Reply-Text", "").encode()
                break
        out.append(Exchange(cmd, reply))
    return tuple(out)


def callcenter_events(name: str) -> list[Event]:
    """Only the ``CUSTOM callcenter::info`` events of a transcript."""
    return [e for e in load_events(name) if e.get("Event-Subclass") == "callcenter::info"]


def first_event(name: str, event_name: str, **match: str) -> Event:
    """First event called ``event_name`` whose headers match ``match`` (``-`` as ``_``)."""
    for e in load_events(name):
        if e.get("Event-Name") != event_name:
            continue
        if all(e.get(k.replace("_", "-")) == v for k, v in match.items()):
            return e
    raise LookupError(f"{name}: no {event_name} with {match}")
